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
    "recover": ["DIR", "--dry-run"],
    "export": ["DIR", "--run"],
    "import": ["DIR", "FILE", "--renumber"],
    "salvage-export": ["DIR", "--run"],
    "quarantine": ["list", "purge"],
    "quarantine list": ["DIR", "--run"],
    "quarantine purge": ["DIR", "--older-than", "DURATION", "90m", "7d"],
}


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_every_command_has_help_explaining_each_option(cli: Cli, command: str) -> None:
    result = cli(*command.split(), "--help")
    assert result.code == 0, result.err
    for option in COMMAND_OPTIONS[command]:
        assert option in result.out, option


def test_top_level_help_lists_every_command_and_the_exit_codes(cli: Cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in [*(c for c in COMMAND_OPTIONS if " " not in c), "bench", "--version"]:
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


def test_version_names_the_code_path_and_the_sync_method(cli: Cli) -> None:
    import segmentlog

    result = cli("--version")
    assert result.code == 0
    line = result.out.strip()
    assert line.startswith(f"segmentlog {segmentlog.__version__} ")
    assert ("native" if segmentlog.NATIVE else "pure-Python") in line
    assert segmentlog.PLATFORM_SYNC in line


def test_the_console_entry_point_is_importable_from_the_package() -> None:
    from segmentlog.cli import EXIT_USAGE, main

    assert main(["--no-such-option"]) == EXIT_USAGE
