"""Promise 21, run retries: the deploy instances let the daemon retry a run whose process died,
and a retry of the whole daily run after its orders were sent sends zero new orders."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from pipeline.adapters.ib.fake_gateway import Drop, FakeTWS
from pipeline.adapters.sources import SampleSource
from pipeline.config import CONFIG_ENV_VAR, load_config
from pipeline.definitions import ensure_dagster_home
from pipeline.store.ledger import Ledger
from sensors.schedules import SUBMIT_RUN_CONFIG
from tests.conftest import LATEST_SAMPLE_SESSION, write_config
from tests.test_ib_daily import CONTRACTS, daily_job_of_the_configured_lake

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RETRIES = {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}


@pytest.mark.parametrize("name", ["dagster.postgres.yaml", "dagster.docker.yaml"])
def test_deploy_instances_retry_a_dead_run_once_and_leave_failed_steps_to_a_person(
    tmp_path, name
):
    (tmp_path / "dagster.yaml").write_text((DEPLOY / name).read_text())
    config, _ = dagster_instance_config(str(tmp_path))  # Dagster's own schema check
    assert config["run_retries"] == RETRIES
    assert config["run_monitoring"]["enabled"] is True  # how a dead run is noticed


def test_helm_values_carry_the_same_retry_settings():
    daemon = yaml.safe_load((DEPLOY / "values.yaml").read_text())["dagsterDaemon"]

    def snake(d):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in d.items()}

    assert snake(daemon["runRetries"]) == RETRIES
    assert daemon["runMonitoring"]["enabled"] is True


def test_a_retry_of_the_whole_run_after_its_orders_were_sent_sends_zero_new_orders(
    tmp_path, monkeypatch
):
    start = pd.Timestamp("2019-01-02")
    bars = SampleSource().fetch(
        list(CONTRACTS), start, pd.Timestamp(LATEST_SAMPLE_SESSION)
    )
    fake = FakeTWS(now=pd.Timestamp("2022-12-28 23:00", tz="UTC"), lifetime=900)
    for symbol, contract in CONTRACTS.items():
        served = bars[bars["instrument"] == symbol][["session", "close"]].assign(
            open=lambda d: d["close"],
            high=lambda d: d["close"],
            low=lambda d: d["close"],
            volume=1000.0,
        )
        fake.add(contract, served.reset_index(drop=True))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    ensure_dagster_home()
    with fake:
        config = write_config(
            tmp_path,
            symbols=list(CONTRACTS),
            history_start=str(start.date()),
            source={
                "kind": "ib",
                "ib": {"port": fake.port, "client_id": 21, "timeout": 5.0},
            },
            broker={
                "mode": "ib",
                "execution": "paper",
                "paper_ports": [fake.port],
                "fill_wait": 1.0,
                "ib": {"port": fake.port, "client_id": 22, "timeout": 5.0},
            },
        )
        monkeypatch.setenv(CONFIG_ENV_VAR, str(config))
        job = dg.reconstructable(daily_job_of_the_configured_lake)
        ledger = Ledger.at_lake(load_config(config).lake_path)

        def drop_after_the_last_order(order):
            # every accepted order reaches the gateway, then the connection drops: the orders step
            # fails after all its submissions, one answer lost
            intents = ledger.intents(session=LATEST_SAMPLE_SESSION)
            if len(fake.orders()) == int((intents["verdict"] == "ACCEPTED").sum()):
                fake.script("place", Drop())

        fake.on_place = drop_after_the_last_order
        with dg.DagsterInstance.get() as instance:
            tags = {"dagster/partition": LATEST_SAMPLE_SESSION, "trading/job": "daily"}
            first = dg.execute_job(
                job, instance, run_config=SUBMIT_RUN_CONFIG, tags=tags
            )
            assert not first.success
            fake.on_place = None
            placed_before = [f[26] for f in fake.placed()]
            # the retry strategy ALL_STEPS: every step of the parent run again, with its run config
            # and its tags, as the daemon's retry (dagster/retry_strategy: ALL_STEPS) launches it
            steps = [
                e.step_key
                for e in first.all_events
                if e.event_type_value == "STEP_START"
            ]
            retry = dg.execute_job(
                job,
                instance,
                tags={**tags, "dagster/retry_strategy": "ALL_STEPS"},
                reexecution_options=dg.ReexecutionOptions(
                    parent_run_id=first.run_id, step_selection=steps
                ),
            )
            retried = {
                e.step_key
                for e in retry.all_events
                if e.event_type_value == "STEP_START"
            }
            retry_run = instance.get_run_by_id(retry.run_id)
    assert retry.success
    assert {
        "raw_bars",
        "clean_bars",
        "target_positions",
        "orders",
    } <= retried  # the whole run again
    assert retry_run.parent_run_id == first.run_id
    assert (
        retry_run.run_config == first.dagster_run.run_config
    )  # the retry may submit ...
    assert len(placed_before) >= 2 and len(set(placed_before)) == len(placed_before)
    assert [
        f[26] for f in fake.placed()
    ] == placed_before  # ... and sent zero new orders
    intents = ledger.intents(session=LATEST_SAMPLE_SESSION)
    accepted = intents[
        (intents["mode"] == "submit") & (intents["verdict"] == "ACCEPTED")
    ]
    assert sorted(accepted["order_ref"]) == sorted(placed_before) and set(
        accepted["status"]
    ) == {"FILLED"}
