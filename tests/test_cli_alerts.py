"""A command-line run the daemon never sees still alerts: its failed checks and its failure reach the
ledger's alerts table (and the configured destinations), with the sensors' keys, so a run both see is
alerted once."""

from __future__ import annotations

import logging

import dagster as dg
import pandas as pd

from pipeline.cli.app import main
from pipeline.store.ledger import Ledger
from sensors.alerts import alert_run_outcome
from tests.test_missing_bars import LATEST_SAMPLE_SESSION, _bars, _config, _without_ko_on_the_last_session


def test_a_failed_command_line_daily_alerts_once_with_what_failed(tmp_path, monkeypatch, capsys):
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    config = _config(tmp_path, _without_ko_on_the_last_session())
    assert main(["daily", "--session", LATEST_SAMPLE_SESSION, "--config", str(config)]) == 1
    ledger = Ledger(tmp_path / "lake" / "warehouse.duckdb")
    alerts = ledger.alerts()
    failed = alerts[alerts["kind"] == "run_failure"]
    assert len(failed) == 1 and failed["severity"].item() == "ERROR"
    assert "bars_complete" in failed["message"].item() and "2022-12-28 KO" in failed["message"].item()
    checks = alerts[alerts["kind"] == "asset_check"]
    assert "clean_bars:bars_complete" in set(checks["subject"])

    # the daemon's sensor path over the same run adds nothing (same keys)
    class _Settings:
        def ledger(self):
            return ledger

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert alert_run_outcome(instance, run.run_id, _Settings(), logging.getLogger("test"), "again") == 0
    assert len(ledger.alerts()) == len(alerts)


def test_a_successful_run_with_a_flagged_print_alerts_the_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    bars = _bars()
    bad = (bars["session"] == pd.Timestamp(LATEST_SAMPLE_SESSION)) & (bars["instrument"] == "KO")
    bars.loc[bad, ["open", "high", "low", "close"]] *= 3.0
    config = _config(tmp_path, bars)
    assert main(["daily", "--session", LATEST_SAMPLE_SESSION, "--config", str(config)]) == 0
    alerts = Ledger(tmp_path / "lake" / "warehouse.duckdb").alerts()
    assert not (alerts["kind"] == "run_failure").any()
    spikes = alerts[alerts["subject"] == "clean_bars:no_price_spikes"]
    assert len(spikes) == 1 and spikes["severity"].item() == "WARN"
