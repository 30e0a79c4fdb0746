"""Event types and payloads: check an event, decode one payload, decode a page of payloads.

Strategy and invariants
- A log stores one ``event_type``: a msgspec Struct, or a tagged union of Structs, whose
  values have a ``run_id: uuid.UUID``. ``EnvelopeCodec`` is the one place that knows it.
- msgspec does not check field types when a Struct is built, so an event is decoded back
  before it is written (``check_payload``): a field of the wrong type is refused at append
  instead of poisoning every later read of its run.
- A page is decoded in one msgspec call: the walker collects payloads back to back after a
  reserved ``PAGE_HEADER_SIZE``-byte gap, and ``decode_page`` writes a msgpack array32
  header into that gap, so the bytes are one msgpack array of envelopes (rejected: one decode
  call per record, which costs a call per record on the read path's hottest loop).
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Final, Generic, TypeVar

import msgspec

from .errors import InvalidEventError, SchemaMismatchError
from .events import AgentEvent, Envelope

__all__ = ["PAGE_HEADER_SIZE", "EnvelopeCodec", "event_classes", "new_page"]

E = TypeVar("E")

_ARRAY32: Final = struct.Struct(">BI")  # msgpack array32 header: 0xdd, count
#: Bytes reserved at the start of a page buffer for its array header.
PAGE_HEADER_SIZE: Final = _ARRAY32.size
_ENCODE = msgspec.msgpack.Encoder(uuid_format="bytes").encode
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, msgspec.EncodeError)
_SPLIT = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode


def new_page() -> bytearray:
    """An empty page buffer: payloads are appended after the reserved header gap."""
    return bytearray(PAGE_HEADER_SIZE)


def event_classes(event_type: Any) -> tuple[type, ...]:
    """The concrete classes a value of ``event_type`` (a Struct or a union of them) may have."""
    args = getattr(event_type, "__args__", None)
    classes = tuple(args) if args else (event_type,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
            raise TypeError(
                f"event_type must be a msgspec Struct or a union of Structs, not {event_type!r}"
            )
        if "run_id" not in cls.__struct_fields__:
            raise TypeError(f"event type {cls.__name__} has no run_id field")
    return classes


class EnvelopeCodec(Generic[E]):
    """Checks events against a log's ``event_type`` and turns payload bytes into Envelopes."""

    def __init__(self, event_type: Any = AgentEvent) -> None:
        self.event_type = event_type
        self.classes = event_classes(event_type)
        self._decode = msgspec.msgpack.Decoder(Envelope[event_type]).decode
        self._decode_list = msgspec.msgpack.Decoder(list[Envelope[event_type]]).decode
        self.session_starters = tuple(
            c for c in self.classes if getattr(c, "starts_session", False)
        )

    def run_id_of(self, event: object) -> uuid.UUID:
        """Return the event's run id, or raise ``InvalidEventError`` (nothing is written)."""
        if not isinstance(event, self.classes):
            names = ", ".join(c.__name__ for c in self.classes[:4])
            more = ", ..." if len(self.classes) > 4 else ""
            raise InvalidEventError(
                f"cannot append {type(event).__name__}: this log stores {names}{more}; "
                "pass one of those event types (or open the log with your own event_type)"
            )
        run_id = getattr(event, "run_id", None)
        if not isinstance(run_id, uuid.UUID):
            raise InvalidEventError(
                f"{type(event).__name__}.run_id must be a uuid.UUID, got {type(run_id).__name__}"
            )
        return run_id

    def session_of(self, event: object) -> uuid.UUID | None:
        """The session id an event starts (``RunStarted``), else ``None``."""
        if self.session_starters and isinstance(event, self.session_starters):
            session: uuid.UUID | None = getattr(event, "session_id", None)
            return session
        return None

    def check_payload(self, payload: bytes | bytearray | memoryview, envelope: Envelope[E]) -> None:
        """Raise ``InvalidEventError`` unless ``payload`` decodes back to ``envelope``'s event.

        Decoding before writing catches a field of the wrong type, and values (like sets)
        that do not round-trip.
        """
        try:
            decoded = self._decode(payload)
        except msgspec.ValidationError as exc:
            raise InvalidEventError(
                f"{type(envelope.event).__name__} has a field of the wrong type ({exc}); "
                "fix the value to match the event's declared field types"
            ) from exc
        if decoded.event != envelope.event:
            raise InvalidEventError(
                f"{type(envelope.event).__name__} holds a value that does not survive "
                "encoding unchanged (a set, tuple or other non-JSON value?); use JSON values "
                "(dict, list, str, int, float, bool, None)"
            )

    def check_page(self, page: bytearray, envelopes: list[Envelope[E]]) -> None:
        """``check_payload`` for a batch whose payloads fill ``page`` (``new_page``), in one
        decode call; on a failure, each payload is checked alone to name the first bad one."""
        count = len(envelopes)
        _ARRAY32.pack_into(page, 0, 0xDD, count)
        try:
            decoded: list[Envelope[E]] = self._decode_list(page)
        except msgspec.ValidationError:
            decoded = []
        if len(decoded) == count and all(
            d.event == e.event for d, e in zip(decoded, envelopes, strict=True)
        ):
            return
        raws = _SPLIT(page)  # the page's payloads, one by one, to name the culprit
        for raw, envelope in zip(raws, envelopes, strict=True):
            self.check_payload(bytes(raw), envelope)

    def check(self, envelope: Envelope[E]) -> None:
        """Encode ``envelope`` and ``check_payload`` it (for stores that keep objects)."""
        try:
            payload = _ENCODE(envelope)
        except _ENCODE_ERRORS as exc:
            raise InvalidEventError(
                f"event could not be encoded ({exc}); events must be msgspec Structs of the "
                "log's event_type"
            ) from exc
        self.check_payload(payload, envelope)

    def decode(self, payload: bytes | bytearray | memoryview) -> Envelope[E]:
        """Decode one envelope payload.

        Raises ``SchemaMismatchError`` when the bytes (which verified) do not decode as the
        log's ``event_type``.
        """
        try:
            result: Envelope[E] = self._decode(payload)
        except msgspec.ValidationError as exc:
            raise _mismatch(exc) from exc
        return result

    def decode_page(self, page: bytearray, count: int) -> list[Envelope[E]]:
        """Decode a page buffer (``new_page`` + ``count`` payloads back to back) in one call."""
        if count == 0:
            return []
        _ARRAY32.pack_into(page, 0, 0xDD, count)
        try:
            result: list[Envelope[E]] = self._decode_list(page)
        except msgspec.ValidationError as exc:
            raise _mismatch(exc) from exc
        return result


def _mismatch(exc: Exception) -> SchemaMismatchError:
    return SchemaMismatchError(
        f"a stored record does not decode as this log's event_type ({exc}); open the log "
        "with the event_type it was written with"
    )
