"""Parameter stability (Sharpe surface under +/-25% perturbations) and performance by vol regime."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.adapters.sources.sample import SAMPLE_PATH
from pipeline.research.parameter_stability import (
    ParameterError,
    TrendParameters,
    performance_by_vol_regime,
    sharpe_grid,
    sharpe_surface,
    trend_returns,
)
from pipeline.research.validation import PERIODS_PER_YEAR


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    bars = pd.read_parquet(SAMPLE_PATH)
    px = bars.pivot(index="session", columns="instrument", values="close")[["AAPL", "JPM", "XOM", "KO"]]
    px = px.loc["2005":]
    px.index.name = "session"
    return px


def test_scaling_moves_one_parameter_and_rounds_spans():
    base = TrendParameters()
    assert base.scaled("ewma_spans", 1.25).ewmac_fast == (10, 20, 40, 80)
    assert base.scaled("ewma_spans", 0.75).ewmac_fast == (6, 12, 24, 48)
    assert base.scaled("vol_span", 0.75).vol_span == 26  # round(26.25)
    assert base.scaled("buffer_fraction", 1.25).buffer_fraction == pytest.approx(0.125)
    moved = base.scaled("vol_target", 0.75)
    assert moved.vol_target == pytest.approx(0.1875) and moved.ewmac_fast == base.ewmac_fast


@pytest.mark.parametrize("name, factor", [("lookback", 1.25), ("vol_span", 0.0), ("vol_span", -1.0)])
def test_bad_perturbations_are_refused(name, factor):
    with pytest.raises(ParameterError):
        TrendParameters().scaled(name, factor)


def test_surface_base_is_the_independently_computed_sharpe_and_perturbations_act(prices):
    surface = sharpe_surface(prices, start="2006-01-01")
    r = trend_returns(prices).loc["2006-01-01":].to_numpy()
    expected = r.mean() / r.std(ddof=1) * np.sqrt(PERIODS_PER_YEAR)
    assert list(surface.index) == ["ewma_spans", "vol_span", "buffer_fraction", "vol_target"]
    np.testing.assert_allclose(surface[1.0].to_numpy(), expected, rtol=1e-12)
    # Faster or slower trend rules trade a different system: the Sharpe moves.
    assert abs(surface.loc["ewma_spans", 0.75] - expected) > 1e-3
    assert abs(surface.loc["ewma_spans", 1.25] - expected) > 1e-3
    # Without costs the vol target only rescales positions (whole-share rounding aside).
    assert surface.loc["vol_target"].sub(expected).abs().max() < 0.01


def test_grid_centre_is_the_base_run(prices):
    grid = sharpe_grid(prices, rows="buffer_fraction", columns="vol_target", factors=(0.75, 1.0), start="2006-01-01")
    base = sharpe_surface(prices, factors=(1.0,), parameters=("vol_span",), start="2006-01-01").iloc[0, 0]
    assert grid.shape == (2, 2) and grid.index.name == "buffer_fraction"
    assert grid.loc[1.0, 1.0] == pytest.approx(base, rel=1e-12)
    with pytest.raises(ParameterError):
        sharpe_grid(prices, rows="vol_span", columns="vol_span")


def test_regimes_use_the_previous_close_and_match_hand_computed_numbers():
    idx = pd.bdate_range("2024-01-01", periods=7, name="session")
    returns = pd.Series([0.5, 0.01, 0.03, -0.02, 0.04, 0.00, 0.02], index=idx)
    vol = pd.Series([0.10, 0.12, 0.30, 0.11, 0.35, 0.13, 0.90], index=idx)  # the regime of t is vol at t-1
    table = performance_by_vol_regime(returns, vol, labels=("calm", "volatile"))
    # Known vol for sessions 2..7: 0.10, 0.12, 0.30, 0.11, 0.35, 0.13; median 0.125 ->
    # calm: sessions 2, 3, 5; volatile: 4, 6, 7 (session 1 has no previous close; its 0.5 is unused).
    calm = np.array([0.01, 0.03, 0.04])
    volatile = np.array([-0.02, 0.00, 0.02])
    assert table.loc["calm", "sessions"] == 3 and table.loc["volatile", "sessions"] == 3
    assert table.loc["calm", "annual_return"] == pytest.approx(calm.mean() * PERIODS_PER_YEAR)
    assert table.loc["volatile", "annual_vol"] == pytest.approx(volatile.std(ddof=1) * np.sqrt(PERIODS_PER_YEAR))
    assert table.loc["calm", "sharpe"] == pytest.approx(calm.mean() / calm.std(ddof=1) * np.sqrt(PERIODS_PER_YEAR))
    assert (table.loc["calm", "vol_from"], table.loc["volatile", "vol_to"]) == (0.10, 0.35)
    with pytest.raises(ValueError):
        performance_by_vol_regime(returns, vol, labels=("only",))
