"""Tests for segmentlog._progress: the bar's output on and off a terminal (tqdm draws it)."""

from __future__ import annotations

import io

import pytest

from segmentlog._progress import Progress


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_tty_prints_plain_lines_without_carriage_returns() -> None:
    out = io.StringIO()
    with Progress(20, "bench", stream=out) as p:
        for _ in range(20):
            p.advance()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("bench:")
    assert "0/20" in lines[0]
    assert lines[-1].startswith("bench:")
    assert "20/20" in lines[-1] and "100%" in lines[-1]
    assert all(line.isascii() for line in lines)
    # Roughly one line per tenth of the work, not one per advance.
    assert 2 <= len(lines) <= 12


def test_non_tty_final_state_is_not_printed_twice() -> None:
    out = io.StringIO()
    with Progress(10, "x", stream=out) as p:
        p.advance(10)
    assert sum("10/10" in line for line in out.getvalue().splitlines()) == 1


def test_non_tty_with_plain_false_prints_nothing() -> None:
    out = io.StringIO()
    with Progress(5, "quiet", stream=out, plain=False) as p:
        p.advance(5)
    assert out.getvalue() == ""


def test_stream_reporting_a_tty_is_redrawn_in_place() -> None:
    out = _FakeTTY()
    with Progress(3, "tty", stream=out, min_interval=0.0) as p:
        p.advance()
        p.set_status("step two")
        p.advance(2)
    text = out.getvalue()
    assert text.count("\r") >= 3
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "step two" in text
    assert "3/3" in text.rsplit("\r", 1)[-1]


def test_write_prints_a_line_above_the_bar() -> None:
    out = _FakeTTY()
    with Progress(2, "tty", stream=out, min_interval=0.0) as p:
        p.advance()
        p.write("a message")
        p.advance()
    text = out.getvalue()
    assert "a message\n" in text
    assert text.index("a message") < text.rindex("2/2")


def test_zero_total_shows_counts_only() -> None:
    out = io.StringIO()
    with Progress(0, "files", stream=out, plain_interval=0.0) as p:
        p.advance(7)
    assert "7it" in out.getvalue().splitlines()[-1]
    assert "%" not in out.getvalue()  # no bar, no percentage: only counts


def test_close_twice_is_harmless_and_advance_after_close_prints_nothing() -> None:
    out = io.StringIO()
    p = Progress(1, "once", stream=out)
    p.advance()
    p.close()
    before = out.getvalue()
    p.close()
    p.advance()
    assert out.getvalue() == before


def test_broken_stream_does_not_raise() -> None:
    out = io.StringIO()
    out.close()
    with Progress(2, "gone", stream=out, tty=True) as p:
        p.advance(2)


def test_non_tty_prints_a_line_after_plain_interval_even_within_a_tenth() -> None:
    out = io.StringIO()
    with Progress(1000, "slow", stream=out, plain_interval=0.0) as p:
        p.advance()  # far from a tenth, but plain_interval (0 s) has passed
        p.advance()
    lines = out.getvalue().splitlines()
    assert ["0/1000" in lines[0], "1/1000" in lines[1], "2/1000" in lines[2]] == [True] * 3
    assert len(lines) == 3


def test_the_bar_defaults_to_stderr_and_never_touches_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Progress(4, "quiet-stdout", plain_interval=0.0) as p:
        p.set_status("working")
        p.advance(4)
        p.write("a note")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "4/4" in captured.err and "a note" in captured.err
