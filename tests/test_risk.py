"""The pre-trade gate: kill switch states, each limit at and just above its boundary, fail-closed
inputs. Expected numbers are hand-computed from the limits given in each test."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import RiskLimits
from pipeline.execution.gate import (
    Verdict,
    clip_to_position_limit,
    is_reducing,
    pre_trade_check,
)
from pipeline.trading import TradingState

LIMITS = RiskLimits(max_order_quantity=100, max_order_notional=500_000, max_position=200_000, price_collar=0.10)
ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def check(quantity, price=100.0, *, point_size=1.0, position=0.0, state=ACTIVE, limits=LIMITS, limit_price=None):
    return pre_trade_check(quantity, "ES", price, point_size, position, state, limits, limit_price)


def test_an_order_within_every_limit_is_accepted_with_no_reason():
    assert check(10) == Verdict(True, None, None)


def test_halted_denies_even_a_reducing_order_and_names_the_kill_switch():
    v = check(-5, position=10, state=HALTED)
    assert not v.accepted
    assert v.rule == "kill_switch"
    assert v.reason.startswith("kill_switch: trading state is HALTED")


def test_halted_is_reported_before_an_invalid_price():
    assert check(5, price=math.nan, state=HALTED).rule == "kill_switch"


@pytest.mark.parametrize("position, quantity", [(10, -4), (10, -10), (-10, 3), (-10, 10)])
def test_reducing_accepts_an_order_that_cuts_the_position_down_to_at_most_flat(position, quantity):
    assert check(quantity, position=position, state=REDUCING).accepted


@pytest.mark.parametrize(
    "position, quantity",
    [(10, 1), (10, -11), (-10, -1), (-10, 11), (0, 5), (0, -5)],
    ids=["adds-long", "crosses-long-to-short", "adds-short", "crosses-short-to-long", "opens-long", "opens-short"],
)
def test_reducing_denies_an_order_that_adds_or_crosses_zero(position, quantity):
    v = check(quantity, position=position, state=REDUCING)
    assert (v.accepted, v.rule) == (False, "reduce_only")


def test_is_reducing_is_false_for_a_zero_order():
    assert not is_reducing(0.0, 10.0)


def test_max_order_quantity_accepts_the_limit_and_denies_just_above():
    # limit 100 units; price 1 so that notional (100) stays far below its limit
    assert check(100, price=1.0).accepted
    assert check(-100, price=1.0).accepted
    v = check(100.000001, price=1.0)
    assert (v.accepted, v.rule) == (False, "max_order_quantity")
    assert v.reason == "max_order_quantity: |100.000001| > 100"


def test_max_order_notional_accepts_the_limit_and_denies_just_above():
    # 100 x 5000 x 1 = 500000 == limit; 100 x 5000.01 x 1 = 500001 > limit
    assert check(100, price=5000.0).accepted
    v = check(100, price=5000.01)
    assert (v.accepted, v.rule) == (False, "max_order_notional")


def test_max_order_notional_counts_the_point_size():
    # 2 contracts x 4000 points x 50 USD/point = 400000 <= 500000; 3 x 4000 x 50 = 600000 > 500000
    assert check(2, price=4000.0, point_size=50.0).accepted
    assert check(-3, price=4000.0, point_size=50.0).rule == "max_order_notional"


def test_max_order_notional_reason_names_the_numbers():
    # worked example: 120 x 4500 x 1 = 540000 > 500000
    limits = RiskLimits(max_order_quantity=1000, max_order_notional=500_000)
    v = check(120, price=4500.0, limits=limits)
    assert v.reason == "max_order_notional: |120 x 4500.0 x 1| = 540000 > 500000"


def test_max_position_accepts_the_limit_and_denies_just_above_on_both_sides():
    # |199950 + 50| = 200000 == limit; |199950 + 51| = 200001 > limit; same mirrored for shorts
    assert check(50, price=1.0, position=199_950).accepted
    assert check(-50, price=1.0, position=-199_950).accepted
    v = check(51, price=1.0, position=199_950)
    assert (v.accepted, v.reason) == (False, "max_position: |199950 + 51| = 200001 > 200000")
    assert check(-51, price=1.0, position=-199_950).rule == "max_position"


def test_a_trade_that_reduces_an_oversized_position_is_allowed():
    # |250000 - 10| = 249990 > 200000, but smaller than 250000: a book over its limit can be brought
    # back (issue 16; pysystemtrade lets such a trade through); adding to it stays denied
    assert check(-10, price=1.0, position=250_000).accepted
    assert check(10, price=1.0, position=250_000).rule == "max_position"
    assert check(-10, price=1.0, position=-250_000).rule == "max_position"


#: pysystemtrade ``sysobjects/production/position_limits.py``, the doctests of
#: ``what_trade_is_possible_single_leg_trade``: (position, limit, proposed trade, possible trade).
PST_POSITION_LIMIT_CASES = [
    (1, 1, 0, 0), (5, 1, 0, 0), (0, 3, 1, 1), (0, 3, 2, 2), (0, 3, 3, 3), (0, 3, 4, 3), (0, 3, -1, -1),
    (0, 3, -2, -2), (0, 3, -3, -3), (0, 3, -4, -3), (2, 3, 1, 1), (2, 3, 2, 1), (2, 3, -2, -2), (2, 3, -4, -4),
    (2, 3, -5, -5), (2, 3, -6, -5), (5, 3, 2, 0), (5, 3, -1, -1), (5, 3, -2, -2), (5, 3, -9, -8), (2, 3, -4, -4),
    (2, 3, -5, -5), (2, 3, -6, -5), (0, 3, 1, 1), (0, 3, -4, -3), (-2, 3, -1, -1), (-2, 3, -2, -1),
    (-5, 3, -2, 0), (-5, 3, 1, 1), (-5, 3, 2, 2), (-5, 3, 2, 2), (-5, 3, 7, 7), (-5, 3, 9, 8), (-3, 3, 7, 6),
    (3, 3, -7, -6),
]


@pytest.mark.parametrize(("position", "limit", "trade", "possible"), PST_POSITION_LIMIT_CASES)
def test_pysystemtrade_position_limit_cases(position, limit, trade, possible):
    assert clip_to_position_limit(position, limit, trade) == possible
    # what is left passes the gate's max_position rule
    limits = LIMITS.model_copy(update={"max_position": limit})
    if possible:
        assert check(possible, price=1.0, position=position, limits=limits).accepted


def test_the_daily_trade_count_limit_denies_orders_beyond_it():
    limits = LIMITS.model_copy(update={"max_trades_per_session": 2})
    ok = pre_trade_check(1, "ES", 100.0, 1.0, 0.0, ACTIVE, limits, trades_in_session=1)
    v = pre_trade_check(1, "ES", 100.0, 1.0, 0.0, ACTIVE, limits, trades_in_session=2)
    assert ok.accepted and (v.rule, v.reason) == (
        "max_trades_per_session", "max_trades_per_session: 2 orders already sent for this session >= 2")
    assert pre_trade_check(1, "ES", 100.0, 1.0, 0.0, ACTIVE, LIMITS, trades_in_session=10_000).accepted  # no limit


def test_price_collar_accepts_the_collar_and_denies_just_outside():
    # collar 10% around 100: 110 and 90 are at the collar (110/100 - 1 = 0.10000000000000009 in floats)
    assert check(1, limit_price=110.0).accepted
    assert check(1, limit_price=90.0).accepted
    assert check(1, limit_price=110.01).rule == "price_collar"
    assert check(1, limit_price=89.99).rule == "price_collar"


def test_a_market_order_has_no_collar_check():
    assert check(1, limit_price=None).accepted


@pytest.mark.parametrize("limit_price", [0.0, -5.0, math.nan, math.inf])
def test_an_invalid_limit_price_is_denied(limit_price):
    assert check(1, limit_price=limit_price).rule == "invalid_limit_price"


@pytest.mark.parametrize("price", [math.nan, math.inf, 0.0, -1.0])
def test_a_missing_or_non_positive_reference_price_is_denied(price):
    assert check(1, price=price).rule == "invalid_reference_price"


def test_a_missing_point_size_is_denied():
    assert check(1, point_size=math.nan).rule == "invalid_reference_price"


@pytest.mark.parametrize("quantity", [0.0, math.nan, math.inf])
def test_a_zero_or_non_finite_quantity_is_denied(quantity):
    assert check(quantity).rule == "invalid_quantity"


def test_an_unknown_position_is_denied():
    assert check(1, position=math.nan).rule == "invalid_position"


def test_state_given_as_a_string_is_understood():
    assert check(1, state="HALTED").rule == "kill_switch"


@settings(max_examples=200, deadline=None)
@given(
    quantity=st.integers(-300, 300).filter(lambda q: q != 0),
    price_cents=st.integers(1, 1_000_000),
    position=st.integers(-250_000, 250_000),
)
def test_active_gate_agrees_with_an_exact_integer_reimplementation(quantity, price_cents, position):
    # Independent check in exact integer arithmetic (cents), so no float rounding is involved.
    limits = RiskLimits(max_order_quantity=200, max_order_notional=1_000_000, max_position=200_000)
    expected = (
        abs(quantity) <= 200
        and abs(quantity) * price_cents <= 1_000_000 * 100
        # within the position limit, or reducing a position already over it (issue 16)
        and (abs(position + quantity) <= 200_000 or abs(position + quantity) < abs(position))
    )
    v = pre_trade_check(quantity, "X", price_cents / 100, 1.0, position, ACTIVE, limits)
    assert v.accepted == expected


# --- paper account, order-rate throttle, daily-loss circuit breaker -----------------------------

def test_a_non_paper_account_is_denied_unless_live_trading_is_enabled():
    args = (10, "ES", 100.0, 1.0, 0.0, ACTIVE, LIMITS)
    assert pre_trade_check(*args, account="DU1234567").accepted
    denied = pre_trade_check(*args, account="U7654321")
    assert denied.rule == "paper_account"
    assert denied.reason == "paper_account: account U7654321 is not a paper account (DU...) and live trading is not enabled"
    assert pre_trade_check(*args, account="U7654321", live=True).accepted
    assert pre_trade_check(*args).accepted  # no account (the paper broker): the rule does not apply


def test_the_throttle_denies_the_order_that_would_exceed_the_window():
    # nautilus_trader's test: 100 per second forwarded, the 101st denied
    limits = LIMITS.model_copy(update={"max_orders_per_window": 100, "order_window_seconds": 1.0})
    verdicts = [pre_trade_check(1, "ES", 100.0, 1.0, 0.0, ACTIVE, limits, orders_in_window=n) for n in range(101)]
    assert all(v.accepted for v in verdicts[:100])
    assert verdicts[100].reason == "order_rate: 100 orders within 1 s >= 100"


def test_halted_is_reported_before_the_paper_account_and_the_throttle():
    v = pre_trade_check(1, "ES", 100.0, 1.0, 0.0, HALTED, LIMITS, orders_in_window=10**6, account="U1")
    assert v.rule == "kill_switch"


@pytest.mark.parametrize(
    "pnl, limit, expected",
    [
        (-50_000.0, 50_000.0, None),  # at the limit: not beyond it
        (-50_000.01, 50_000.0, "max_daily_loss: daily P&L -50000.01 < -50000"),
        (10_000.0, 50_000.0, None),
        (-10**9, None, None),  # breaker off
        (None, 50_000.0, None),  # the broker reports no P&L
        (math.nan, 50_000.0, None),
    ],
)
def test_the_daily_loss_circuit_breaker_trips_only_beyond_the_limit(pnl, limit, expected):
    from pipeline.execution.gate import daily_loss_breached

    assert daily_loss_breached(pnl, LIMITS.model_copy(update={"max_daily_loss": limit})) == expected


@settings(max_examples=300, deadline=None)
@given(position=st.integers(-20, 20), trade=st.integers(-40, 40), limit=st.integers(0, 15))
def test_the_array_clip_equals_the_scalar_rule_and_never_adds_beyond_the_limit(position, trade, limit):
    from pipeline.execution.gate import clip_trades

    possible = clip_to_position_limit(position, limit, trade)
    assert clip_trades(np.array([float(position)]), np.array([float(trade)]), limit)[0] == possible
    assert possible * trade >= 0 and abs(possible) <= abs(trade)  # same direction, never larger
    after = position + possible
    assert abs(after) <= limit or abs(after) <= abs(position)  # within the limit, or no further out
