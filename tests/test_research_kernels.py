"""Vectorised kernels of the research pass against independent implementations.

The cross-sectional median behind the estimated forecast scalars, and the (session, rule,
instrument) panel behind the FDM and the combination when a rule covers only some instruments
(carry) and forecasts are missing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.signals.combine import combine_forecasts, estimate_fdm, forecast_weights
from pipeline.signals.forecasts import _row_median_nonzero


@settings(max_examples=80, deadline=None)
@given(
    values=arrays(
        np.float64, st.tuples(st.integers(1, 30), st.integers(1, 9)),
        elements=st.one_of(
            st.floats(-1e6, 1e6, allow_nan=False), st.just(np.nan), st.just(0.0), st.just(-0.0)
        ),
    ),
    fortran=st.booleans(),
)
def test_row_median_nonzero_equals_nanmedian_of_nonzero_magnitudes(values, fortran):
    block = np.asfortranarray(values) if fortran else values
    magnitude = np.abs(values)
    magnitude[magnitude == 0.0] = np.nan  # an exact zero is "no forecast"
    expected = np.array([np.nanmedian(row) if (~np.isnan(row)).any() else np.nan for row in magnitude])
    np.testing.assert_array_equal(_row_median_nonzero(block), expected)


def test_row_median_nonzero_hand_computed():
    block = np.array(
        [
            [0.0, -3.0, 1.0, np.nan],  # |.| non-zero {3, 1} -> 2
            [0.0, 0.0, np.nan, np.nan],  # nothing -> NaN
            [-5.0, 0.0, 2.0, 4.0],  # {5, 2, 4} -> 4
        ]
    )
    np.testing.assert_array_equal(_row_median_nonzero(block), [2.0, np.nan, 4.0])


def _panel_with_partial_rule(seed: int) -> pd.DataFrame:
    """Two rules on four instruments and a third ("carry") on two of them, with gaps."""
    rng = np.random.default_rng(seed)
    sessions = pd.bdate_range("2020-01-01", periods=600, name="session")
    common = pd.DataFrame(rng.normal(3, 7, size=(len(sessions), 4)), columns=list("ABCD"))  # rules correlate
    frames = {}
    for rule, instruments in (("breakout20", "ABCD"), ("carry", "BD"), ("ewmac8_32", "ABCD")):
        noise = rng.normal(0, 6, size=(len(sessions), len(instruments)))
        values = np.clip(common[list(instruments)].to_numpy() + noise, -20, 20)
        values[rng.random(values.shape) < 0.15] = np.nan
        values[: rng.integers(0, 300)] = np.nan  # a late start
        frames[rule] = pd.DataFrame(values, index=sessions, columns=list(instruments))
    return pd.concat(frames, axis=1, names=["rule", "instrument"])


def test_combine_with_a_rule_on_some_instruments_equals_plain_pandas():
    capped = _panel_with_partial_rule(3)
    weights = forecast_weights(["breakout20", "carry", "ewmac8_32"], {"breakout20": 0.5, "carry": 0.3, "ewmac8_32": 0.2})
    fdm = pd.Series(np.linspace(1.1, 1.6, len(capped)), index=capped.index)
    combined = combine_forecasts(capped, weights, fdm)
    expected = {}
    for instrument in "ABCD":
        forecasts = capped.xs(instrument, axis=1, level="instrument")
        w = weights.reindex(forecasts.columns)
        used = forecasts.notna().astype(float) @ w
        expected[instrument] = (forecasts.fillna(0.0) @ w) / used.where(used > 0) * fdm
    expected = pd.DataFrame(expected).clip(-20, 20)
    np.testing.assert_allclose(combined.to_numpy(), expected.to_numpy(), rtol=1e-12, atol=1e-12)
    assert combined.isna().equals(expected.isna())


def test_fdm_with_a_rule_on_some_instruments_equals_pooled_correlation_by_hand():
    capped = _panel_with_partial_rule(4)
    rules = ["breakout20", "carry", "ewmac8_32"]
    weights = forecast_weights(rules, None)
    fdm = estimate_fdm(capped, weights, min_periods=50, smooth_span=1)  # span 1: no smoothing
    # The last estimate (first session of the last week) from all pooled (session, instrument) pairs.
    week = capped.index.to_period("W")
    at = np.flatnonzero(np.r_[True, week[1:] != week[:-1]])[-1]
    upto = capped.iloc[: at + 1]
    long = upto.stack("instrument", future_stack=True)[rules]  # rows (session, instrument), columns rules
    corr = long.corr(min_periods=2).clip(lower=0.0).to_numpy()  # pairwise complete, as pooled
    w = weights.reindex(rules).to_numpy()
    expected = min(1.0 / np.sqrt(w @ corr @ w), 2.5)
    np.testing.assert_allclose(fdm.iloc[at], expected, rtol=1e-9)
