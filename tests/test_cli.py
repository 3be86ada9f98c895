"""The console script as a user runs it: daily run, query, kill switch; and the code location loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_config


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli_env(tmp_path):
    config = write_config(tmp_path, symbols=["AAPL", "KO", "XOM"])
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "TRADING_PIPELINE_CONFIG": str(config)}
    return env, tmp_path


def test_daily_prints_the_summary_and_the_kill_switch_denies_every_order(cli_env):
    env, folder = cli_env
    halted = _cli("kill-switch", "HALTED", "--reason", "test", env=env)
    assert halted.returncode == 0 and "trading state: HALTED" in halted.stdout

    run = _cli("daily", env=env)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "Daily run for session 2022-12-28: 3 instruments" in out
    assert "Combined forecasts and target positions on 2022-12-28" in out
    assert out.count("kill_switch: trading state is HALTED") == 3  # one denial per instrument, with its reason
    assert "succeeded" in out and str(folder / "lake") in out
    assert (folder / "dagster_home" / "dagster.yaml").exists()

    fills = _cli("query", "select count(*) as n from fills", "--csv", env=env)
    assert fills.returncode == 0 and fills.stdout.split() == ["n", "0"]

    assert _cli("kill-switch", "ACTIVE", env=env).returncode == 0
    again = _cli("daily", env=env)
    assert again.returncode == 0, again.stderr
    # With trading ACTIVE again each instrument gets a new intent (seq 2): the gate now judges it on
    # its limits (KO's 12,903 shares x 62.61 USD exceed the 500,000 USD order notional limit).
    seq2 = _cli("query", "select instrument, status, coalesce(deny_reason, '') like 'max_order_notional%' as notional "
                "from order_intents where seq = 2 order by instrument", "--csv", env=env)
    assert seq2.stdout.split() == ["instrument,status,notional", "AAPL,FILLED,False", "KO,DENIED,True", "XOM,FILLED,False"]


def test_query_names_the_available_tables_on_a_typo(cli_env):
    env, _ = cli_env
    assert _cli("daily", "--no-submit", env=env).returncode == 0
    bad = _cli("query", "select * from target_position", env=env)
    assert bad.returncode != 0 and "target_positions" in bad.stderr


def test_a_session_without_bars_fails_with_a_clear_message(cli_env):
    env, _ = cli_env
    run = _cli("daily", "--session", "2023-01-03", env=env)
    assert run.returncode == 1
    assert "has no bars for 1 session(s) of this run (2023-01-03)" in run.stderr
    assert "latest session is 2022-12-28" in run.stderr


def test_dagster_definitions_validate_passes():
    exe = Path(sys.executable).with_name("dagster")
    result = subprocess.run([str(exe), "definitions", "validate", "-m", "pipeline.definitions"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
