"""Plain-text columns: the one table formatter of the command line and the benchmark report.

Strategy and invariants
- Cells are strings, already formatted by the caller; this module only pads. Columns are
  left-aligned, two spaces apart, and trailing spaces are stripped, so a line's last cell
  can be long without widening the others and ``split()`` recovers the cells of a row whose
  cells have no spaces.
- A header row is optional and may be followed by a rule of dashes (the bench report has
  one; ``segmentlog runs`` does not, so its output stays easy to parse with ``awk``).
- Rejected: a table library (tabulate, rich). Padding columns is a dozen lines, and both
  commands must stay importable without extra dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["columns"]


def columns(
    rows: Sequence[Sequence[str]],
    header: Sequence[str] | None = None,
    *,
    rule: bool = False,
) -> list[str]:
    """Lay ``rows`` out in aligned columns, one string per line (no newlines).

    ``header`` (if given) is the first line, followed by a line of dashes when ``rule``.
    Every row must have as many cells as the header (or as the first row).
    """
    table = [list(header)] if header is not None else []
    table.extend(list(r) for r in rows)
    if not table:
        return []
    width = len(table[0])
    for r in table:
        if len(r) != width:
            raise ValueError(f"row of {len(r)} cells in a table of {width} columns: {r!r}")
    widths = [max(len(r[i]) for r in table) for i in range(width)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line(r) for r in table]
    if header is not None and rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
