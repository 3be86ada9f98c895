"""Capital from the account (issue 16): each daily run records the capital it sized with; a
backfill reuses recorded capital; an account value far from the last one halts trading instead of
resizing the book. Numbers by hand: the vol scalar is linear in capital (ST ch. 10)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from pipeline.adapters.ib.fake_gateway import FakeContract, FakeTWS
from pipeline.config import PortfolioConfig, load_config
from pipeline.definitions import execute_backfill, execute_daily
from pipeline.execution.paper_broker import PaperBroker
from pipeline.portfolio.capital import (
    CapitalError,
    capital_change_breach,
    capital_series,
    decide_session_capital,
)
from pipeline.portfolio.sizing import volatility_scalar
from pipeline.store.lake import Lake
from pipeline.store.ledger import LEDGER_FILE, Ledger
from pipeline.trading import Fill, TradingState
from tests.conftest import LATEST_SAMPLE_SESSION, write_config

DAYS = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"], name="session")


def test_capital_series_uses_records_carried_forward_and_the_configured_number_before_them():
    recorded = pd.Series([2e6, 3e6], index=pd.DatetimeIndex(["2024-01-03", "2024-01-05"]))
    assert capital_series(DAYS, recorded, 1e6).tolist() == [1e6, 2e6, 2e6, 3e6]
    assert capital_series(DAYS, recorded.iloc[:0], 1e6).tolist() == [1e6] * 4
    with pytest.raises(CapitalError):
        capital_series(DAYS, pd.Series([-1.0], index=DAYS[:1]), 1e6)


def test_the_vol_scalar_scales_each_session_by_its_capital():
    prices = pd.DataFrame({"A": [100.0] * 4, "B": [50.0] * 4}, index=DAYS)
    vol = pd.DataFrame({"A": [2.0] * 4, "B": [1.0] * 4}, index=DAYS)
    ps = pd.Series({"A": 1.0, "B": 10.0})
    fixed = volatility_scalar(prices, vol, 1e6, 0.25, ps)
    varying = volatility_scalar(prices, vol, pd.Series([1e6, 2e6, 2e6, 5e5], index=DAYS), 0.25, ps)
    # 1e6 x 0.25 / 16 / (2 x 1) = 7812.5 shares of A per forecast 10 at 1M
    assert fixed.loc[DAYS[0], "A"] == 7812.5
    np.testing.assert_allclose(varying.to_numpy(), fixed.to_numpy() * np.array([[1.0], [2.0], [2.0], [0.5]]), rtol=1e-15)


@pytest.mark.parametrize(("capital", "previous", "limit", "breach"), [
    (1.1e6, 1e6, 0.2, False), (1.3e6, 1e6, 0.2, True), (7e5, 1e6, 0.2, True), (5e6, None, 0.2, False),
    (5e6, 1e6, None, False), (0.0, 1e6, 0.2, True), (float("nan"), None, None, True),
])
def test_a_capital_change_beyond_the_limit_is_not_believed(capital, previous, limit, breach):
    assert (capital_change_breach(capital, previous, limit) is not None) is breach


def test_an_account_value_that_jumps_halts_trading_and_keeps_the_last_capital(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_FILE).init()
    portfolio = PortfolioConfig(capital="account", max_capital_change=0.2)
    assert portfolio.capital_source == "account" and portfolio.capital == 1_000_000.0
    assert decide_session_capital(ledger, DAYS[0], portfolio, 1_050_000.0) == 1_050_000.0  # first read: believed
    assert decide_session_capital(ledger, DAYS[1], portfolio, 1_100_000.0) == 1_100_000.0  # +4.8%
    assert decide_session_capital(ledger, DAYS[2], portfolio, 2_200_000.0) == 1_100_000.0  # +100%: not believed
    assert ledger.trading_state() is TradingState.HALTED
    rows = ledger.capital_records()
    assert rows["capital"].tolist() == [1_050_000.0, 1_100_000.0, 1_100_000.0]
    assert rows["net_liquidation"].tolist() == [1_050_000.0, 1_100_000.0, 2_200_000.0]
    assert "+100.0% from the last recorded 1,100,000" in rows["note"].iloc[-1]
    assert (ledger.alerts()["kind"] == "capital_check").sum() == 1


def test_the_paper_account_is_its_capital_plus_the_pnl_of_its_fills(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_FILE).init()
    broker = PaperBroker(ledger, costs={}, point_sizes={"ES": 50.0}, capital=1e6)
    ledger.record_fill(Fill(fill_id="f1", order_ref="carver:2024-01-02:ES:1", broker="paper", session=DAYS[0],
                            instrument="ES", quantity=2.0, price=4800.0, commission=4.0, slippage_cost=25.0,
                            filled_at=pd.Timestamp("2024-01-02 21:00", tz="UTC")))
    # 1e6 - 2 x 4800 x 50 - 4 - 25 + 2 x 4810 x 50 = 1e6 + 1000 - 29
    assert broker.net_liquidation(pd.Series({"ES": 4810.0})) == 1_000_971.0


def test_each_daily_run_records_its_capital_and_a_backfill_sizes_with_it(tmp_path):
    config = write_config(tmp_path, symbols=["AAPL", "KO"], history_start="2019-01-02")
    instance = dg.DagsterInstance.ephemeral()
    assert execute_daily(LATEST_SAMPLE_SESSION, submit=False, config_path=str(config), instance=instance).success
    ledger = Ledger.at_lake(tmp_path / "lake").init()
    rows = ledger.capital_records()
    assert rows[["capital", "source"]].values.tolist() == [[1_000_000.0, "config"]]
    before = Lake(tmp_path / "lake").read("target_positions").set_index(["session", "instrument"])["optimal"]

    # the account was worth 2M on 2022-12-27: a backfill over it sizes that session with 2M
    ledger.record_capital("2022-12-27", 2_000_000.0, "account", "USD", net_liquidation=2_000_000.0)
    assert execute_backfill("2022-12-27", "2022-12-27", config_path=str(config), instance=instance).success
    after = Lake(tmp_path / "lake").read("target_positions").set_index(["session", "instrument"])["optimal"]
    day = pd.Timestamp("2022-12-27")
    np.testing.assert_allclose(after.loc[day].to_numpy(), 2.0 * before.loc[day].to_numpy(), rtol=1e-12)


def test_capital_account_reads_the_ib_net_liquidation_times_the_fraction(tmp_path):
    with FakeTWS(now=pd.Timestamp("2022-12-28 22:00", tz="UTC"), lifetime=600, net_liquidation=2_000_000.0) as fake:
        for c in (FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"),
                  FakeContract("KO", "STK", "SMART", "USD", 8894, primary_exchange="NYSE")):
            fake.add(c)
        config = write_config(tmp_path, symbols=["AAPL", "KO"], history_start="2019-01-02",
                              portfolio={"capital": "account", "capital_fraction": 0.5},
                              broker={"mode": "ib", "ib": {"port": fake.port, "timeout": 5.0}})  # dry run: read only
        assert load_config(config).portfolio.capital_source == "account"
        result = execute_daily(LATEST_SAMPLE_SESSION, config_path=str(config), instance=dg.DagsterInstance.ephemeral())
        assert result.success
    rows = Ledger.at_lake(tmp_path / "lake").init().capital_records()
    assert rows[["capital", "source", "net_liquidation", "fraction"]].values.tolist() == [
        [1_000_000.0, "account", 2_000_000.0, 0.5]]
    meta = next(e for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "target_positions").materialization.metadata
    assert meta["capital"].value == 1_000_000.0 and meta["capital_source"].value == "account"
