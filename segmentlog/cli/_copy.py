"""``segmentlog export``, ``import`` and ``salvage-export``: envelopes as JSON lines.

Strategy and invariants
- One JSON object per line, msgspec's encoding of ``Envelope`` (the event carries its
  ``"type"`` tag; ``key`` appears only when the event was appended with one), so
  ``export | import`` is lossless and every line feeds ``jq``.
- ``import`` is idempotent: an envelope whose seq is already stored *with the same event id*
  is skipped and counted; the same seq under a different event id is refused (exit 2) before
  anything of its group (up to 1000 consecutive lines of one run) is written. It uses only the
  public API: ``last_seq``, ``list_after`` and ``import_envelopes``.
- ``import --renumber`` appends each envelope at its run's next seq instead, keeping its event
  id, timestamps and key, and skips those whose event id the run already holds: this is how
  salvaged records (whose seqs may collide or leave gaps) go back into a log, and why doing
  it twice adds nothing the second time.
- ``salvage-export`` reads every record that still passes its checksum, live runs first and
  then quarantine (``maintenance.salvage_records``), and writes it as ``export`` does; a
  record from quarantine gets ``"quarantined":true`` (live records carry no such field). A
  record that verifies but does not decode as an ``AgentEvent`` envelope (a log written with
  another ``event_type``) is skipped and counted on stderr.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any

import msgspec

from .. import log as log_module
from .. import maintenance
from ..errors import NotFoundError
from ..events import AgentEvent, Envelope
from ._common import EXIT_OK, Output, Parser, UsageError, note, open_read, pages, run_id

__all__ = ["register"]

#: Lines of one run imported (or checked) at once; a refused group writes nothing.
IMPORT_GROUP = 1000
#: What a record from quarantine carries in ``salvage-export``'s output.
QUARANTINED_FIELD = b',"quarantined":true}'

Line = tuple[int, Envelope[Any]]


def register(command: Callable[[str, str, str], Parser]) -> None:
    """Add ``export``, ``import`` and ``salvage-export`` to the command line."""
    p = command(
        "export",
        "write envelopes as JSON lines (lossless; see import)",
        "Write every envelope of the log (or of one run) to stdout, one JSON object per line, "
        "runs in id order and seqs in order. Event ids, seqs, timestamps and keys are kept, "
        "so 'segmentlog import' rebuilds the same log. Read-only.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument(
        "--run", metavar="RUN_ID", type=run_id, help="export only this run (default: every run)"
    )
    p.set_defaults(handler=_cmd_export)

    p = command(
        "import",
        "append exported JSON lines to a log (idempotent; refuses gaps and conflicts)",
        "Read envelopes, one JSON object per line as written by 'segmentlog export' or "
        "'segmentlog salvage-export', and append them unchanged (event ids, seqs, timestamps "
        "and keys kept). Idempotent: an envelope whose seq is already stored with the same "
        "event id is skipped, so importing a file twice adds nothing the second time. The "
        "same seq under a different event id, or a seq that would leave a gap, is refused "
        "(exit 2; nothing of the offending group of up to 1000 lines of one run is written, "
        "groups before it stay). Creates DIR if it is missing or empty.",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory (created if missing)")
    p.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        default="-",
        help="the JSON-lines file to read (default '-': standard input)",
    )
    p.add_argument(
        "--renumber",
        action="store_true",
        help="ignore each envelope's seq and append it at its run's next seq (event id, "
        "timestamps and key kept), skipping envelopes whose event id the run already "
        "holds; for re-importing salvage-export output, whose seqs may collide or leave gaps",
    )
    p.set_defaults(handler=_cmd_import)

    p = command(
        "salvage-export",
        "write every record that still verifies, from live runs and quarantine, as JSON lines",
        "Write every record that still passes its checksum, from the live runs and from "
        "quarantine (where 'segmentlog recover' keeps what it cut), as JSON lines in the "
        'format of export; records from quarantine carry "quarantined": true. Records '
        "that verify but do not decode as AgentEvent envelopes are skipped and counted on "
        "stderr. Read-only. Put the records back with: "
        "segmentlog salvage-export DIR | segmentlog import --renumber DIR",
    )
    p.add_argument("dir", metavar="DIR", help="the log directory")
    p.add_argument(
        "--run",
        metavar="RUN_ID",
        type=run_id,
        help="salvage only this run, live or quarantined (default: every run)",
    )
    p.set_defaults(handler=_cmd_salvage_export)


# --- export ------------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    encode = msgspec.json.Encoder().encode
    out = Output()
    try:
        with open_read(args.dir) as log:
            if args.run is not None:
                for env in pages(log, args.run, 0, None):
                    out.line(encode(env))
                return EXIT_OK
            for rid in log.runs():
                try:
                    for env in pages(log, rid, 0, None):
                        out.line(encode(env))
                except NotFoundError:
                    continue  # a run directory without events: nothing to export
    finally:
        out.close()
    return EXIT_OK


# --- salvage-export ----------------------------------------------------------------------


def _cmd_salvage_export(args: argparse.Namespace) -> int:
    decode = msgspec.msgpack.Decoder(Envelope[AgentEvent]).decode
    encode = msgspec.json.Encoder().encode
    written = from_quarantine = skipped = 0
    out = Output()
    try:
        for payload, quarantined in maintenance.salvage_records(args.dir, args.run):
            try:
                env = decode(payload)
            except msgspec.DecodeError:  # ValidationError is a DecodeError
                skipped += 1
                continue
            line = encode(env)
            if quarantined:
                line = line[:-1] + QUARANTINED_FIELD
                from_quarantine += 1
            out.line(line)
            written += 1
    finally:
        out.close()
    if args.run is not None and written == skipped == 0:
        raise NotFoundError(args.run)
    note(
        f"salvaged {written} record(s) ({from_quarantine} from quarantine)"
        + (
            f"; skipped {skipped} that verify but do not decode as AgentEvent envelopes "
            "(written with another event_type?)"
            if skipped
            else ""
        )
    )
    return EXIT_OK


# --- import ------------------------------------------------------------------------------


def _read_envelopes(stream: IO[bytes]) -> Iterator[Line]:
    decoder = msgspec.json.Decoder(Envelope[AgentEvent])
    for number, raw in enumerate(stream, 1):
        line = raw.strip()
        if not line:
            continue
        try:
            yield number, decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise UsageError(
                f"line {number}: not an envelope as written by 'segmentlog export' ({exc})"
            ) from None


def _groups(lines: Iterator[Line]) -> Iterator[list[Line]]:
    """Consecutive lines of one run, at most ``IMPORT_GROUP`` at a time."""
    group: list[Line] = []
    for item in lines:
        if group and (item[1].run_id != group[-1][1].run_id or len(group) >= IMPORT_GROUP):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


class _Importer:
    """Imports groups of envelopes into ``log``; counts what it imported and skipped."""

    def __init__(self, log: log_module.SegmentLog[Any], renumber: bool) -> None:
        self.log = log
        self.renumber = renumber
        self.imported = 0
        self.skipped = 0
        self._ids: dict[uuid.UUID, set[uuid.UUID]] = {}  # --renumber: event ids per run

    def add(self, group: list[Line]) -> None:
        """Import one group, or raise ``UsageError`` having written nothing of it."""
        where = f"lines {group[0][0]}-{group[-1][0]}"
        fresh = self._renumbered(group) if self.renumber else self._new(group, where)
        if not fresh:
            return
        try:
            self.imported += self.log.import_envelopes(fresh)
        except ValueError as exc:
            hint = "" if self.renumber else " (to append under new seqs, use --renumber)"
            raise UsageError(f"{where}: {exc}{hint}") from None

    def _new(self, group: list[Line], where: str) -> list[Envelope[Any]]:
        rid = group[0][1].run_id
        last = self.log.last_seq(rid) or 0
        stored = [(n, env) for n, env in group if env.seq <= last]
        if stored:
            low = min(env.seq for _, env in stored)
            high = max(env.seq for _, env in stored)
            ids = {e.seq: e.event_id for e in pages(self.log, rid, low - 1, high - low + 1)}
            for n, env in stored:
                if ids.get(env.seq) != env.event_id:
                    raise UsageError(
                        f"line {n}: seq {env.seq} of run {rid} is already taken by event "
                        f"{ids.get(env.seq)}, not {env.event_id} (an export of another log?); "
                        f"nothing of {where} was written (to append under new seqs, use "
                        "--renumber)"
                    )
            self.skipped += len(stored)
        return [env for _, env in group if env.seq > last]

    def _renumbered(self, group: list[Line]) -> list[Envelope[Any]]:
        rid = group[0][1].run_id
        ids = self._ids.get(rid)
        if ids is None:
            last = self.log.last_seq(rid)
            ids = set() if last is None else {e.event_id for e in pages(self.log, rid, 0, None)}
            self._ids[rid] = ids
        nxt = (self.log.last_seq(rid) or 0) + 1
        out: list[Envelope[Any]] = []
        for _, env in group:
            if env.event_id in ids:
                self.skipped += 1
                continue
            ids.add(env.event_id)
            out.append(msgspec.structs.replace(env, seq=nxt))
            nxt += 1
        return out


def _cmd_import(args: argparse.Namespace) -> int:
    if args.file == "-":
        stream: IO[bytes] = sys.stdin.buffer
        close = False
    else:
        try:
            stream = open(args.file, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise UsageError(f"{args.file}: no such file") from None
        close = True
    importer: _Importer | None = None
    try:
        with log_module.open(args.dir) as log:
            importer = _Importer(log, args.renumber)
            for group in _groups(_read_envelopes(stream)):
                importer.add(group)
    except UsageError as exc:
        done = importer.imported if importer is not None else 0
        raise UsageError(f"{exc}; {done} envelope(s) before it were imported") from None
    finally:
        if close:
            stream.close()
    skipped = f"; skipped {importer.skipped} already imported" if importer.skipped else ""
    note(f"imported {importer.imported} envelope(s) into {args.dir}{skipped}")
    return EXIT_OK
