"""The daily job with bars from Interactive Brokers: the real ib_async client against the fake TWS."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from pipeline.config import load_config
from pipeline.definitions import execute_daily
from pipeline.lake import Lake
from pipeline.sources import SampleSource
from tests.conftest import LATEST_SAMPLE_SESSION, write_config
from tests.fake_tws import FakeContract, FakeTWS

CONTRACTS = {
    "AAPL": FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"),
    "KO": FakeContract("KO", "STK", "SMART", "USD", 8894, primary_exchange="NYSE"),
    "XOM": FakeContract("XOM", "STK", "SMART", "USD", 13977, primary_exchange="NYSE"),
}


def test_the_daily_job_runs_on_bars_served_over_the_tws_protocol(tmp_path):
    start = pd.Timestamp("2019-01-02")  # four yearly requests per instrument: well inside IB pacing
    bars = SampleSource().fetch(list(CONTRACTS), start, pd.Timestamp(LATEST_SAMPLE_SESSION))
    # The evening after the sample's last session: every bar served is final.
    fake = FakeTWS(now=pd.Timestamp("2022-12-28 23:00", tz="UTC"))
    for symbol, contract in CONTRACTS.items():
        served = bars[bars["instrument"] == symbol][["session", "close"]].assign(
            open=lambda d: d["close"], high=lambda d: d["close"], low=lambda d: d["close"], volume=1000.0)
        fake.add(contract, served.reset_index(drop=True))
    with fake:
        config = write_config(tmp_path, symbols=list(CONTRACTS), history_start=str(start.date()),
                              source={"kind": "ib", "ib": {"port": fake.port, "client_id": 21, "timeout": 5.0}})
        cfg = load_config(config)
        with dg.instance_for_test() as instance:
            result = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
    assert result.success
    lake = Lake(cfg.lake_path)
    raw = lake.read("raw_bars")
    assert set(raw["source"]) == {"ib:TRADES"}
    clean = lake.read_wide("clean_bars", "close", list(CONTRACTS))
    expected = bars.pivot(index="session", columns="instrument", values="close").reindex(columns=list(CONTRACTS))
    np.testing.assert_allclose(clean.to_numpy(), expected.loc[clean.index].to_numpy(), rtol=0, atol=0)
    assert clean.index[0] == start and clean.index[-1] == pd.Timestamp(LATEST_SAMPLE_SESSION)
    assert len(lake.read("target_positions", start=pd.Timestamp(LATEST_SAMPLE_SESSION))) == 3
