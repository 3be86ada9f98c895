"""The stale-price guard (pipeline/quality/stale.py)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.quality.stale import (
    StaleError,
    mask_stale_forecasts,
    stale_instruments,
    stale_mask,
    without_stale,
)
from pipeline.signals.rules import ewmac
from pipeline.signals.volatility import robust_vol

NAN = np.nan


def _prices(values: dict[str, list[float]]) -> pd.DataFrame:
    n = len(next(iter(values.values())))
    return pd.DataFrame(values, index=pd.bdate_range("2024-01-01", periods=n, name="session"))


def test_a_close_is_stale_after_n_unchanged_sessions():
    p = _prices({"A": [1, 2, 2, 2, 2, 3, 3], "B": [1, 2, 3, 4, 5, 6, 7]})
    mask = stale_mask(p, 2)
    # A: changes -, +1, 0, 0, 0, +1, 0 -> runs 0,0,1,2,3,0,1
    assert mask["A"].tolist() == [False, False, False, True, True, False, False]
    assert not mask["B"].any()


def test_missing_sessions_neither_extend_nor_end_a_run_and_are_never_flagged():
    p = _prices({"A": [NAN, 5, 5, NAN, 5, 5, 6]})
    # observed closes 5, 5, 5, 5, 6: runs 0, 1, (gap), 2, 3, 0
    assert stale_mask(p, 2)["A"].tolist() == [False, False, False, False, True, True, False]


def test_sessions_must_be_positive():
    with pytest.raises(StaleError, match="sessions"):
        stale_mask(_prices({"A": [1.0, 2.0]}), 0)


def test_stale_closes_leave_the_vol_so_it_does_not_decay():
    rng = np.random.default_rng(3)
    moving = 100 + np.cumsum(rng.normal(0, 1, 400))
    values = np.r_[moving, np.full(300, moving[-1])]  # 300 sessions flat
    p = _prices({"A": values})
    plain = robust_vol(p)["A"]
    guarded = robust_vol(without_stale(p, stale_mask(p, 5)))["A"]
    assert plain.iloc[-1] < 0.2 * plain.iloc[399]  # the ordinary vol collapses on the flat run
    # the guarded vol only sees the first 5 unchanged closes, then carries its value
    assert guarded.iloc[-1] == pytest.approx(guarded.iloc[405])
    assert guarded.iloc[-1] > 0.7 * plain.iloc[399]


def test_stale_instruments_get_no_forecast():
    p = _prices({"A": [1, 2, 2, 2, 2, 3], "B": [1, 2, 3, 4, 5, 6]})
    mask = stale_mask(p, 2)
    vol = pd.DataFrame(1.0, index=p.index, columns=p.columns)
    raw = pd.concat({"ewmac2_8": ewmac(p, vol, 2, 8)}, axis=1, names=["rule", "instrument"])
    out = mask_stale_forecasts(raw, mask)
    assert out[("ewmac2_8", "A")].isna().tolist() == [False, False, False, True, True, False]
    pd.testing.assert_series_equal(out[("ewmac2_8", "B")], raw[("ewmac2_8", "B")])
    assert stale_instruments(mask, p.index[3]) == ["A"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([1.0, 2.0, NAN]), min_size=2, max_size=30), st.integers(0, 29), st.integers(1, 4))
def test_the_flag_is_causal(values, cut, n):
    p = _prices({"A": values})
    cut = min(cut, len(values) - 1)
    changed = p.copy()
    changed.iloc[cut:] = 7.0
    before = stale_mask(p, n).iloc[:cut]
    after = stale_mask(changed, n).iloc[:cut]
    pd.testing.assert_frame_equal(before, after)


def test_forecast_scalars_are_estimated_without_the_stale_sessions():
    """A market that goes flat (vol decays to the floor, raw EWMAC explodes) must not move the
    scalar: the guarded estimate equals the estimate on the forecasts with its stale sessions removed."""
    from pipeline.config import RulesConfig
    from pipeline.signals.forecasts import (
        estimate_forecast_scalars,
        estimate_guarded_scalars,
        raw_forecast_stack,
    )

    rng = np.random.default_rng(11)
    n = 900
    values = 100.0 + rng.normal(size=(n, 4)).cumsum(axis=0)
    values[500:, 3] = values[499, 3] + np.r_[np.zeros(300), rng.normal(size=100).cumsum() * 1e-3]  # flat, then barely moving
    closes = pd.DataFrame(values, index=pd.bdate_range("2015-01-01", periods=n, name="session"), columns=list("ABCD"))
    rules = RulesConfig(ewmac=[(8, 32)], breakout=[])
    stale = stale_mask(closes, 5)
    assert stale["D"].sum() > 250 and not stale[["A", "B", "C"]].any().any()
    vol = robust_vol(without_stale(closes, stale))
    guarded = estimate_guarded_scalars(closes, vol, rules, stale_sessions=5, min_periods=200)
    by_hand = estimate_forecast_scalars(mask_stale_forecasts(raw_forecast_stack(closes, vol, rules), stale), min_periods=200)
    pd.testing.assert_frame_equal(guarded, by_hand)
    unguarded = estimate_guarded_scalars(closes, vol, rules, stale_sessions=0, min_periods=200)
    # Cross-sectional median of |raw| on one session by hand: the median of the four |raw| values
    # (D stale is out of the guarded one: median of three).
    raw = raw_forecast_stack(closes, vol, rules)["ewmac8_32"]
    row = 700
    assert np.median(np.abs(raw.iloc[row].to_numpy())) != pytest.approx(np.median(np.abs(raw.iloc[row, :3].to_numpy())))
    assert guarded["ewmac8_32"].iloc[-1] != pytest.approx(unguarded["ewmac8_32"].iloc[-1], rel=1e-3)
