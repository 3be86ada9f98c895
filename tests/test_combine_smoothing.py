"""Forecast weights smoothed through time (pst ``forecast_weight_ewma_span``) and the combination
with session-varying weights."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import CombinationConfig
from pipeline.signals.combine import (
    CombinationError,
    combine_forecasts,
    combine_forecasts_daily,
)
from pipeline.signals.forecast_weights import (
    ForecastWeightsError,
    combine_with_weight_history,
    smoothed_weights,
)

NAN = np.nan


def _sessions(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2021-01-04", periods=n, name="session")


def _history(rows: list[list[float]], at: list[int], sessions: pd.DatetimeIndex, rules=("a", "b")) -> pd.DataFrame:
    out = pd.DataFrame(rows, index=pd.DatetimeIndex(sessions[at], name="estimated_at"), columns=list(rules))
    out.columns.name = "rule"
    return out


def test_a_new_estimate_phases_in_by_the_ewma_hand_computed():
    sessions = _sessions(6)
    # (1, 0) in force on sessions 0..2 (dated 0, applies after it, and on its own session);
    # (0, 1) dated session 2 applies from session 3.
    history = _history([[1.0, 0.0], [0.0, 1.0]], [0, 2], sessions)
    w = smoothed_weights(history, sessions, span=3)  # alpha = 2 / (3 + 1) = 0.5, adjust=True
    # b at session 3: weights 1, 0.5, 0.25, 0.125 on (1, 0, 0, 0) -> 1 / 1.875
    assert w["b"].iloc[3] == pytest.approx(1 / 1.875, abs=1e-15)
    # b at session 4: (1 + 0.5) / (1 + 0.5 + 0.25 + 0.125 + 0.0625)
    assert w["b"].iloc[4] == pytest.approx(1.5 / 1.9375, abs=1e-15)
    assert w["b"].iloc[:3].tolist() == [0.0, 0.0, 0.0]  # nothing before the estimate is in force
    np.testing.assert_allclose(w.sum(axis=1).to_numpy(), 1.0, atol=1e-15)


def test_weights_are_renormalised_and_constants_unchanged():
    sessions = _sessions(5)
    w = smoothed_weights(_history([[2.0, 0.0], [1.0, 3.0]], [0, 1], sessions), sessions, span=125)
    np.testing.assert_allclose(w.sum(axis=1).to_numpy(), 1.0, atol=1e-15)
    assert w.iloc[0].tolist() == [1.0, 0.0]
    constant = smoothed_weights(_history([[0.25, 0.75]], [0], sessions), sessions, span=125)
    np.testing.assert_allclose(constant.to_numpy(), [[0.25, 0.75]] * 5, atol=1e-15)


def test_bad_smoothing_inputs_are_named():
    sessions = _sessions(3)
    with pytest.raises(ForecastWeightsError, match="span"):
        smoothed_weights(_history([[1.0, 0.0]], [0], sessions), sessions, span=0)
    with pytest.raises(ForecastWeightsError, match="positive weight"):
        smoothed_weights(_history([[0.0, 0.0]], [0], sessions), sessions, span=5)


def _capped(sessions, a, b) -> pd.DataFrame:
    columns = pd.MultiIndex.from_tuples([("a", "X"), ("b", "X")], names=["rule", "instrument"])
    return pd.DataFrame(np.column_stack([a, b]), index=sessions, columns=columns)


def test_combination_with_daily_weights_hand_computed():
    sessions = _sessions(3)
    capped = _capped(sessions, [10.0, 5.0, NAN], [20.0, -5.0, 8.0])
    weights = pd.DataFrame([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]], index=sessions, columns=["a", "b"])
    got = combine_forecasts_daily(capped, weights, 1.2)
    # 10 x 1.2; (2.5 - 2.5) x 1.2; a missing -> b alone (weight renormalised) 8 x 1.2
    np.testing.assert_allclose(got["X"].to_numpy(), [12.0, 0.0, 9.6], atol=1e-14)
    # constant weights: the same as combine_forecasts
    constant = pd.DataFrame([[0.3, 0.7]] * 3, index=sessions, columns=["a", "b"])
    pd.testing.assert_frame_equal(
        combine_forecasts_daily(capped, constant, 1.5),
        combine_forecasts(capped, pd.Series({"a": 0.3, "b": 0.7}), 1.5),
        atol=1e-14, rtol=0,
    )
    with pytest.raises(CombinationError, match="sessions"):
        combine_forecasts_daily(capped, weights.iloc[1:], 1.0)
    with pytest.raises(CombinationError, match="not all 0"):
        combine_forecasts_daily(capped, weights * 0.0, 1.0)


def test_combine_with_weight_history_smooths_when_asked():
    sessions = _sessions(40)
    rng = np.random.default_rng(2)
    capped = _capped(sessions, rng.normal(0, 8, 40), rng.normal(0, 8, 40))
    history = _history([[0.5, 0.5], [0.1, 0.9]], [0, 19], sessions)
    combined, _ = combine_with_weight_history(capped, history, fdm=1.1, smooth_span=10)
    expected = combine_forecasts_daily(capped, smoothed_weights(history, sessions, 10), 1.1)
    pd.testing.assert_frame_equal(combined, expected)
    stepped, _ = combine_with_weight_history(capped, history, fdm=1.1)
    # the first period is identical; after the new estimate the smoothed weights lag the step
    pd.testing.assert_frame_equal(combined.iloc[:20], stepped.iloc[:20], atol=1e-13, rtol=0)
    assert not np.allclose(combined.iloc[20:].to_numpy(), stepped.iloc[20:].to_numpy())
    # one estimate (fixed weights): smoothing changes nothing, bit for bit
    one = history.iloc[:1]
    pd.testing.assert_frame_equal(
        combine_with_weight_history(capped, one, fdm=1.1, smooth_span=125)[0],
        combine_with_weight_history(capped, one, fdm=1.1)[0],
    )


def test_config_default_matches_pysystemtrade():
    assert CombinationConfig().forecast_weight_ewma_span == 125
    assert CombinationConfig(forecast_weight_ewma_span=None).forecast_weight_ewma_span is None
