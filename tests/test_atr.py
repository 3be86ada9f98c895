"""Wilder's true range and ATR against a hand computation (Wilder 1978, New Concepts in Technical Trading Systems)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.strategies.atr import ATRInputError, true_range, wilder_atr

# six bars; true ranges by hand:
#   t0 first bar: H - L = 2;  t1: max(2, |11-9|, |9-9|) = 2;  t2: max(3, |13-10.5|, |10-10.5|) = 3
#   t3: max(1, |12.5-12|, |11.5-12|) = 1;  t4 gap up: max(1, |15-12|, |14-12|) = 3
#   t5: max(3, |14-14.5|, |11-14.5|) = 3.5
HIGH = [10.0, 11.0, 13.0, 12.5, 15.0, 14.0]
LOW = [8.0, 9.0, 10.0, 11.5, 14.0, 11.0]
CLOSE = [9.0, 10.5, 12.0, 12.0, 14.5, 11.5]
TR = [2.0, 2.0, 3.0, 1.0, 3.0, 3.5]
# ATR(3): seed = mean(2, 2, 3) = 7/3 at t2; then ATR = (2 ATR_prev + TR) / 3
ATR3 = [np.nan, np.nan, 7 / 3, 17 / 9, 61 / 27, 216.5 / 81]


def _panel(values, index=None) -> pd.DataFrame:
    index = index if index is not None else pd.bdate_range("2024-01-01", periods=len(values), name="session")
    return pd.DataFrame({"CL": values}, index=index)


def test_true_range_by_hand():
    tr = true_range(_panel(HIGH), _panel(LOW), _panel(CLOSE))
    np.testing.assert_allclose(tr["CL"].to_numpy(), TR)


def test_wilder_atr_by_hand():
    atr = wilder_atr(_panel(HIGH), _panel(LOW), _panel(CLOSE), period=3)
    np.testing.assert_allclose(atr["CL"].to_numpy(), ATR3, equal_nan=True)
    assert atr["CL"].iloc[-1] == pytest.approx(2.672839506, abs=1e-9)


def test_a_missing_bar_carries_the_atr_and_the_close_before_the_gap():
    """A quarantined bar is absent from clean bars: no true range that session, the ATR carried, and the
    next bar's true range measured from the close before the gap."""
    idx = pd.bdate_range("2024-01-01", periods=7, name="session")
    with_gap = [v[:4] + [np.nan] + v[4:] for v in (HIGH, LOW, CLOSE)]
    atr = wilder_atr(*(_panel(v, idx) for v in with_gap), period=3)["CL"].to_numpy()
    np.testing.assert_allclose(np.delete(atr, 4), ATR3, equal_nan=True)
    assert atr[4] == pytest.approx(17 / 9)


def test_instruments_are_independent_and_start_on_their_own_first_bar():
    idx = pd.bdate_range("2024-01-01", periods=8, name="session")
    frames = []
    for values in (HIGH, LOW, CLOSE):
        frames.append(pd.DataFrame({"A": values + [np.nan, np.nan], "B": [np.nan, np.nan] + values}, index=idx))
    atr = wilder_atr(*frames, period=3)
    np.testing.assert_allclose(atr["A"].to_numpy()[:6], ATR3, equal_nan=True)
    np.testing.assert_allclose(atr["B"].to_numpy()[2:], ATR3, equal_nan=True)
    assert atr["B"].iloc[:4].isna().all()


def test_misaligned_panels_are_refused():
    with pytest.raises(ATRInputError, match="low has a different index"):
        true_range(_panel(HIGH), _panel(LOW[:5]), _panel(CLOSE))
    with pytest.raises(ATRInputError, match="period must be >= 1"):
        wilder_atr(_panel(HIGH), _panel(LOW), _panel(CLOSE), period=0)
