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

from .._table import columns
from .timing import cpu_count

__all__ = [
    "SCHEMA_VERSION",
    "document",
    "format_table",
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
    if unit == "us":
        return f"{value:.1f} us" if value < 1000 else f"{value / 1000:.2f} ms"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:g} {unit}"


def format_table(doc: dict[str, Any]) -> str:
    """The human-readable summary of a results document."""
    m = doc["machine"]
    mem = m.get("memory_bytes")
    lines = [
        f"segmentlog bench ({doc['suite']} suite, {doc['repeat']} repetitions, "
        f"{doc['elapsed_seconds']:.0f} s) on {m['nproc']} CPUs"
        + (f", {mem / 2**30:.0f} GiB" if mem else "")
        + f", {m.get('filesystem') or '?'}; Python {doc['python']['version']}, "
        f"msgspec {doc['packages']['msgspec']}, SQLite {doc['packages']['sqlite']}",
        RATIO_NOTE,
        "",
    ]
    rows: list[list[str]] = []
    for w in doc["workloads"]:
        first = True
        for b in w["baselines"]:
            ratio = b["ratio"]
            target = b["target"]
            met = b["met"]
            rows.append(
                [
                    w["title"] if first else "",
                    format_value(w["segmentlog"]["median"], w["unit"]) if first else "",
                    b["title"],
                    format_value(b["median"], w["unit"]),
                    f"{ratio:.2f}x" if ratio is not None else "n/a",
                    (f">= {target:.2f}x " + ("ok" if met else "MISSED")) if target else "",
                ]
            )
            first = False
    lines += columns(
        rows, ["workload", "segmentlog", "baseline", "value", "ratio", "target"], rule=True
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
    lines.append("")
    lines.append("targets missed: " + ", ".join(missed) if missed else "all targets met")
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
            if b["ratio"] is None:
                continue
            labels.append(f"{w['id']} vs {b['id']}")
            ratios.append(b["ratio"])
            targets.append(b["target"])
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(labels) + 1.5))
    ys = list(range(len(labels)))
    colors = [
        "tab:green" if t is None or r >= t else "tab:red"
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
    ax.set_xlabel("ratio (higher is better; black tick = target)")
    ax.set_title(f"segmentlog bench, {doc['suite']} suite, {doc['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
