"""The fat-finger limit (reliability promise 4) across instrument types: a share, a futures contract
and a unit of currency are different sizes, so the maximum order quantity is set per instrument
(``risk.max_order_quantity_by_instrument``), with ``risk.max_order_quantity`` for the rest."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import CostModel, Instrument, PipelineConfig
from pipeline.execution import execute_orders
from pipeline.execution.gate import pre_trade_check
from pipeline.execution.paper_broker import PaperBroker
from pipeline.instruments import point_sizes
from pipeline.research.backtest import simulate
from pipeline.store.ledger import LEDGER_FILE, Ledger
from pipeline.trading import TradingState

CONFIG = PipelineConfig(
    instruments=[
        Instrument(symbol="AAPL", sec_type="STK"),
        Instrument(
            symbol="ES", sec_type="FUT", point_size=50.0, asset_class="equity_index"
        ),
        Instrument(symbol="EUR.USD", sec_type="CASH", asset_class="fx"),
        Instrument(symbol="MSFT", sec_type="STK"),
    ],
    risk={
        "max_order_quantity": 100_000,
        "max_order_quantity_by_instrument": {
            "AAPL": 2_000,
            "ES": 20,
            "EUR.USD": 2_000_000,
        },
        "max_order_notional": 1e9,  # out of the way: only the quantity rule is tested
        "max_position": 1e9,
    },
)
POINT_SIZES = point_sizes(CONFIG.instruments)

# instrument, reference price, the largest order allowed (units), the smallest one denied
CASES = [
    ("AAPL", 190.0, 2_000, 2_001),  # shares
    (
        "ES",
        4_500.0,
        20,
        21,
    ),  # contracts of 50 USD a point: 21 x 4500 x 50 = 4.7 million
    ("EUR.USD", 1.08, 2_000_000, 2_000_001),  # units of the base currency
    ("MSFT", 370.0, 100_000, 100_001),  # no entry: the portfolio-wide limit
]


def _check(symbol: str, quantity: float, price: float):
    return pre_trade_check(
        quantity,
        symbol,
        price,
        float(POINT_SIZES[symbol]),
        0.0,
        TradingState.ACTIVE,
        CONFIG.risk,
    )


@pytest.mark.parametrize(
    "symbol, price, allowed, denied", CASES, ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("side", [1, -1], ids=["buy", "sell"])
def test_each_instrument_type_has_its_own_order_quantity_limit(
    symbol, price, allowed, denied, side
):
    assert CONFIG.risk.order_quantity_limit(symbol) == allowed
    assert _check(symbol, side * allowed, price).accepted
    verdict = _check(symbol, side * denied, price)
    assert (verdict.accepted, verdict.rule) == (False, "max_order_quantity")
    assert verdict.reason == f"max_order_quantity: |{side * denied}| > {allowed}"


def test_a_limit_for_an_instrument_outside_the_universe_is_a_config_error():
    with pytest.raises(
        ValueError, match=r"names instruments not in the universe: \['NQ'\]"
    ):
        PipelineConfig(
            instruments=[Instrument(symbol="ES")],
            risk={"max_order_quantity_by_instrument": {"NQ": 5}},
        )
    with pytest.raises(ValueError, match="greater than 0"):
        PipelineConfig(
            instruments=[Instrument(symbol="ES")],
            risk={"max_order_quantity_by_instrument": {"ES": 0}},
        )


def test_the_order_run_denies_per_instrument_and_sends_nothing_for_the_denied(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_FILE).init()
    sizes = POINT_SIZES.to_dict()
    broker = PaperBroker(ledger, {s: CostModel() for s in sizes}, sizes)
    # 21 ES contracts break ES's limit of 20; 2,000 shares of AAPL are at AAPL's limit; 30,000
    # MSFT shares pass the portfolio-wide 100,000 though they would break ES's or AAPL's limit
    targets = pd.Series({"AAPL": 2_000.0, "ES": 21.0, "MSFT": 30_000.0})
    prices = pd.Series({"AAPL": 190.0, "ES": 4_500.0, "MSFT": 370.0})
    report = execute_orders(
        targets,
        prices,
        "2024-01-02",
        ledger=ledger,
        broker=broker,
        limits=CONFIG.risk,
        point_sizes=sizes,
        strategy="carver",
        submit=True,
        run_id="run-1",
    )
    intents = report.intents.set_index("instrument")
    assert intents.loc["ES", "status"] == "DENIED"
    assert intents.loc["ES", "deny_reason"] == "max_order_quantity: |21| > 20"
    assert intents.loc["AAPL", "status"] == intents.loc["MSFT", "status"] == "FILLED"
    assert broker.positions().to_dict() == {"AAPL": 2_000.0, "MSFT": 30_000.0}


def test_the_backtest_gate_uses_the_same_per_instrument_limits():
    sessions = pd.bdate_range("2024-01-02", periods=3, name="session")
    prices = pd.DataFrame({"AAPL": 190.0, "ES": 4_500.0, "MSFT": 370.0}, index=sessions)
    targets = pd.DataFrame(
        {"AAPL": 2_000.0, "ES": 21.0, "MSFT": 30_000.0}, index=sessions
    )
    costs = {s: CostModel() for s in targets}
    result = simulate(targets, prices, POINT_SIZES, costs, 1e8, gate=CONFIG.risk)
    assert result.holdings.iloc[-1].to_dict() == {
        "AAPL": 2_000.0,
        "ES": 0.0,
        "MSFT": 30_000.0,
    }
    assert set(result.denials["instrument"]) == {"ES"} and set(
        result.denials["rule"]
    ) == {"max_order_quantity"}
