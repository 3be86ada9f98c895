"""The performance statistics against well-kept libraries, on real daily returns (the bundled sample's
S&P 500, Exxon Mobil and USMV closes): ``pipeline.research.metrics`` and the historical VaR/CVaR of
``pipeline.research.analytics`` against empyrical-reloaded, the skew against scipy, and the block
bootstrap of ``pipeline.research.validation`` against ``scipy.stats.bootstrap``, each to 1e-10.

Conventions of the comparison (empyrical's own defaults differ only where stated):

* risk-free rate / required return 0 (``risk_free=0``, ``required_return=0``);
* annualisation: ours defaults to Carver's 256 sessions, empyrical's ``period="daily"`` to 252;
  both are compared with an explicit ``annualization`` of 252 and of 256;
* standard deviations with ``ddof=1`` (empyrical ``nanstd(ddof=1)``);
* empyrical's ``annual_return`` is the compounded growth rate, our ``cagr``; our ``annual_return``
  is the arithmetic ``mean * ppy``, which empyrical does not report;
* VaR and CVaR are losses as positive fractions here, returns (negative) in empyrical.
"""

import empyrical  # empyrical-reloaded, pinned in the test extra
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from pipeline.adapters.sources.sample import SampleSource
from pipeline.research.analytics import var_cvar
from pipeline.research.metrics import PERIODS_PER_YEAR, performance_metrics
from pipeline.research.validation import (
    annualised_sharpe,
    block_bootstrap_ci,
    cagr,
    max_drawdown,
)

SYMBOLS = ("SPX", "XOM", "USMV")
TOL = {"rel": 1e-10, "abs": 1e-12}


@pytest.fixture(scope="module")
def returns() -> dict[str, pd.Series]:
    try:
        bars = SampleSource().fetch(list(SYMBOLS), pd.Timestamp("2000-01-01"), pd.Timestamp("2022-12-31"))
    except Exception as exc:  # noqa: BLE001 - the bundled sample is part of the package; skip if stripped
        pytest.skip(f"bundled sample data unavailable: {exc}")
    closes = bars.pivot(index="session", columns="instrument", values="close").sort_index()
    return {s: closes[s].pct_change(fill_method=None).dropna() for s in SYMBOLS}


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("ppy", [252, 256])
def test_performance_metrics_equal_empyrical(returns, symbol, ppy):
    r = returns[symbol]
    assert len(r) > 2000
    got = performance_metrics(r, periods_per_year=ppy)
    want = {
        "total_return": empyrical.cum_returns_final(r),
        "cagr": empyrical.cagr(r, annualization=ppy),
        "annual_vol": empyrical.annual_volatility(r, annualization=ppy),
        "sharpe": empyrical.sharpe_ratio(r, risk_free=0, annualization=ppy),
        "sortino": empyrical.sortino_ratio(r, required_return=0, annualization=ppy),
        "max_drawdown": empyrical.max_drawdown(r),
        "calmar": empyrical.calmar_ratio(r, annualization=ppy),
        "skew": scipy.stats.skew(r, bias=False),
    }
    for key, value in want.items():
        assert got[key] == pytest.approx(float(value), **TOL), key
    # empyrical's "annual_return" is the compounded rate (our cagr); ours is the arithmetic mean * ppy.
    assert got["cagr"] == pytest.approx(float(empyrical.annual_return(r, annualization=ppy)), **TOL)
    assert got["annual_return"] == pytest.approx(r.mean() * ppy, **TOL)


def test_the_default_annualisation_is_256_not_empyricals_252(returns):
    r = returns["SPX"]
    ours, theirs = performance_metrics(r)["sharpe"], empyrical.sharpe_ratio(r)  # both defaults
    assert PERIODS_PER_YEAR == 256
    assert ours / theirs == pytest.approx(np.sqrt(256 / 252), **TOL)
    assert ours == pytest.approx(0.3116, abs=1e-4)  # the S&P 500, 2000-2022, price only


def test_max_drawdown_of_the_sp500_is_the_2007_09_fall(returns):
    # A number to recognise: the S&P 500 lost about 57 % from October 2007 to March 2009.
    assert performance_metrics(returns["SPX"])["max_drawdown"] == pytest.approx(-0.5678, abs=1e-4)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_historical_var_and_cvar_equal_empyrical(returns, symbol):
    r = returns[symbol]
    table = var_cvar(r, levels=(0.95, 0.99))
    for level in (0.95, 0.99):
        cutoff = 1 - level
        # empyrical: VaR = numpy percentile (linear); CVaR = mean of the floor((n-1) * cutoff) + 1
        # lowest returns, the same set as r <= VaR quantile when no return ties the quantile.
        assert table.loc[level, "historical_var"] == pytest.approx(-empyrical.value_at_risk(r, cutoff), **TOL)
        assert table.loc[level, "historical_cvar"] == pytest.approx(
            -empyrical.conditional_value_at_risk(r, cutoff), **TOL)
    assert (table["historical_cvar"] > table["historical_var"]).all()


@pytest.mark.parametrize("statistic", [annualised_sharpe, max_drawdown, cagr], ids=lambda f: f.__name__)
def test_block_bootstrap_with_one_session_blocks_equals_scipy_bootstrap(returns, statistic):
    # scipy.stats.bootstrap resamples sessions independently, which destroys the serial dependence
    # of daily returns, so it cannot replace the block bootstrap. With blocks of one session the
    # circular ("moving") block bootstrap *is* the i.i.d. bootstrap and draws the same indices
    # from the same generator (rng.integers(0, n, (n_boot, n))), so the two intervals must agree.
    x = returns["SPX"].to_numpy()
    ours = block_bootstrap_ci(x, statistic, n_boot=2000, block=1, ci=0.9, seed=7, method="moving")
    ref = scipy.stats.bootstrap(
        (x,), lambda a, axis: statistic(np.moveaxis(a, axis, -1)), n_resamples=2000, confidence_level=0.9,
        method="percentile", vectorized=True, rng=np.random.default_rng(7),
    )
    assert ours.lower == pytest.approx(ref.confidence_interval.low, **TOL)
    assert ours.upper == pytest.approx(ref.confidence_interval.high, **TOL)
    assert ours.std_error == pytest.approx(ref.standard_error, **TOL)
    assert ours.lower < ours.estimate < ours.upper


def test_longer_blocks_widen_the_sharpe_interval_of_autocorrelated_returns(returns):
    # What the blocks are for: with serially dependent data (here the returns' 20-session rolling
    # mean, strongly autocorrelated) the i.i.d. interval is too narrow; 20-session blocks keep the
    # dependence and give a wider interval.
    smooth = returns["SPX"].rolling(20).mean().dropna().to_numpy()
    iid = block_bootstrap_ci(smooth, annualised_sharpe, n_boot=1000, block=1, seed=3, method="moving")
    blocks = block_bootstrap_ci(smooth, annualised_sharpe, n_boot=1000, block=20, seed=3, method="moving")
    assert (blocks.upper - blocks.lower) > 2 * (iid.upper - iid.lower)
