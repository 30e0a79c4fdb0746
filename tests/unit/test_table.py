"""Tests for segmentlog._table: the one column formatter of the CLI and the bench report."""

from __future__ import annotations

import pytest

from segmentlog._table import columns


def test_columns_are_padded_to_the_widest_cell_and_trailing_space_is_stripped() -> None:
    lines = columns([["a", "bbb", "c"], ["dddd", "e", ""]], ["X", "Y", "Z"])
    assert lines == ["X     Y    Z", "a     bbb  c", "dddd  e"]


def test_a_rule_follows_the_header_when_asked() -> None:
    lines = columns([["1", "22"]], ["id", "v"], rule=True)
    assert lines == ["id  v", "--  --", "1   22"]


def test_rows_split_back_into_their_cells() -> None:
    rows = [["run-1", "5", "finished"], ["run-22", "17", "open"]]
    assert [line.split() for line in columns(rows)] == rows


def test_no_rows_and_no_header_is_no_lines() -> None:
    assert columns([]) == []
    assert columns([], ["only", "header"]) == ["only  header"]


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="2 cells"):
        columns([["a", "b"]], ["x", "y", "z"])
