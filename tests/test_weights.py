"""Specification of pipeline.portfolio.instrument_weights: vol-normalised returns, ERC weights, risk contributions, IDM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.portfolio.instrument_weights import (
    InstrumentWeights,
    WeightsError,
    erc_weights,
    estimate_instrument_weights,
    idm,
    month_end_sessions,
    risk_contributions,
    weights_on_sessions,
)
from pipeline.signals.volatility import VolatilityError, vol_normalised_returns
from tests.conftest import SHARED_DATA, require_shared_data

STOCKS = SHARED_DATA / "stocks" / "sp500_5yr_2013_2018_all505.parquet"


def _cov(values, names=None) -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    names = names or [f"I{i}" for i in range(len(values))]
    return pd.DataFrame(values, index=names, columns=names)


def _rc_numpy(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Independent risk contributions: w_i (Σw)_i / w'Σw."""
    return w * (cov @ w) / (w @ cov @ w)


def _factor_returns(n_sessions: int, n_instruments: int, seed: int) -> pd.DataFrame:
    """Unit-vol-ish returns with two common factors, so correlations are positive and mixed."""
    rng = np.random.default_rng(seed)
    loadings = rng.uniform(0.0, 0.8, size=(2, n_instruments))
    x = rng.normal(size=(n_sessions, 2)) @ loadings + rng.normal(size=(n_sessions, n_instruments))
    index = pd.bdate_range("2000-01-03", periods=n_sessions, name="session")
    return pd.DataFrame(x, index=index, columns=[f"I{i}" for i in range(n_instruments)])


# ----------------------------------------------------------------------------------- returns


def test_vol_normalised_returns_divide_price_change_by_previous_session_vol():
    index = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"], name="session")
    prices = pd.DataFrame({"A": [100.0, 102.0, 101.0]}, index=index)
    vol = pd.DataFrame({"A": [2.0, 4.0, 1.0]}, index=index)
    out = vol_normalised_returns(prices, vol)
    # By hand: (102-100)/2 = 1; (101-102)/4 = -0.25 (the vol of the previous session, not today's 1).
    np.testing.assert_allclose(out["A"].to_numpy(), [np.nan, 1.0, -0.25])


def test_vol_normalised_returns_are_nan_where_previous_vol_is_zero_or_missing():
    index = pd.bdate_range("2024-01-02", periods=4, name="session")
    prices = pd.DataFrame({"A": [100.0, 101.0, 102.0, 103.0]}, index=index)
    vol = pd.DataFrame({"A": [0.0, np.nan, 2.0, 2.0]}, index=index)
    out = vol_normalised_returns(prices, vol)
    np.testing.assert_allclose(out["A"].to_numpy(), [np.nan, np.nan, np.nan, 0.5])


def test_vol_normalised_returns_for_a_session_ignore_later_data():
    index = pd.bdate_range("2024-01-02", periods=30, name="session")
    rng = np.random.default_rng(0)
    prices = pd.DataFrame(
        {"A": 100 + rng.normal(size=30).cumsum(), "B": 50 + rng.normal(size=30).cumsum()}, index=index
    )
    vol = prices.diff().abs().rolling(5, min_periods=1).mean()
    base = vol_normalised_returns(prices, vol)
    d = index[19]
    prices2, vol2 = prices.copy(), vol.copy()
    prices2.loc[prices2.index > d] *= 3.0
    vol2.loc[vol2.index > d] = 0.01
    pd.testing.assert_frame_equal(vol_normalised_returns(prices2, vol2).loc[:d], base.loc[:d])


def test_vol_normalised_returns_reject_vol_missing_an_instrument():
    index = pd.bdate_range("2024-01-02", periods=3, name="session")
    prices = pd.DataFrame({"A": [1.0, 2.0, 3.0], "B": [1.0, 2.0, 3.0]}, index=index)
    with pytest.raises(VolatilityError, match="B"):  # moved with the function to signals.volatility
        vol_normalised_returns(prices, prices[["A"]])


# ----------------------------------------------------------------------------------- ERC


@st.composite
def spd_covariances(draw):
    n = draw(st.integers(2, 12))
    a = draw(arrays(np.float64, (n, n + 2), elements=st.floats(-1, 1, allow_nan=False)))
    vols = draw(arrays(np.float64, n, elements=st.floats(0.01, 100.0, allow_nan=False)))
    # Ridge keeps the condition number bounded; vols spread the scale over four orders of magnitude.
    corr_like = a @ a.T + 0.05 * np.eye(n)
    d = np.sqrt(np.diag(corr_like))
    corr = corr_like / np.outer(d, d)
    return corr * np.outer(vols, vols)


@settings(max_examples=60, deadline=None)
@given(spd_covariances())
def test_erc_weights_give_equal_risk_contributions_on_random_spd_matrices(cov):
    w = erc_weights(_cov(cov))
    n = len(cov)
    assert np.all(w > 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(_rc_numpy(w.to_numpy(), cov), 1.0 / n, rtol=0, atol=1e-6)


def test_erc_weights_of_a_diagonal_matrix_are_inverse_vol():
    sigma = np.array([0.1, 0.2, 0.4])
    w = erc_weights(_cov(np.diag(sigma**2)))
    # Closed form w ∝ 1/σ: (10, 5, 2.5) / 17.5.
    np.testing.assert_allclose(w.to_numpy(), [10 / 17.5, 5 / 17.5, 2.5 / 17.5], atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.floats(-0.95, 0.95),
    st.floats(0.05, 5.0),
    st.floats(0.05, 5.0),
)
def test_erc_weights_of_two_assets_are_inverse_vol_whatever_the_correlation(rho, s1, s2):
    cov = [[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]]
    w = erc_weights(_cov(cov))
    # With two assets RC_1 = RC_2 reduces to w1 σ1 = w2 σ2 for any ρ.
    np.testing.assert_allclose(w.to_numpy(), [s2 / (s1 + s2), s1 / (s1 + s2)], atol=1e-8)


def test_erc_weights_of_equal_vol_equal_correlation_are_equal():
    cov = np.full((5, 5), 0.3) + 0.7 * np.eye(5)
    np.testing.assert_allclose(erc_weights(_cov(cov)).to_numpy(), 0.2, atol=1e-9)


def test_erc_weights_keep_the_instrument_labels():
    w = erc_weights(_cov(np.diag([1.0, 4.0]), names=["ES", "ZN"]))
    assert list(w.index) == ["ES", "ZN"]
    assert w["ES"] == pytest.approx(2 / 3, abs=1e-9)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[1.0, np.nan], [np.nan, 1.0]], "NaN"),
        ([[1.0, 2.0], [2.0, 1.0]], "positive semi-definite"),  # eigenvalues 3 and -1
        ([[0.0, 0.0], [0.0, 1.0]], "non-positive variance"),
        ([[1.0, 0.2], [0.5, 1.0]], "not symmetric"),
    ],
)
def test_erc_weights_reject_bad_matrices(matrix, message):
    with pytest.raises(WeightsError, match=message):
        erc_weights(_cov(matrix))


def test_erc_weights_reject_a_matrix_with_a_zero_risk_long_portfolio():
    # Perfectly negatively correlated: (0.5, 0.5) has zero risk, so no ERC portfolio exists.
    with pytest.raises(WeightsError, match="did not converge"):
        erc_weights(_cov([[1.0, -1.0], [-1.0, 1.0]]))


def test_risk_contributions_match_hand_computation():
    cov = _cov([[0.04, 0.01], [0.01, 0.01]])
    rc = risk_contributions(pd.Series([0.5, 0.5], index=cov.index), cov)
    # Σw = (0.025, 0.01); w∘Σw = (0.0125, 0.005); w'Σw = 0.0175 → (0.0125, 0.005) / 0.0175.
    np.testing.assert_allclose(rc.to_numpy(), [0.0125 / 0.0175, 0.005 / 0.0175], atol=1e-12)
    assert rc.sum() == pytest.approx(1.0)


def test_risk_contributions_reject_an_instrument_missing_from_the_covariance():
    with pytest.raises(WeightsError, match="ZZ"):
        risk_contributions(pd.Series([0.5, 0.5], index=["I0", "ZZ"]), _cov(np.eye(2)))


# ----------------------------------------------------------------------------------- IDM


def test_idm_equals_inverse_sqrt_of_the_quadratic_form():
    corr = _cov([[1.0, 0.3, 0.1], [0.3, 1.0, 0.5], [0.1, 0.5, 1.0]])
    w = pd.Series([0.5, 0.3, 0.2], index=corr.index)
    # By hand: w'Hw = 0.25 + 0.09 + 0.04 + 2(0.5·0.3·0.3 + 0.5·0.2·0.1 + 0.3·0.2·0.5) = 0.55.
    assert idm(w, corr) == pytest.approx(1.0 / np.sqrt(0.55), abs=1e-9)
    w_np, h = w.to_numpy(), corr.to_numpy()
    assert idm(w, corr) == pytest.approx(1.0 / np.sqrt(w_np @ h @ w_np), abs=1e-12)


def test_idm_of_two_instruments_half_half_with_correlation_half_is_1_1547():
    corr = _cov([[1.0, 0.5], [0.5, 1.0]])
    # 1/sqrt(0.25 + 0.25 + 2·0.25·0.5) = 1/sqrt(0.75); carver.md §3.3 table: N=2, ρ=0.5 → 1.15.
    assert idm(pd.Series([0.5, 0.5], index=corr.index), corr) == pytest.approx(1.1547005383792517, abs=1e-12)


def test_idm_floors_negative_correlations_at_zero():
    corr = _cov([[1.0, -0.5], [-0.5, 1.0]])
    # Floored to ρ = 0: 1/sqrt(0.5) = sqrt(2) (unfloored it would be 1/sqrt(0.25) = 2).
    assert idm(pd.Series([0.5, 0.5], index=corr.index), corr) == pytest.approx(np.sqrt(2.0), abs=1e-12)


def test_idm_is_capped():
    corr = _cov(np.eye(10))
    # Uncorrelated, equal weights: sqrt(10) = 3.16 > cap (carver.md §3.3 table: N=10, ρ=0 → 2.50).
    assert idm(pd.Series(0.1, index=corr.index), corr) == 2.5
    assert idm(pd.Series(0.1, index=corr.index), corr, cap=3.0) == 3.0


def test_idm_ignores_zero_weight_instruments_with_nan_correlation():
    corr = _cov([[1.0, 0.5, np.nan], [0.5, 1.0, np.nan], [np.nan, np.nan, 1.0]])
    w = pd.Series([0.5, 0.5, 0.0], index=corr.index)
    assert idm(w, corr) == pytest.approx(1.1547005383792517, abs=1e-12)


def test_idm_rejects_negative_weights():
    corr = _cov(np.eye(2))
    with pytest.raises(WeightsError, match="non-negative"):
        idm(pd.Series([1.5, -0.5], index=corr.index), corr)


# ----------------------------------------------------------------------------------- month ends


def test_month_end_sessions_are_the_last_session_of_each_month_in_the_index():
    # 2024-03-29 was Good Friday (NYSE closed), so March's last session is the 28th.
    index = pd.DatetimeIndex(
        ["2024-02-28", "2024-02-29", "2024-03-27", "2024-03-28", "2024-04-01", "2024-04-02"], name="session"
    )
    expected = pd.DatetimeIndex(["2024-02-29", "2024-03-28", "2024-04-02"], name="session")
    pd.testing.assert_index_equal(month_end_sessions(index), expected)


def test_estimates_are_made_at_month_ends_and_equalise_risk_contributions():
    returns = _factor_returns(800, 6, seed=1)
    est = estimate_instrument_weights(returns, lookback_sessions=500, min_sessions=126, idm_cap=2.5)
    # Every month end after the first 126 sessions: the first is the month end of session 126.
    ends = month_end_sessions(returns.index)
    assert list(est.weights.index) == [d for d in ends if returns.index.get_loc(d) >= 125]
    np.testing.assert_allclose(est.weights.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(est.risk_contributions.to_numpy(), 1 / 6, atol=1e-6)
    assert est.idm.between(1.0, 2.5).all()


def test_estimate_at_a_month_end_equals_erc_on_the_pairwise_window_computed_by_pandas():
    returns = _factor_returns(700, 4, seed=2)
    returns.iloc[:400, 3] = np.nan  # a late listing: its correlations use fewer sessions
    returns.iloc[100:110, 0] = np.nan  # a data gap
    lookback, min_sessions = 500, 126
    est = estimate_instrument_weights(returns, lookback, min_sessions, 2.5)
    when = est.weights.index[-1]
    window = returns.loc[:when].iloc[-lookback:]
    # Independent: pandas' pairwise-complete correlation and each instrument's own-window std.
    corr = window.corr()
    cov = corr * np.outer(window.std(), window.std())
    expected = erc_weights(cov)
    np.testing.assert_allclose(est.weights.loc[when].to_numpy(), expected.to_numpy(), atol=1e-7)
    np.testing.assert_allclose(est.correlation.to_numpy(), corr.to_numpy(), atol=1e-10)
    assert est.idm.loc[when] == pytest.approx(idm(expected, corr), abs=1e-9)


def test_instruments_with_too_few_sessions_get_zero_weight():
    returns = _factor_returns(600, 3, seed=3)
    returns.iloc[:450, 2] = np.nan  # I2 has returns from session 450 on
    est = estimate_instrument_weights(returns, lookback_sessions=500, min_sessions=100, idm_cap=2.5)
    counts = returns["I2"].notna().cumsum()
    eligible = counts.loc[est.weights.index] >= 100
    assert (est.weights.loc[~eligible, "I2"] == 0).all()
    assert (est.risk_contributions.loc[~eligible, "I2"] == 0).all()
    assert (est.weights.loc[eligible, "I2"] > 0).all() and eligible.any() and (~eligible).any()
    # Among the two eligible instruments, each carries half of the risk.
    np.testing.assert_allclose(est.risk_contributions.loc[~eligible, ["I0", "I1"]], 0.5, atol=1e-6)


def test_single_eligible_instrument_gets_weight_one_and_idm_one():
    returns = _factor_returns(300, 2, seed=4)
    returns["I1"] = np.nan
    est = estimate_instrument_weights(returns, 250, 126, 2.5)
    assert (est.weights["I0"] == 1.0).all() and (est.weights["I1"] == 0.0).all()
    assert (est.idm == 1.0).all()


def test_non_positive_definite_pairwise_correlation_is_repaired():
    # A overlaps B (first half) and C (second half) with correlation ~0.9 each; B and C never
    # overlap, so their correlation is set to 0 and [[1,.9,.9],[.9,1,0],[.9,0,1]] has a negative
    # eigenvalue (1 - 0.9·√2): the estimate must still be a valid ERC on a PD matrix.
    rng = np.random.default_rng(5)
    n = 400
    a = rng.normal(size=n)
    index = pd.bdate_range("2010-01-04", periods=n, name="session")
    noise = np.sqrt(1 - 0.9**2) * rng.normal(size=(n, 2))
    returns = pd.DataFrame({"A": a, "B": 0.9 * a + noise[:, 0], "C": 0.9 * a + noise[:, 1]}, index=index)
    returns.iloc[200:, 1] = np.nan
    returns.iloc[:200, 2] = np.nan
    est = estimate_instrument_weights(returns, lookback_sessions=400, min_sessions=150, idm_cap=2.5)
    raw = returns.corr().fillna(0.0).to_numpy()
    assert np.linalg.eigvalsh(raw)[0] < 0  # the premise: pairwise correlations are not PSD
    assert np.linalg.eigvalsh(est.correlation.to_numpy())[0] > 0
    np.testing.assert_allclose(np.diag(est.correlation.to_numpy()), 1.0)
    w = est.weights.iloc[-1].to_numpy()
    np.testing.assert_allclose(_rc_numpy(w, est.covariance.to_numpy()), 1 / 3, atol=1e-6)


def test_estimates_up_to_a_date_ignore_later_data():
    returns = _factor_returns(900, 5, seed=6)
    base = estimate_instrument_weights(returns, 500, 126, 2.5)
    d = returns.index[600]
    changed = returns.copy()
    changed.loc[changed.index > d] = changed.loc[changed.index > d] * -4.0 + 1.0
    after = estimate_instrument_weights(changed, 500, 126, 2.5)
    truncated = estimate_instrument_weights(returns.loc[:d], 500, 126, 2.5)
    before = base.weights.index[base.weights.index <= d]
    assert len(before) > 3
    pd.testing.assert_frame_equal(after.weights.loc[before], base.weights.loc[before])
    pd.testing.assert_series_equal(after.idm.loc[before], base.idm.loc[before])
    # The daily weights in force up to d are the same whether the future exists or not.
    sessions = returns.index[returns.index <= d]
    pd.testing.assert_frame_equal(truncated.daily(sessions)[0], base.daily(sessions)[0])
    pd.testing.assert_series_equal(truncated.daily(sessions)[1], base.daily(sessions)[1])


# ----------------------------------------------------------------------------------- daily mapping


def test_an_estimate_takes_effect_on_the_session_after_it_was_made():
    est_dates = pd.DatetimeIndex(["2024-01-31", "2024-02-29"], name="estimated_at")
    weights = pd.DataFrame({"A": [0.6, 0.3], "B": [0.4, 0.7]}, index=est_dates)
    dm = pd.Series([1.1, 1.2], index=est_dates)
    days = ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-29", "2024-03-01"]
    sessions = pd.DatetimeIndex(days).astype("datetime64[us]")  # another resolution than the estimates
    daily_w, daily_idm = weights_on_sessions(weights, dm, sessions)
    np.testing.assert_allclose(daily_w["A"].to_numpy(), [np.nan, np.nan, 0.6, 0.6, 0.3])
    np.testing.assert_allclose(daily_idm.to_numpy(), [np.nan, np.nan, 1.1, 1.1, 1.2])
    assert daily_w.index.name == "session" and daily_w.columns.name == "instrument"


def test_daily_method_maps_estimates_with_a_one_session_lag():
    returns = _factor_returns(400, 3, seed=7)
    est = estimate_instrument_weights(returns, 300, 126, 2.5)
    daily_w, daily_idm = est.daily(returns.index)
    first = est.weights.index[0]
    assert daily_w.loc[:first].isna().all().all()
    nxt = returns.index[returns.index.get_loc(first) + 1]
    pd.testing.assert_series_equal(daily_w.loc[nxt], est.weights.loc[first], check_names=False)
    assert daily_idm.loc[nxt] == est.idm.loc[first]


def test_long_form_round_trips():
    returns = _factor_returns(400, 3, seed=8)
    returns.iloc[:250, 1] = np.nan
    est = estimate_instrument_weights(returns, 300, 126, 2.5)
    long = est.to_long()
    assert list(long.columns) == ["estimated_at", "instrument", "weight", "risk_contribution"]
    assert len(long) == est.weights.size
    back = InstrumentWeights.from_long(long, est.idm)
    pd.testing.assert_frame_equal(back.weights, est.weights)
    pd.testing.assert_frame_equal(back.risk_contributions, est.risk_contributions)
    pd.testing.assert_series_equal(back.idm, est.idm)


def test_estimate_rejects_a_window_shorter_than_min_sessions():
    with pytest.raises(WeightsError, match="lookback_sessions"):
        estimate_instrument_weights(_factor_returns(100, 2, seed=9), lookback_sessions=50, min_sessions=60)


# ----------------------------------------------------------------------------------- real data


def test_real_stocks_give_equal_risk_contributions_every_month_and_idm_in_range():
    require_shared_data(STOCKS)
    names = ["AAPL", "MSFT", "JPM", "BAC", "XOM", "CVX", "JNJ", "PFE", "KO", "WMT"]
    bars = pd.read_parquet(STOCKS, columns=["date", "close", "Name"])
    bars = bars[bars["Name"].isin(names)]
    prices = bars.pivot(index="date", columns="Name", values="close")[names]
    prices.index = pd.DatetimeIndex(pd.to_datetime(prices.index), name="session")
    # Carver-style EWMA std of daily price changes, span 35 (carver.md §2.1), computed here.
    vol = prices.diff().ewm(span=35, min_periods=10).std()
    returns = vol_normalised_returns(prices, vol)
    est = estimate_instrument_weights(returns, lookback_sessions=500, min_sessions=126, idm_cap=2.5)
    assert len(est.weights) >= 50  # five years of month ends, less the first six months
    np.testing.assert_allclose(est.risk_contributions.to_numpy(), 1 / len(names), atol=1e-6)
    # Independent check of the latest month with numpy.
    np.testing.assert_allclose(
        _rc_numpy(est.weights.iloc[-1].to_numpy(), est.covariance.to_numpy()), 1 / len(names), atol=1e-6
    )
    assert est.idm.between(1.0, 2.5).all()
    # Positively correlated US large caps: diversification helps, but far from the 10-asset cap.
    assert 1.2 < est.idm.iloc[-1] < 2.5
