"""Every ``trading-pipeline`` command answers ``--help`` with an example; usage errors are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import main
from pipeline.cli.app import app


def _command_paths(group, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every command of ``group``, sub-commands of command groups included (``"positions adopt"``)."""
    paths = []
    for name, command in group.commands.items():
        paths.append(" ".join((*prefix, name)))
        if hasattr(command, "commands"):  # a command group (typer.core.TyperGroup)
            paths += _command_paths(command, (*prefix, name))
    return paths


#: The commands as the typer app has them: a command added later is covered without editing this file.
TOP_LEVEL = sorted(typer.main.get_command(app).commands)
COMMANDS = sorted(_command_paths(typer.main.get_command(app)))


def test_the_commands_are_discovered():
    assert {"daily", "backfill", "query", "release", "kill-switch", "cancel-orders", "backtest", "walk-forward",
            "compare", "stability", "fake-gateway", "rehearse", "positions", "positions adopt",
            "futures", "futures adjust", "futures roll-calendar", "futures roll",
            "futures status", "status"} <= set(COMMANDS)


@pytest.mark.parametrize("argv", [[str(Path(sys.executable).with_name("trading-pipeline"))],
                                  [sys.executable, "-m", "pipeline.cli"]], ids=["script", "module"])
def test_the_top_level_help_lists_every_command(argv):
    done = subprocess.run([*argv, "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in TOP_LEVEL) and "Example" in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_exits_0_with_an_example(command, capsys):
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and f"trading-pipeline {command}" in result.output
    assert main([*command.split(), "-h"]) == 0  # the entry point of the script, with the short option
    assert "Example" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["daily", "--session", "2022-13-01"], ["backfill", "2022-12-01", "28-12-2022"],
                                  ["backtest", "--end", "2022-02-30"], ["cancel-orders", "2022/12/28"],
                                  ["futures", "status", "--session", "2023-11-31"]])
def test_a_malformed_date_is_one_line_before_anything_runs(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a date YYYY-MM-DD" in err and "Traceback" not in err


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["kill-switch", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"error: config file {tmp_path / 'nope.yaml'} does not exist\n"
