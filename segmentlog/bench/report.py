"""Reporting: the results document (JSON), the text table, and the optional chart.

Strategy and invariants
- The JSON document is self-describing so runs can be compared over time: schema version,
  date, suite sizes, machine (CPUs, memory, kernel, disk free), Python, and the versions of
  msgspec, xxhash, SQLite and segmentlog; then every workload with all its samples, medians,
  ratios and targets, and the memory probes.
- The table states the ratio convention in its header: higher is better, above 1 means
  segmentlog wins. A target column says what the issue asks for and whether it was met.
- matplotlib is optional (the ``plot`` extra); ``plot_available`` lets the caller fail early
  with a clear message instead of after the whole suite has run.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import sys
from typing import Any

from .._build import runtime_facts
from .._table import columns
from .timing import cpu_count

__all__ = [
    "SCHEMA_VERSION",
    "document",
    "format_table",
    "header_lines",
    "machine_info",
    "plot",
    "plot_available",
    "write_json",
]

SCHEMA_VERSION = 1
RATIO_NOTE = (
    "ratio: higher is better, > 1 means segmentlog wins (throughput: segmentlog / baseline; "
    "latency and time: baseline / segmentlog); medians of the repetitions"
)


def _meminfo_total() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _filesystem(path: str) -> str | None:
    try:
        best, fstype = "", None
        real = os.path.realpath(path)
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and real.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
        return fstype
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(workdir: str) -> dict[str, Any]:
    """Describe the machine, the disk under ``workdir``, Python and the package versions."""
    usage = shutil.disk_usage(workdir)
    return {
        "machine": {
            "nproc": cpu_count(),
            "cpu": _cpu_model(),
            "memory_bytes": _meminfo_total(),
            "system": platform.system(),
            "kernel": platform.release(),
            "platform": platform.platform(),
            "workdir": workdir,
            "filesystem": _filesystem(workdir),
            "disk_free_bytes": usage.free,
            "disk_total_bytes": usage.total,
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": {
            "segmentlog": _version("segmentlog"),
            "msgspec": _version("msgspec"),
            "xxhash": _version("xxhash"),
            "sqlite": sqlite3.sqlite_version,
        },
    }


def document(
    results: dict[str, Any],
    *,
    suite: str,
    sizes: dict[str, Any],
    repeat: int,
    workdir: str,
    elapsed: float,
) -> dict[str, Any]:
    """Assemble the full results document."""
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "tool": "segmentlog bench",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "suite": suite,
        "repeat": repeat,
        "sizes": sizes,
        "ratio_convention": RATIO_NOTE,
        "elapsed_seconds": elapsed,
    }
    doc["build"] = runtime_facts()
    doc.update(machine_info(workdir))
    doc.update(results)
    return doc


def write_json(doc: dict[str, Any], path: str) -> None:
    """Write the document as indented JSON."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")


def format_value(value: float | None, unit: str) -> str:
    """A value with its unit, compactly."""
    if value is None:
        return "n/a"
    if unit == "events/s":
        if value >= 1e6:
            return f"{value / 1e6:.2f}M ev/s"
        if value >= 1e3:
            return f"{value / 1e3:.1f}k ev/s"
        return f"{value:.0f} ev/s"
    if unit == "runs/s":
        return f"{value / 1e3:.1f}k runs/s" if value >= 1e3 else f"{value:.0f} runs/s"
    if unit == "GB/s":
        return f"{value:.2f} GB/s"
    if unit == "us":
        return f"{value:.1f} us" if value < 1000 else f"{value / 1000:.2f} ms"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:g} {unit}"


UNAVAILABLE = "not available in this build"
_DETAILS = {"appends_per_fsync": "{:.1f} appends/fsync"}


def _details(w: dict[str, Any]) -> str:
    extra = w["segmentlog"]["extra"]
    return ", ".join(
        _DETAILS.get(k, k + " {:g}").format(extra[k]) for k in w.get("details", ()) if k in extra
    )


def _rows(w: dict[str, Any]) -> list[list[str]]:
    if not w.get("available", True):
        why = f"({w.get('unavailable') or 'a feature is missing'})"
        return [[w["title"], UNAVAILABLE, why, "", "", "", ""]]
    rows = []
    for n, b in enumerate(w["baselines"]):
        ratio, target, met = b["ratio"], b["target"], b["met"]
        rows.append(
            [
                "" if n else w["title"],
                "" if n else format_value(w["segmentlog"]["median"], w["unit"]),
                b["title"],
                format_value(b["median"], w["unit"]),
                f"{ratio:.2f}x" if ratio is not None else "n/a",
                (f">= {target:.2f}x " + ("ok" if met else "MISSED")) if target else "",
                "" if n else _details(w),
            ]
        )
    return rows


def header_lines(doc: dict[str, Any]) -> list[str]:
    """The table's first lines: suite, machine, versions, and this build's code path."""
    m = doc["machine"]
    mem = m.get("memory_bytes")
    build = doc.get("build") or runtime_facts()
    return [
        f"segmentlog bench ({doc['suite']} suite, {doc['repeat']} repetitions, "
        f"{doc['elapsed_seconds']:.0f} s) on {m['nproc']} CPUs"
        + (f", {mem / 2**30:.0f} GiB" if mem else "")
        + f", {m.get('filesystem') or '?'}; Python {doc['python']['version']}, "
        f"msgspec {doc['packages']['msgspec']}, SQLite {doc['packages']['sqlite']}",
        f"segmentlog {build['version']}: {build['path']} path, fsync by {build['sync']}",
        RATIO_NOTE,
    ]


def format_table(doc: dict[str, Any]) -> str:
    """The human-readable summary of a results document."""
    lines = [*header_lines(doc), ""]
    rows = [row for w in doc["workloads"] for row in _rows(w)]
    lines += columns(
        rows,
        ["workload", "segmentlog", "baseline", "value", "ratio", "target", "details"],
        rule=True,
    )
    if doc.get("memory"):
        lines.append("")
        mem_rows = [
            [
                p["title"],
                f"{p['peak_rss_mib']:.0f} MiB",
                f"{p['rss_before_mib']:.0f} MiB",
                f"{p['store_mib']:.0f} MiB" if "store_mib" in p else "",
            ]
            for p in doc["memory"]
        ]
        lines += columns(
            mem_rows, ["peak RSS (own process)", "peak", "before work", "store"], rule=True
        )
    missed = [
        f"{w['id']} vs {b['id']}"
        for w in doc["workloads"]
        for b in w["baselines"]
        if b["met"] is False
    ]
    skipped = [w["id"] for w in doc["workloads"] if not w.get("available", True)]
    lines.append("")
    judged = [b for w in doc["workloads"] for b in w["baselines"] if b["met"] is not None]
    if missed:
        lines.append("targets missed: " + ", ".join(missed))
    else:
        lines.append("all targets met" if judged else "no target was measured")
    if skipped:
        lines.append(f"{UNAVAILABLE}: " + ", ".join(skipped))
    return "\n".join(lines)


def plot_available() -> bool:
    """True when matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def plot(doc: dict[str, Any], path: str) -> None:
    """Draw every ratio against its target as a horizontal bar chart into ``path``."""
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    labels: list[str] = []
    ratios: list[float] = []
    targets: list[float | None] = []
    for w in doc["workloads"]:
        for b in w["baselines"]:
            if not w.get("available", True) or b["ratio"] is None:
                continue
            labels.append(f"{w['id']} vs {b['id']}")
            ratios.append(b["ratio"])
            targets.append(b["target"])
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(labels) + 1.5))
    ys = list(range(len(labels)))
    # Green: target met; red: missed; grey: a figure reported without a target.
    colors = [
        "tab:grey" if t is None else "tab:green" if r >= t else "tab:red"
        for r, t in zip(ratios, targets, strict=True)
    ]
    ax.barh(ys, ratios, color=colors)
    for y, t in zip(ys, targets, strict=True):
        if t is not None:
            ax.plot([t, t], [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio (higher is better; black tick = target; grey = no target)")
    build = doc.get("build") or runtime_facts()
    ax.set_title(
        f"segmentlog bench, {doc['suite']} suite, {build['path']} path, {doc['date'][:10]}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
