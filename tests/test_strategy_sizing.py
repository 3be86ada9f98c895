"""Sizing rules of the stop-and-target strategy, by hand: fixed fraction, vol target, Kelly."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.strategies.config import StopTargetStrategy
from pipeline.strategies.sizing import (
    KellyEstimate,
    fixed_fraction_contracts,
    kelly_contracts,
    kelly_leverage,
    vol_target_contracts,
)

MCL_POINT = np.array([100.0])


def test_fixed_fraction_is_capital_at_risk_over_the_stop_distance_rounded_down():
    # 25,000 x 2% = 500 at risk; stop 2 x ATR 1.2 = 2.4 points x $100 = $240 a contract -> floor(2.08) = 2
    assert fixed_fraction_contracts(25_000.0, 0.02, np.array([2.4]), MCL_POINT, 5).tolist() == [2.0]
    # exactly whole: $500 / (2.5 x 100) = 2, not 1 from float rounding
    assert fixed_fraction_contracts(25_000.0, 0.02, np.array([2.5]), MCL_POINT, 5).tolist() == [2.0]
    # a tight stop: 500 / (0.3 x 100) = 16.7 -> capped at max_contracts 5
    assert fixed_fraction_contracts(25_000.0, 0.02, np.array([0.3]), MCL_POINT, 5).tolist() == [5.0]
    # a stop too wide for the account: 500 / (6 x 100) < 1 -> no trade; no ATR yet -> no trade
    got = fixed_fraction_contracts(25_000.0, 0.02, np.array([6.0, np.nan]), np.array([100.0, 100.0]), 5)
    assert got.tolist() == [0.0, 0.0]


def test_vol_target_contracts():
    # 100,000 x 20% = 20,000 a year; 1.5 points a day x 16 x $100 = $2,400 a year a contract -> floor(8.33) = 8
    assert vol_target_contracts(100_000.0, 0.20, np.array([1.5]), MCL_POINT, 10).tolist() == [8.0]
    assert vol_target_contracts(100_000.0, 0.20, np.array([1.5]), MCL_POINT, 5).tolist() == [5.0]
    assert vol_target_contracts(-1.0, 0.20, np.array([1.5]), MCL_POINT, 5).tolist() == [0.0]


def test_kelly_is_mu_over_sigma_squared_times_the_fraction_capped():
    # returns 2%, -1%, 3%, 0%: mu = 1%, sample variance = (1+4+4+1)e-4 / 3 = 1/3000 -> mu / var = 30
    r = np.array([0.02, -0.01, 0.03, 0.0])
    assert kelly_leverage(r, fraction=1.0, cap=100.0) == pytest.approx(30.0)
    assert kelly_leverage(r, fraction=0.5, cap=100.0) == pytest.approx(15.0)
    assert kelly_leverage(r, fraction=0.5, cap=2.0) == 2.0
    assert kelly_leverage(-r, fraction=0.5, cap=2.0) == 0.0  # a negative edge bets nothing
    assert kelly_leverage(r[:1], fraction=0.5, cap=2.0) == 0.0  # one trade: no variance
    running = KellyEstimate()
    running.add(r[:2])
    running.add(r[2:])
    assert running.n == 4 and running.leverage(0.5, 100.0) == pytest.approx(15.0)
    # leverage 2 x 25,000 = 50,000 notional; one contract at $50 x 100 = $5,000 -> 10, capped at 5
    assert kelly_contracts(25_000.0, 2.0, np.array([50.0]), MCL_POINT, 5).tolist() == [5.0]
    assert kelly_contracts(25_000.0, 0.5, np.array([50.0]), MCL_POINT, 5).tolist() == [2.0]


def test_fixed_fraction_needs_a_stop_to_risk_to():
    with pytest.raises(ValueError, match="fixed_fraction risks a fraction of equity to the stop"):
        StopTargetStrategy.model_validate({"kind": "stop_target", "order_ref_prefix": "a",
                                           "entry": {"kind": "ema_crossover"},
                                           "sizing": {"kind": "fixed_fraction", "risk_fraction": 0.02}})
