"""--help for every command, exit codes for usage errors, `python -m segmentlog`, bench."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import Cli, assert_one_line_error

COMMAND_OPTIONS = {
    "runs": ["DIR", "--json"],
    "tail": ["DIR", "RUN_ID", "--after", "--limit", "--follow"],
    "verify": ["DIR", "--run", "--progress"],
    "recover": ["DIR"],
    "export": ["DIR", "--run"],
    "import": ["DIR", "FILE"],
}


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_every_command_has_help_explaining_each_option(cli: Cli, command: str) -> None:
    result = cli(command, "--help")
    assert result.code == 0, result.err
    for option in COMMAND_OPTIONS[command]:
        assert option in result.out, option


def test_top_level_help_lists_every_command_and_the_exit_codes(cli: Cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in [*COMMAND_OPTIONS, "bench"]:
        assert command in result.out
    assert "2 usage error" in " ".join(result.out.split())


def test_bench_help_shows_the_bench_options(cli: Cli) -> None:
    result = cli("bench", "--help")
    assert result.code == 0, result.err
    assert "--tiny" in result.out and "--json" in result.out


def test_bench_usage_errors_exit_2(cli: Cli) -> None:
    assert cli("bench", "--no-such-option").code == 2


def test_unknown_command_and_missing_arguments_are_usage_errors(cli: Cli) -> None:
    for args in ((), ("bogus",), ("tail",), ("runs", "a", "b")):
        result = cli(*args)
        assert result.code == 2, args
        assert_one_line_error(result)


def test_python_dash_m_runs_the_same_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "segmentlog", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("segmentlog ")
