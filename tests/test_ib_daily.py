"""The daily job with bars from, and orders to, Interactive Brokers: the real ib_async client
against the fake gateway over a real socket."""

from __future__ import annotations

import os

import dagster as dg
import numpy as np
import pandas as pd

from pipeline.adapters.ib.fake_gateway import Drop, FakeContract, FakeTWS
from pipeline.adapters.sources import SampleSource
from pipeline.config import CONFIG_ENV_VAR, load_config
from pipeline.definitions import build_definitions, ensure_dagster_home, execute_daily
from pipeline.store.lake import Lake
from pipeline.store.ledger import Ledger
from sensors.schedules import SUBMIT_RUN_CONFIG
from tests.conftest import LATEST_SAMPLE_SESSION, write_config

CONTRACTS = {
    "AAPL": FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"),
    "KO": FakeContract("KO", "STK", "SMART", "USD", 8894, primary_exchange="NYSE"),
    "XOM": FakeContract("XOM", "STK", "SMART", "USD", 13977, primary_exchange="NYSE"),
}


def test_the_daily_job_runs_on_bars_served_over_the_tws_protocol(tmp_path):
    start = pd.Timestamp("2019-01-02")  # four yearly requests per instrument: well inside IB pacing
    bars = SampleSource().fetch(list(CONTRACTS), start, pd.Timestamp(LATEST_SAMPLE_SESSION))
    # The evening after the sample's last session: every bar served is final.
    fake = FakeTWS(now=pd.Timestamp("2022-12-28 23:00", tz="UTC"), lifetime=900)
    for symbol, contract in CONTRACTS.items():
        served = bars[bars["instrument"] == symbol][["session", "close"]].assign(
            open=lambda d: d["close"], high=lambda d: d["close"], low=lambda d: d["close"], volume=1000.0)
        fake.add(contract, served.reset_index(drop=True))
    with fake:
        # the broker: IB in dry_run (the default for ib) with the what-if preview
        config = write_config(tmp_path, symbols=list(CONTRACTS), history_start=str(start.date()),
                              source={"kind": "ib", "ib": {"port": fake.port, "client_id": 21, "timeout": 5.0}},
                              broker={"mode": "ib", "what_if": True, "ib": {"port": fake.port, "client_id": 22}})
        cfg = load_config(config)
        with dg.instance_for_test() as instance:
            result = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
    assert result.success
    # dry run: every intent of the session recorded, previewed by IB's what-if check, nothing sent
    intents = Ledger.at_lake(cfg.lake_path).intents(session=LATEST_SAMPLE_SESSION)
    accepted = intents[intents["verdict"] == "ACCEPTED"]
    assert len(accepted) >= 1 and set(intents["mode"]) == {"record_only"}
    assert fake.placed() == [] and fake.orders() == []
    assert sorted(o.order_ref for o in fake.what_ifs) == sorted(accepted["order_ref"])
    last_close = bars[bars["session"] == LATEST_SAMPLE_SESSION].set_index("instrument")["close"]
    expected = 0.5 * accepted["quantity"].abs().to_numpy() * last_close.reindex(accepted["instrument"]).to_numpy()
    np.testing.assert_allclose(accepted["what_if_init_margin"].to_numpy(dtype=float), expected, rtol=1e-12)
    lake = Lake(cfg.lake_path)
    raw = lake.read("raw_bars")
    assert set(raw["source"]) == {"ib:TRADES"}
    clean = lake.read_wide("clean_bars", "close", list(CONTRACTS))
    expected = bars.pivot(index="session", columns="instrument", values="close").reindex(columns=list(CONTRACTS))
    served = expected.loc[clean.index]
    held_out = clean.isna() & served.notna()  # bars flagged as spikes (spike_severity WARN) stay out of clean
    flagged = lake.read("quality_warnings").query("rule == 'price_spike'")
    assert set(zip(flagged["session"], flagged["instrument"])) == {
        (d, i) for d, i in held_out.stack().loc[lambda x: x].index}
    np.testing.assert_allclose(clean.to_numpy()[~held_out.to_numpy()], served.to_numpy()[~held_out.to_numpy()],
                               rtol=0, atol=0)
    assert clean.index[0] == start and clean.index[-1] == pd.Timestamp(LATEST_SAMPLE_SESSION)
    assert len(lake.read("target_positions", start=pd.Timestamp(LATEST_SAMPLE_SESSION))) == 3


def daily_job_of_the_configured_lake() -> dg.JobDefinition:
    """The daily job on the config named by ``$TRADING_PIPELINE_CONFIG``: a module-level
    function, so Dagster can rebuild the job to re-execute a run (``dg.reconstructable``)."""
    location = build_definitions(load_config(os.environ[CONFIG_ENV_VAR]), config_path=os.environ[CONFIG_ENV_VAR])
    return location.resolve_job_def("daily_job")


def test_dagster_re_execution_of_a_run_that_failed_after_submission_sends_zero_new_orders(tmp_path, monkeypatch):
    start = pd.Timestamp("2019-01-02")
    bars = SampleSource().fetch(list(CONTRACTS), start, pd.Timestamp(LATEST_SAMPLE_SESSION))
    fake = FakeTWS(now=pd.Timestamp("2022-12-28 23:00", tz="UTC"), lifetime=900)
    for symbol, contract in CONTRACTS.items():
        served = bars[bars["instrument"] == symbol][["session", "close"]].assign(
            open=lambda d: d["close"], high=lambda d: d["close"], low=lambda d: d["close"], volume=1000.0)
        fake.add(contract, served.reset_index(drop=True))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    ensure_dagster_home()  # the project's dagster.yaml (pools, run queue) in a temporary DAGSTER_HOME
    with fake:
        config = write_config(
            tmp_path, symbols=list(CONTRACTS), history_start=str(start.date()),
            source={"kind": "ib", "ib": {"port": fake.port, "client_id": 21, "timeout": 5.0}},
            broker={"mode": "ib", "execution": "paper", "paper_ports": [fake.port], "fill_wait": 1.0,
                    "ib": {"port": fake.port, "client_id": 22, "timeout": 5.0}},
        )
        monkeypatch.setenv(CONFIG_ENV_VAR, str(config))
        job = dg.reconstructable(daily_job_of_the_configured_lake)
        cfg = load_config(config)
        ledger = Ledger.at_lake(cfg.lake_path)

        def drop_after_the_last_order(order):
            # The gateway books every order; the connection drops before the step hears back about
            # the last one (every intent is in the ledger before the first placeOrder), so the
            # orders step fails AFTER all its submissions.
            intents = ledger.intents(session=LATEST_SAMPLE_SESSION)
            if len(fake.orders()) == int((intents["verdict"] == "ACCEPTED").sum()):
                fake.script("place", Drop())

        fake.on_place = drop_after_the_last_order
        with dg.DagsterInstance.get() as instance:
            first = dg.execute_job(job, instance, run_config=SUBMIT_RUN_CONFIG,
                                   tags={"dagster/partition": LATEST_SAMPLE_SESSION})
            assert not first.success
            fake.on_place = None
            [failed_step] = [e.step_key for e in first.all_events if e.event_type_value == "STEP_FAILURE"]
            assert failed_step == "orders"
            placed_before = [f[26] for f in fake.placed()]
            open_before = ledger.intents(session=LATEST_SAMPLE_SESSION).query("status == 'INTENT'")["order_ref"].tolist()
            # "Re-execute from failure": the failed steps only, with the parent's run config. execute_job
            # does not copy the parent's tags (the UI's re-execution does), so the partition is passed on.
            retry = dg.execute_job(job, instance, tags={"dagster/partition": LATEST_SAMPLE_SESSION},
                                   reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance))
            placed_after_retry = [f[26] for f in fake.placed()]
            retried_steps = {e.step_key for e in retry.all_events if e.event_type_value == "STEP_START"}
            again = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
            retry_run = instance.get_run_by_id(retry.run_id)
    assert retry.success and again.success
    assert retried_steps == {"orders"}  # Dagster re-ran only the failed step ...
    assert retry_run.parent_run_id == first.run_id and retry_run.tags["dagster/partition"] == LATEST_SAMPLE_SESSION
    assert len(placed_before) >= 2 and len(set(placed_before)) == len(placed_before)
    assert placed_after_retry == placed_before  # ... and it sent zero new orders
    assert [f[26] for f in fake.placed()] == placed_before  # so did a later run of the partition
    assert open_before == [placed_before[-1]]  # the order whose answer was lost, adopted by the retry:
    intents = ledger.intents(session=LATEST_SAMPLE_SESSION)
    sent = intents[intents["mode"] == "submit"]
    accepted = sent[sent["verdict"] == "ACCEPTED"]
    assert sorted(accepted["order_ref"]) == sorted(placed_before) and set(accepted["status"]) == {"FILLED"}
    assert accepted.set_index("order_ref").loc[placed_before[-1], "perm_id"] == fake.orders(placed_before[-1])[0].perm_id
    assert sent["code_version"].notna().all() and sent["input_hash"].notna().all()
    assert set(sent["account"]) == {fake.account}
    net = ledger.net_fills(broker="ib")
    assert {s: fake.position(s) for s in net.index} == net.to_dict()
    targets = Lake(cfg.lake_path).read_wide("target_positions", "target", list(CONTRACTS)).loc[LATEST_SAMPLE_SESSION]
    for symbol in accepted["instrument"]:
        assert fake.position(symbol) == targets[symbol]
