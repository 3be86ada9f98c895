"""Estimated forecast weights: rule families, handcrafting and a bootstrap (ST ch. 4 and 8, carver.md §2.6).

Three ways to weight the rule variations of the combined forecast, besides fixed weights
(:func:`pipeline.signals.combine.forecast_weights`):

* :func:`family_weights`: Carver's simple handcrafting (ST ch. 8): equal weights across rule
  families (``ewmac``, ``breakout``, ``carry``, ...), equal within a family. Needs no data.
* :func:`handcraft_weights`: correlation-based handcrafting in the spirit of pysystemtrade's
  ``sysquant/optimisation/weights`` handcrafting with ``equalise_SR`` and ``equalise_vols``: the
  rules are split into two clusters by correlation, again and again; at each split the two
  clusters share the weight in inverse proportion to their variance (the max-Sharpe split of two
  blocks of equal Sharpe ratio), so near-duplicate rules share one slot.
* :func:`bootstrap_weights`: pysystemtrade's ``bootstrap`` optimisation: resample blocks of the
  rules' daily returns, find the long-only max-Sharpe weights of each sample, average them. The
  returns are taken net of each rule's SR cost, so an expensive rule must earn its place.

:func:`estimate_forecast_weights` re-estimates at each year end on all data up to it (expanding,
no look-ahead) and :func:`combine_with_weight_history` applies each estimate from the next session,
either in one step or smoothed through time as pysystemtrade does (:func:`smoothed_weights`, an
EWMA of span 125 sessions by default in the config).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pipeline.signals.combine import (
    combine_forecasts,
    combine_forecasts_daily,
    estimate_fdm,
)
from pipeline.signals.volatility import vol_normalised_returns

#: Carver annualises with sqrt(256) = 16 (carver.md §2.0).
ROOT_BDAYS_IN_YEAR = 16.0
#: Forecasts are scaled to an average absolute value of 10 (ST ch. 7).
AVERAGE_ABS_FORECAST = 10.0
METHODS = ("equal", "family", "handcraft", "bootstrap")


class ForecastWeightsError(ValueError):
    """Bad input to forecast-weight estimation; the message names the input and what to do."""


def rule_family(rule: str) -> str:
    """Family of a rule variation: its name without the trailing parameters.

    ``ewmac16_64`` -> ``ewmac``, ``breakout40`` -> ``breakout``, ``carry`` -> ``carry``.
    """
    match = re.match(r"[A-Za-z_]*[A-Za-z]", rule)
    return match.group(0) if match else rule


def _named(weights: pd.Series) -> pd.Series:
    weights = weights.astype(float)
    weights.index.name = "rule"
    weights.name = "weight"
    return weights


def family_weights(rules: list[str]) -> pd.Series:
    """Equal weights across rule families, equal within each family (ST ch. 8 handcrafting).

    Parameters
    ----------
    rules : list of str
        Rule variation names, unique, non-empty (e.g. ``RulesConfig.rule_names``).

    Returns
    -------
    Series, index ``rule`` (order of ``rules``), name ``weight``
        Sums to 1. E.g. 4 EWMAC and 6 breakout variations: 1/8 each EWMAC, 1/12 each breakout.

    Raises
    ------
    ForecastWeightsError
        Empty or duplicated rule names.

    Notes
    -----
    Source: ST ch. 8 (group the variations of each rule, weight groups and members equally);
    AFTS ch. 9 (equal weights across trend speeds).
    """
    _check_rules(rules, "family_weights")
    families = pd.Series([rule_family(r) for r in rules], index=rules)
    per_family = 1.0 / families.nunique()
    return _named(per_family / families.map(families.value_counts()))


def handcraft_weights(corr: pd.DataFrame) -> pd.Series:
    """Correlation-based handcrafted weights of vol-equalised rules with equal Sharpe ratios.

    Recursive: cluster the rules into two groups (average-linkage hierarchical clustering on the
    distance ``sqrt((1 - rho) / 2)``), weight each group recursively (a group of one gets 1),
    then split the weight between the groups as ``1 / v_g`` where ``v_g = w_g' C_g w_g`` is the
    group's variance (unit-vol rules, so ``C_g`` is its correlation block).

    For equal Sharpe ratios ``1 / v_g`` is the max-Sharpe split between two uncorrelated groups
    (weights proportional to mean / variance, the means being equal), so three uncorrelated rules
    get 1/3 each, and two perfectly correlated rules plus an independent one get 1/4, 1/4, 1/2.

    Parameters
    ----------
    corr : DataFrame, index and columns ``rule`` (same order)
        Correlation matrix of the rules' returns (or forecasts), no NaN.

    Returns
    -------
    Series, index ``rule`` (order of ``corr``), name ``weight``
        Long-only weights summing to 1.

    Raises
    ------
    ForecastWeightsError
        ``corr`` not square with matching labels, or NaN in it.

    Notes
    -----
    Source: ST ch. 4 (handcrafting: group by correlation, equal weight within groups, weight
    groups by their risk); pysystemtrade ``sysquant/optimisation/weights.py`` / handcrafting
    (``equalise_SR: True``, ``equalise_vols: True``); the recursive bisection follows Lopez de
    Prado's hierarchical risk parity with Carver's tree built from correlations.
    """
    if not (isinstance(corr, pd.DataFrame) and corr.shape[0] == corr.shape[1] and corr.index.equals(corr.columns)):
        raise ForecastWeightsError("handcraft_weights: corr must be a square DataFrame with index == columns (rules)")
    c = corr.to_numpy(dtype=float)
    if np.isnan(c).any():
        raise ForecastWeightsError(
            f"handcraft_weights: correlation has NaN (rules {list(corr.index)}); estimate it on more data"
        )
    c = np.clip((c + c.T) / 2.0, -1.0, 1.0)
    np.fill_diagonal(c, 1.0)
    w = _handcraft(c, np.arange(len(c)))
    return _named(pd.Series(w, index=corr.index.copy()))


def _handcraft(c: np.ndarray, members: np.ndarray) -> np.ndarray:
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    n = len(members)
    if n == 1:
        return np.ones(1)
    block = c[np.ix_(members, members)]
    if n == 2:
        groups = [np.array([0]), np.array([1])]
    else:
        distance = np.sqrt(np.clip((1.0 - block) / 2.0, 0.0, None))
        np.fill_diagonal(distance, 0.0)
        link = hierarchy.linkage(squareform(distance, checks=False), method="average")
        labels = hierarchy.fcluster(link, t=2, criterion="maxclust")
        groups = [np.flatnonzero(labels == k) for k in np.unique(labels)]
        if len(groups) < 2:  # all identical: nothing to split on
            return np.full(n, 1.0 / n)
    out = np.zeros(n)
    inverse_var = []
    for g in groups:
        wg = _handcraft(c, members[g])
        inverse_var.append(1.0 / float(wg @ block[np.ix_(g, g)] @ wg))
        out[g] = wg
    shares = np.array(inverse_var) / sum(inverse_var)
    for g, share in zip(groups, shares):
        out[g] *= share
    return out


def rule_returns(capped: pd.DataFrame, prices: pd.DataFrame, vol: pd.DataFrame) -> pd.DataFrame:
    """Daily return of trading each rule, pooled across instruments (gross of costs).

    ``ret[d, rule] = mean_i (capped[d-1, rule, i] / 10) x (price[d, i] - price[d-1, i]) / vol[d-1, i]``:
    the P&L, in units of daily vol, of holding the position the rule's forecast on ``d-1`` asks
    for (forecast 10 = one unit of daily vol), averaged over the instruments that have both.

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts.
    prices, vol : DataFrame, index ``session``, columns instruments
        Close prices and daily vol in price points (:func:`pipeline.signals.volatility.robust_vol`),
        covering the instruments of ``capped``.

    Returns
    -------
    DataFrame, index ``session`` (of ``capped``), columns ``rule``
        Daily returns in vol units (a rule that is always at forecast 10 on a market rising by
        one vol a day earns 1.0 a day). NaN where no instrument contributes.

    Raises
    ------
    ForecastWeightsError
        ``capped`` without a (rule, instrument) column MultiIndex, or instruments missing from
        ``prices``.

    Notes
    -----
    pysystemtrade pools gross forecast returns across instruments for weight estimation
    (``pool_gross_returns: True``, carver.md §2.6); returns are vol-normalised as in
    :func:`pipeline.signals.volatility.vol_normalised_returns`.
    """
    if not (isinstance(capped.columns, pd.MultiIndex) and capped.columns.nlevels == 2):
        raise ForecastWeightsError("rule_returns: capped needs a (rule, instrument) column MultiIndex")
    instruments = capped.columns.get_level_values(1)
    missing = sorted(set(instruments) - set(prices.columns))
    if missing:
        raise ForecastWeightsError(f"rule_returns: no prices for instruments {missing}")
    cols = sorted(set(instruments))
    unit = vol_normalised_returns(prices[cols], vol[cols]).reindex(index=capped.index)
    position = capped.shift(1) / AVERAGE_ABS_FORECAST
    pnl = position.to_numpy(dtype=float) * unit.reindex(columns=instruments).to_numpy(dtype=float)
    frame = pd.DataFrame(pnl, index=capped.index, columns=capped.columns)
    out = frame.T.groupby(level=0, sort=False).mean().T  # mean skips NaN
    out.columns.name = "rule"
    return out


def bootstrap_weights(
    returns: pd.DataFrame,
    sr_costs: pd.Series | None = None,
    draws: int = 100,
    block: int = 64,
    seed: int = 0,
) -> pd.Series:
    """Long-only max-Sharpe weights averaged over block-bootstrap samples of the rules' returns.

    The returns are first taken net of costs: a rule with annual SR cost ``c`` loses
    ``c x sd / 16`` of daily mean return (``sd`` its daily standard deviation), i.e. exactly ``c``
    of annual Sharpe ratio. Each draw samples ``ceil(T / block)`` blocks of ``block`` consecutive
    sessions (with replacement, keeping the cross-correlation and some autocorrelation), estimates
    the mean vector and covariance, and solves ``max w'mu / sqrt(w' S w)`` with ``w >= 0``,
    ``sum w = 1``; a draw where no rule has a positive mean gives equal weights. The weights of
    all draws are averaged, which shrinks the noisy optimum towards diversification.

    Parameters
    ----------
    returns : DataFrame, index ``session``, columns ``rule``
        Daily rule returns (:func:`rule_returns`); only sessions where every rule has a return
        are used.
    sr_costs : Series, index rule, optional
        Annual SR cost of each rule (e.g. the mean over instruments of
        :func:`pipeline.signals.costs.annual_sr_cost`); missing = 0.
    draws : int
        Number of bootstrap samples (>= 1).
    block : int
        Block length in sessions (>= 1).
    seed : int
        Seed of the random generator (the result is reproducible).

    Returns
    -------
    Series, index ``rule`` (order of ``returns``), name ``weight``
        Long-only weights summing to 1.

    Raises
    ------
    ForecastWeightsError
        Fewer than ``block`` (or 2) complete sessions, a rule with zero variance, or bad parameters.

    Notes
    -----
    Source: pysystemtrade ``sysquant/optimisation`` ``bootstrap`` method (``monte_runs``,
    ``bootstrap_length``; average of optimised weights over resamples), net of SR costs as pst's
    ``forecast_weight_estimate`` does with ``pool_gross_returns`` and ``cost_multiplier``
    (carver.md §2.6); ST ch. 4 on bootstrapping.
    """
    if draws < 1 or block < 1:
        raise ForecastWeightsError(f"bootstrap_weights: need draws >= 1 and block >= 1, got {draws}, {block}")
    data = returns.dropna(how="any")
    t, n = data.shape
    if t < max(block, 2):
        raise ForecastWeightsError(
            f"bootstrap_weights: {t} sessions where every rule has a return; need at least {max(block, 2)}"
        )
    x = data.to_numpy(dtype=float)
    sd = x.std(axis=0, ddof=1)
    if not np.all(sd > 0):
        flat = list(data.columns[~(sd > 0)])
        raise ForecastWeightsError(f"bootstrap_weights: rules {flat} have constant returns")
    if sr_costs is not None:
        cost = sr_costs.reindex(data.columns).fillna(0.0).to_numpy(dtype=float)
        x = x - cost * sd / ROOT_BDAYS_IN_YEAR
    rng = np.random.default_rng(seed)
    n_blocks = -(-t // block)
    starts = rng.integers(0, t - block + 1, size=(draws, n_blocks))
    offsets = np.arange(block)
    total = np.zeros(n)
    for k in range(draws):  # one optimisation per draw (draws, not rows)
        rows = (starts[k][:, None] + offsets).ravel()[:t]
        sample = x[rows]
        total += _max_sharpe(sample.mean(axis=0), np.cov(sample, rowvar=False))
    return _named(pd.Series(total / total.sum(), index=data.columns.copy()))


def _max_sharpe(mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Long-only max-Sharpe weights: ``min y'Sy`` s.t. ``mu'y = 1``, ``y >= 0``; ``w = y / sum y``."""
    from scipy import optimize

    n = len(mu)
    if not (mu > 0).any():
        return np.full(n, 1.0 / n)
    cov = cov + np.eye(n) * 1e-12 * np.trace(cov)
    y0 = np.where(mu > 0, 1.0, 0.0)
    y0 = y0 / float(mu @ y0)
    res = optimize.minimize(
        lambda y: y @ cov @ y,
        y0,
        jac=lambda y: 2.0 * cov @ y,
        bounds=[(0.0, None)] * n,
        constraints=[{"type": "eq", "fun": lambda y: mu @ y - 1.0, "jac": lambda y: mu}],
        method="SLSQP",
        options={"maxiter": 200, "ftol": 1e-12},
    )
    y = np.clip(res.x, 0.0, None)
    return y / y.sum() if res.success and y.sum() > 0 else np.full(n, 1.0 / n)


def year_end_sessions(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Last session of each calendar year that is followed by a session of a later year.

    The current (unfinished) year has no year end yet: which session is its last is not known
    until the next one exists.
    """
    years = np.asarray(index.year)
    last = np.r_[years[1:] != years[:-1], False]
    return index[last]


def estimate_forecast_weights(
    capped: pd.DataFrame,
    prices: pd.DataFrame,
    vol: pd.DataFrame,
    method: str,
    min_sessions: int = 512,
    sr_costs: pd.DataFrame | None = None,
    draws: int = 100,
    block: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """Forecast weights re-estimated at each year end on all data up to it (expanding window).

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts (after any speed-limit exclusion).
    prices, vol : DataFrame, index ``session``, columns instruments
        Close prices and daily price vol, for :func:`rule_returns`.
    method : {"equal", "family", "handcraft", "bootstrap"}
        ``handcraft``: :func:`handcraft_weights` of the returns' correlation; ``bootstrap``:
        :func:`bootstrap_weights`. ``equal`` and ``family`` need no data (one row).
    min_sessions : int
        Sessions with a return for every rule needed before the first estimate; until then the
        fallback is :func:`family_weights` (handcraft) or equal weights (bootstrap).
    sr_costs : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``, optional
        Annual SR cost (:func:`pipeline.signals.costs.annual_sr_cost`); the bootstrap nets each rule's
        returns by the mean over instruments of its cost at the year end.
    draws, block, seed
        Bootstrap parameters (:func:`bootstrap_weights`).

    Returns
    -------
    DataFrame, index ``estimated_at`` (sessions), columns ``rule``
        One row per estimate; the first row, dated at the first session, is the fallback.
        A row applies from the session after its date (:func:`combine_with_weight_history`).

    Raises
    ------
    ForecastWeightsError
        Unknown method, or errors of the estimators.
    """
    if method not in METHODS:
        raise ForecastWeightsError(f"estimate_forecast_weights: method must be one of {METHODS}, got {method!r}")
    rules = list(dict.fromkeys(capped.columns.get_level_values(0)))
    _check_rules(rules, "estimate_forecast_weights")
    first = capped.index[:1]
    fallback = family_weights(rules) if method in ("family", "handcraft") else pd.Series(1.0 / len(rules), index=rules)
    rows = {first[0]: fallback} if len(first) else {}
    if method in ("bootstrap", "handcraft"):
        returns = rule_returns(capped, prices, vol)
        complete = returns.notna().all(axis=1).cumsum()
        for end in year_end_sessions(capped.index):
            if complete.loc[end] < min_sessions:
                continue
            history = returns.loc[:end]
            if method == "handcraft":
                rows[end] = handcraft_weights(history.dropna(how="any").corr())
            else:
                cost = None
                if sr_costs is not None:
                    cost = sr_costs.loc[:end].ffill().iloc[-1].groupby(level=0).mean()
                rows[end] = bootstrap_weights(history, cost, draws=draws, block=block, seed=seed)
    out = pd.DataFrame(rows).T.reindex(columns=rules)
    out.index = pd.DatetimeIndex(out.index, name="estimated_at")
    out.columns.name = "rule"
    return out


def smoothed_weights(weight_history: pd.DataFrame, sessions: pd.DatetimeIndex, span: int) -> pd.DataFrame:
    """Forecast weights on every session, smoothed through time as pysystemtrade does.

    The estimates are laid out as a step function (a row dated ``e`` in force from the session
    after ``e``; the first row also on its own session and before), then
    ``w_t = ewm(span).mean()`` over sessions (pandas, ``adjust=True``) and each row re-normalised
    to sum to 1. A new estimate therefore phases in over a few months instead of jumping in at
    once; constant weights are unchanged. No value depends on a later session.

    Parameters
    ----------
    weight_history : DataFrame, index ``estimated_at``, columns ``rule``
        :func:`estimate_forecast_weights` (NaN = weight 0).
    sessions : DatetimeIndex
        Ascending sessions to lay the weights on (e.g. the forecasts' index).
    span : int
        EWMA span in sessions, >= 1 (pst ``forecast_weight_ewma_span: 125``).

    Returns
    -------
    DataFrame, index ``session``, columns ``rule``
        Weights >= 0 summing to 1 on every session.

    Raises
    ------
    ForecastWeightsError
        Empty history, ``span < 1`` or a history row without a positive weight.

    Notes
    -----
    Source: pst ``systems/forecast_combine.py`` (weights resampled to business days, then
    ``ewm(span=forecast_weight_ewma_span)``, then normalised), carver.md §2.6. pst smooths the
    weights after fixing them to each instrument's forecast availability; here availability is
    handled per session in the combination (:func:`pipeline.signals.combine.combine_forecasts_daily`).
    """
    if weight_history.empty:
        raise ForecastWeightsError("smoothed_weights: the weight history is empty")
    if not (int(span) == span and span >= 1):
        raise ForecastWeightsError(f"smoothed_weights: span must be an integer >= 1, got {span}")
    steps = weight_history.fillna(0.0).to_numpy(dtype=float)
    if (steps.sum(axis=1) <= 0).any():
        raise ForecastWeightsError("smoothed_weights: every weight estimate needs a positive weight")
    sessions = pd.DatetimeIndex(sessions, name="session")
    daily = pd.DataFrame(steps[_periods(weight_history, sessions)], index=sessions, columns=weight_history.columns)
    smooth = daily.ewm(span=int(span)).mean()
    return smooth.div(smooth.sum(axis=1), axis=0)


def _periods(weight_history: pd.DataFrame, sessions: pd.DatetimeIndex) -> np.ndarray:
    """Row of ``weight_history`` in force on each session (after its date; row 0 up to its own)."""
    return np.clip(
        np.searchsorted(weight_history.index.to_numpy(), sessions.to_numpy(), side="left") - 1,
        0, len(weight_history) - 1,
    )


def combine_with_weight_history(
    capped: pd.DataFrame,
    weight_history: pd.DataFrame,
    fdm: float | str = "estimate",
    fdm_cap: float = 2.5,
    cap: float = 20.0,
    smooth_span: int | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Combined forecast with forecast weights that change at each estimate.

    A weight row dated ``e`` applies to the sessions after ``e`` up to the next row's date (the
    first row also to its own session). Within each period the combination is
    :func:`pipeline.signals.combine.combine_forecasts` and the FDM :func:`pipeline.signals.combine.estimate_fdm`
    with that period's weights (on data up to the period's sessions only). With ``smooth_span``
    (pst ``forecast_weight_ewma_span`` 125) and more than one estimate, the weights are
    :func:`smoothed_weights` and the combination :func:`pipeline.signals.combine.combine_forecasts_daily`;
    the FDM stays that of each period's estimate (itself smoothed with span 125 in
    :func:`pipeline.signals.combine.estimate_fdm`).

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts.
    weight_history : DataFrame, index ``estimated_at``, columns ``rule``
        :func:`estimate_forecast_weights`.
    fdm : float or "estimate"
        A fixed FDM or ``"estimate"``.
    fdm_cap, cap : float
        FDM cap (2.5) and cap of the combined forecast (20).
    smooth_span : int or None
        EWMA span (sessions) of the weight smoothing; None = weights change in one step.

    Returns
    -------
    combined : DataFrame, index ``session``, columns instrument
        Combined forecast in forecast units, within ``[-cap, cap]``.
    fdm : Series, index ``session``, name ``fdm``
        FDM in force on each session.

    Raises
    ------
    ForecastWeightsError
        An empty weight history.
    CombinationError
        As :func:`pipeline.signals.combine.combine_forecasts`.
    """
    if weight_history.empty:
        raise ForecastWeightsError("combine_with_weight_history: the weight history is empty")
    sessions = capped.index
    # period k covers sessions after estimate k's date; sessions up to the first date use row 0
    period = _periods(weight_history, sessions)
    smooth = smooth_span is not None and len(weight_history) > 1  # smoothing a constant changes nothing
    combined_parts, fdm_parts = [], []
    for k in np.unique(period):  # one pass per estimate (yearly), not per row
        weights = weight_history.iloc[k].fillna(0.0)
        weights.index.name = "rule"
        in_period = sessions[period == k]
        upto = capped.loc[: in_period[-1]]
        if fdm == "estimate":
            fdm_k = estimate_fdm(upto, weights, cap=fdm_cap).loc[in_period]
        else:
            fdm_k = pd.Series(float(fdm), index=in_period, name="fdm")
        if not smooth:
            combined_parts.append(combine_forecasts(upto.loc[in_period], weights, fdm_k, cap=cap))
        fdm_parts.append(fdm_k)
    fdm_series = pd.concat(fdm_parts).rename("fdm")
    if smooth:
        daily = smoothed_weights(weight_history, sessions, smooth_span)
        daily.index = capped.index
        return combine_forecasts_daily(capped, daily, fdm_series, cap=cap), fdm_series
    return pd.concat(combined_parts), fdm_series


def _check_rules(rules: list[str], name: str) -> None:
    if not rules:
        raise ForecastWeightsError(f"{name}: no rule variations; configure at least one rule")
    if len(set(rules)) != len(rules):
        raise ForecastWeightsError(f"{name}: rule names listed twice in {rules}")
