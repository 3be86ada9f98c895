"""Research apart from production: a command-line backtest records its runs in the research
instance beside ``$DAGSTER_HOME`` (``<DAGSTER_HOME>-research``), never in the production one, so the
production UI's runs and its ``orders`` / ``target_positions`` show production only."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipeline.cli.app import main
from tests.conftest import write_config


def _runs(home: Path) -> list:
    if not (home / "dagster.yaml").exists():
        return []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs())


def test_a_command_line_backtest_adds_no_run_to_the_production_instance(tmp_path, monkeypatch, capsys):
    production = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(production))
    monkeypatch.delenv("TRADING_PIPELINE_RESEARCH_HOME", raising=False)
    config = write_config(tmp_path, symbols=["AAPL", "KO"], history_start="2019-01-02")
    # a production daily first: its run and its orders materialization are what the UI must keep showing
    assert main(["daily", "--no-submit", "--config", str(config)]) == 0
    before = _runs(production)
    assert [r.job_name for r in before] == ["daily_job"]

    assert main(["backtest", "--config", str(config), "--out", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    research = tmp_path / "dagster_home-research"
    assert f"research instance {research}" in out
    assert [r.run_id for r in _runs(production)] == [r.run_id for r in before]  # nothing added
    with dg.DagsterInstance.from_config(str(production)) as instance:
        latest = instance.get_latest_materialization_event(dg.AssetKey("orders"))
        assert latest.run_id == before[0].run_id  # still the daily run's
    runs = _runs(research)
    assert len(runs) == 1 and runs[0].tags["trading/trigger"] == "cli-backtest"
