"""Time-varying (estimated) forecast scalars and the long-only floor."""

import numpy as np
import pandas as pd
import pytest

from pipeline.signals.forecasts import (
    ForecastError,
    ForecastSet,
    floor_long_only,
    rescale,
)


def _fset():
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=4), name="session")
    cols = pd.MultiIndex.from_product([["ewmac8_32"], ["A", "B"]], names=["rule", "instrument"])
    raw = pd.DataFrame([[1.0, -1.0], [2.0, -2.0], [3.0, -3.0], [4.0, -8.0]], index=idx, columns=cols)
    return ForecastSet(raw=raw, scaled=raw * 5.3, capped=(raw * 5.3).clip(-20, 20))


def test_rescale_uses_the_estimate_known_at_each_session_and_the_fixed_value_before():
    fset = _fset()
    idx = fset.raw.index
    # An estimate of 4.0 exists from the third session; before it the fixed 5.3 applies.
    estimates = pd.DataFrame({"ewmac8_32": [4.0]}, index=pd.DatetimeIndex([idx[2]], name="session"))
    out = rescale(fset, estimates, cap=20.0, fallback={"ewmac8_32": 5.3})
    expected = np.array([[5.3, -5.3], [10.6, -10.6], [12.0, -12.0], [16.0, -32.0]])  # raw x (5.3, 5.3, 4, 4)
    np.testing.assert_allclose(out.scaled.to_numpy(), expected)
    np.testing.assert_allclose(out.capped.to_numpy(), np.clip(expected, -20, 20))


def test_rescale_without_fallback_leaves_forecasts_before_the_first_estimate_missing():
    fset = _fset()
    estimates = pd.DataFrame({"ewmac8_32": [4.0]}, index=pd.DatetimeIndex([fset.raw.index[2]], name="session"))
    out = rescale(fset, estimates, cap=20.0)
    assert out.capped.iloc[:2].isna().all().all() and out.capped.iloc[2:].notna().all().all()


def test_rescale_names_a_rule_without_any_scalar():
    with pytest.raises(ForecastError, match="ewmac8_32"):
        rescale(_fset(), pd.DataFrame(), cap=20.0)


def test_long_only_instruments_never_get_a_negative_forecast():
    capped = _fset().capped
    out = floor_long_only(capped, ["B"])
    assert (out.xs("B", axis=1, level="instrument") == 0).all().all()
    pd.testing.assert_frame_equal(out.xs("A", axis=1, level="instrument"), capped.xs("A", axis=1, level="instrument"))
