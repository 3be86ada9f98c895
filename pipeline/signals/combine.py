"""Forecast combination: forecast weights, the forecast diversification multiplier (FDM), and the
combined forecast (ST ch. 8, carver.md §2.6 and §3.3).

The combined forecast of an instrument is the weighted average of its capped rule forecasts,
scaled up by the FDM (averaging imperfectly correlated forecasts shrinks their average absolute
value below 10; the FDM restores it) and capped again at +/-20.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits


class CombinationError(ValueError):
    """Forecast-combination input is malformed; the message says which and how to fix it."""


def forecast_weights(rule_names: list[str], configured: dict[str, float] | None) -> pd.Series:
    """Forecast weight of every rule variation, summing to 1.

    Parameters
    ----------
    rule_names : list of str
        The rule variations in use (``RulesConfig.rule_names``), unique, non-empty.
    configured : dict rule -> weight, or None
        ``None``: equal weights. Otherwise raw weights (any positive scale): every key must be
        in ``rule_names``, weights non-negative and finite, at least one positive; rules not
        listed get 0.

    Returns
    -------
    Series, index ``rule`` (order of ``rule_names``), name ``weight``
        Dimensionless weights summing to 1.

    Raises
    ------
    CombinationError
        Unknown rule names, negative / non-finite weights, all zero, or empty / duplicate rules.

    Notes
    -----
    ST ch. 8 (equal weights are the default when nothing is estimated; pst ``forecast_combine``
    likewise falls back to equal weights).
    """
    names = list(rule_names)
    if not names:
        raise CombinationError("forecast_weights: no rule variations; configure at least one rule")
    if len(set(names)) != len(names):
        raise CombinationError(f"forecast_weights: rule names listed twice in {names}")
    if configured is None:
        weights = pd.Series(1.0, index=names)
    else:
        unknown = sorted(set(configured) - set(names))
        if unknown:
            raise CombinationError(
                f"forecast_weights: weights given for unknown rule variations {unknown}; known rules are {names}"
            )
        bad = {k: v for k, v in configured.items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise CombinationError(f"forecast_weights: weights must be finite and >= 0, got {bad}")
        weights = pd.Series({n: float(configured.get(n, 0.0)) for n in names}, index=names, dtype=float)
        if weights.sum() <= 0:
            raise CombinationError(
                "forecast_weights: every configured weight is 0; give at least one rule a weight > 0"
            )
    weights = weights / weights.sum()
    weights.index.name = "rule"
    weights.name = "weight"
    return weights


def fdm_from_correlation(weights: pd.Series | np.ndarray, corr: pd.DataFrame | np.ndarray, cap: float = 2.5) -> float:
    """Diversification multiplier of weighted forecasts with correlation matrix ``corr``.

    ``FDM = min(1 / sqrt(w' H w), cap)`` with ``H = max(corr, 0)`` (negative correlations floored
    at 0, as pst does) and the diagonal set to 1.

    Parameters
    ----------
    weights : Series (index rule) or 1-d array of length N
        Forecast weights, non-negative, summing to 1 (not renormalised here).
    corr : DataFrame (rule x rule) or N x N array
        Correlation matrix; a DataFrame is aligned to ``weights.index`` by label.
    cap : float
        Maximum FDM (pst ``dm_max`` 2.5), >= 1.

    Returns
    -------
    float
        The multiplier, between 1/sqrt(max w'Hw) and ``cap``.

    Raises
    ------
    CombinationError
        Shapes disagree, NaN in ``corr`` or ``weights``, negative weights, or ``cap < 1``.

    Notes
    -----
    ST ch. 8; pst ``sysquant/estimators/diversification_multipliers.py``; carver.md §3.3
    (equal weights and constant correlation rho: ``1/sqrt((1 + (N-1) rho) / N)``).
    """
    if isinstance(weights, pd.Series) and isinstance(corr, pd.DataFrame):
        corr = corr.reindex(index=weights.index, columns=weights.index)
    w = np.asarray(weights, dtype=float)
    h = np.asarray(corr, dtype=float)
    if w.ndim != 1 or h.shape != (w.size, w.size):
        raise CombinationError(
            f"fdm_from_correlation: weights of length {w.size} need a {w.size}x{w.size} correlation, got {h.shape}"
        )
    if np.isnan(w).any() or np.isnan(h).any() or (w < 0).any():
        raise CombinationError("fdm_from_correlation: weights and correlations must be non-NaN and weights >= 0")
    if cap < 1:
        raise CombinationError(f"fdm_from_correlation: cap must be >= 1, got {cap}")
    h = np.clip(h, 0.0, None)
    np.fill_diagonal(h, 1.0)
    variance = float(w @ h @ w)
    if variance <= 0:
        raise CombinationError("fdm_from_correlation: all weights are 0")
    return float(min(1.0 / np.sqrt(variance), cap))


def _check_capped(capped: pd.DataFrame, name: str) -> None:
    if not (
        isinstance(capped, pd.DataFrame)
        and isinstance(capped.columns, pd.MultiIndex)
        and capped.columns.nlevels == 2
    ):
        raise CombinationError(
            f"{name}: capped forecasts must be a DataFrame with a (rule, instrument) column MultiIndex"
        )
    index = capped.index
    if not (isinstance(index, pd.DatetimeIndex) and index.is_monotonic_increasing and index.is_unique):
        raise CombinationError(f"{name}: index must be an ascending, unique DatetimeIndex of sessions")


#: Sessions per block of the (session, rule, instrument) panel: bounds memory (a block of 1024
#: sessions x 13 rules x 238 instruments is 25 MB) while keeping each numpy call large.
_BLOCK_SESSIONS = 1024


class _Panel:
    """Capped forecasts as (session, rule, instrument) blocks over the rules of ``weights``.

    Only one block is materialised at a time (NaN where a rule has no column for an
    instrument); the wide frame's values are read in place.
    """

    def __init__(self, capped: pd.DataFrame, weights: pd.Series, name: str) -> None:
        _check_capped(capped, name)
        if weights.isna().any() or (weights < 0).any() or weights.sum() <= 0:
            raise CombinationError(
                f"{name}: weights must be >= 0, non-NaN and not all 0; build them with forecast_weights()"
            )
        rules_present = set(capped.columns.get_level_values(0))
        missing = [r for r in weights.index if weights[r] > 0 and r not in rules_present]
        if missing:
            raise CombinationError(
                f"{name}: rules {missing} have a weight but no forecasts; compute them or set their weight to 0"
            )
        self.instruments = pd.Index(sorted(set(capped.columns.get_level_values(1))), name="instrument")
        self.weights = weights.to_numpy(dtype=float)
        rule_pos = pd.Index(list(weights.index)).get_indexer(capped.columns.get_level_values(0))
        instrument_pos = self.instruments.get_indexer(capped.columns.get_level_values(1))
        # Per weighted rule: its columns of ``capped`` and their instruments' positions (columns of
        # rules without a weight entry are ignored).
        self._sources = []
        for r in range(len(self.weights)):
            cols = np.flatnonzero(rule_pos == r)
            contiguous = cols.size > 0 and cols[-1] - cols[0] == cols.size - 1
            self._sources.append((slice(cols[0], cols[-1] + 1) if contiguous else cols, instrument_pos[cols]))
        self._values = capped.to_numpy(dtype=float)
        self.n_sessions = len(capped.index)

    def blocks(self):
        """Yield ``(start, stop, x, m)`` for sessions ``[start, stop)``: (sessions, rules, instruments)
        arrays of the forecasts with 0 where there is none (``x``) and of 1.0 where there is one (``m``).

        The two arrays are reused from block to block (fresh large arrays cost page faults on
        every block): use them before asking for the next block.
        """
        n_instruments = len(self.instruments)
        everyone = np.arange(n_instruments)
        size = min(_BLOCK_SESSIONS, self.n_sessions)
        x_buffer = np.empty((size, len(self.weights), n_instruments))
        m_buffer = np.empty_like(x_buffer)
        absent_buffer = np.empty(x_buffer.shape, dtype=bool)
        for start in range(0, self.n_sessions, _BLOCK_SESSIONS):
            stop = min(start + _BLOCK_SESSIONS, self.n_sessions)
            x, m, absent = x_buffer[: stop - start], m_buffer[: stop - start], absent_buffer[: stop - start]
            # One (transposing) copy per rule with NaN kept, then the NaN -> 0 and the mask over the
            # whole contiguous block: far fewer strided passes than masking each rule's columns.
            for r, (cols, positions) in enumerate(self._sources):
                values = self._values[start:stop, cols]
                if np.array_equal(positions, everyone):
                    np.copyto(x[:, r, :], values)
                    continue
                x[:, r, :] = np.nan  # instruments without this rule
                if positions.size:
                    x[:, r, positions] = values
            np.isnan(x, out=absent)
            np.logical_not(absent, out=m, casting="unsafe")
            np.copyto(x, 0.0, where=absent)
            yield start, stop, x, m


def estimate_fdm(
    capped: pd.DataFrame,
    weights: pd.Series,
    cap: float = 2.5,
    min_periods: int = 256,
    smooth_span: int = 125,
) -> pd.Series:
    """FDM per session from the pooled correlation of the rules' forecasts, expanding, no look-ahead.

    At each re-estimation session s the correlation of every pair of rules is computed over all
    (session <= s, instrument) observations where both rules have a forecast: instruments are
    pooled as extra observations, the window expands from the first session. Then
    ``FDM_s = min(1 / sqrt(w' H w), cap)`` (:func:`fdm_from_correlation`, H floored at 0), forward-
    filled to the following sessions and smoothed with ``ewm(span=smooth_span)``.

    Parameters
    ----------
    capped : DataFrame, index ``session`` (ascending DatetimeIndex), columns MultiIndex ``(rule, instrument)``
        Capped forecasts (``ForecastSet.capped``); NaN = no forecast.
    weights : Series, index rule
        Forecast weights (:func:`forecast_weights`); rules with weight 0 are ignored.
    cap : float
        Maximum FDM (pst ``dm_max`` 2.5).
    min_periods : int
        Sessions with a forecast (for a pair: sessions where some instrument has both
        forecasts) a rule needs before it counts; 256 = one year.
    smooth_span : int
        EWMA span in sessions of the final smoothing (pst 125).

    Returns
    -------
    Series, index ``session`` (that of ``capped``), name ``fdm``
        Dimensionless multiplier >= 1 (before smoothing every value is in [1, cap]).

    Raises
    ------
    CombinationError
        Malformed ``capped`` / ``weights``, a weighted rule without forecasts, or bad parameters.

    Notes
    -----
    Source: pst ``sysquant/estimators/diversification_multipliers.py`` and
    ``forecast_correlation_estimate`` (pooled, weekly, expanding, floored at 0; carver.md §2.6).

    Choices made here:

    - Re-estimated weekly, at the **first** session of each calendar week, using data up to and
      including that session. (The last session of a week is not known until the next week
      starts, so choosing it would make today's value depend on whether tomorrow exists.)
    - Plain (equally weighted) expanding correlation of daily forecasts, from cumulative sums of
      x, x^2 and xy per pair; pst weights exponentially (``ew_lookback`` 250) on weekly data.
    - A rule enters once it has forecasts on ``min_periods`` sessions; weights are renormalised
      over the rules that have entered (as :func:`combine_forecasts` renormalises over
      available rules). A pair of entered rules with fewer than ``min_periods`` joint
      sessions, or a constant forecast, gets correlation 1 (no diversification credit).
    - 1.0 where no rule has entered yet (pst: 1.0 if undefined).
    """
    if not (cap >= 1 and min_periods >= 2 and smooth_span >= 1):
        raise CombinationError(
            f"estimate_fdm: need cap >= 1, min_periods >= 2, smooth_span >= 1; got {cap}, {min_periods}, {smooth_span}"
        )
    return _fdm_pass(_Panel(capped, weights, "estimate_fdm"), capped.index, cap, min_periods, smooth_span)


def estimate_fdm_and_combine(
    capped: pd.DataFrame,
    weights: pd.Series,
    fdm_cap: float = 2.5,
    cap: float = 20.0,
    min_periods: int = 256,
    smooth_span: int = 125,
) -> tuple[pd.DataFrame, pd.Series]:
    """:func:`estimate_fdm` and :func:`combine_forecasts` with that FDM, in one pass over the forecasts.

    The same numbers as ``fdm = estimate_fdm(capped, weights, fdm_cap, min_periods, smooth_span)``
    then ``combine_forecasts(capped, weights, fdm, cap)``, but the capped forecasts are read block
    by block once instead of twice (each read of the 2023 futures set's 13 rules is ~340 MB).

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts, forecast units; NaN = no forecast.
    weights : Series, index rule
        Forecast weights; rules with weight 0 are ignored.
    fdm_cap, cap : float
        FDM cap (pst ``dm_max`` 2.5) and cap of the combined forecast (20).
    min_periods, smooth_span : int
        As :func:`estimate_fdm`.

    Returns
    -------
    combined : DataFrame, index ``session``, columns ``instrument`` (sorted)
        Combined forecast in forecast units within ``[-cap, cap]``.
    fdm : Series, index ``session``, name ``fdm``
        The FDM used.

    Raises
    ------
    CombinationError
        As :func:`estimate_fdm` and :func:`combine_forecasts`.

    Notes
    -----
    Source: ST ch. 8; pst ``systems/forecast_combine.py`` and
    ``sysquant/estimators/diversification_multipliers.py`` (carver.md §2.6).
    """
    if not (fdm_cap >= 1 and min_periods >= 2 and smooth_span >= 1):
        raise CombinationError(
            f"estimate_fdm_and_combine: need fdm_cap >= 1, min_periods >= 2, smooth_span >= 1; got "
            f"{fdm_cap}, {min_periods}, {smooth_span}"
        )
    if not (np.isfinite(cap) and cap > 0):
        raise CombinationError(f"estimate_fdm_and_combine: cap must be positive and finite, got {cap}")
    panel = _Panel(capped, weights, "estimate_fdm_and_combine")
    average = np.empty((panel.n_sessions, len(panel.instruments)))
    fdm = _fdm_pass(panel, capped.index, fdm_cap, min_periods, smooth_span, average=average)
    averaged = pd.DataFrame(average, index=capped.index, columns=panel.instruments)
    return _times_fdm(averaged, fdm, cap, "estimate_fdm_and_combine"), fdm


def _fdm_pass(
    panel: _Panel,
    sessions: pd.Index,
    cap: float,
    min_periods: int,
    smooth_span: int,
    average: np.ndarray | None = None,
) -> pd.Series:
    """The FDM of :func:`estimate_fdm`; with ``average`` (sessions x instruments), also fill it with
    the weighted average forecast of :func:`combine_forecasts` (before the FDM) from the same blocks."""
    w = panel.weights
    if len(sessions) == 0:
        return pd.Series(np.nan, index=sessions, name="fdm")
    week = sessions.to_period("W")
    estimate_at = np.flatnonzero(np.r_[True, week[1:] != week[:-1]])

    # Per session, over the instruments where both rules (a, b) have a forecast: the count, the
    # sums of a and a^2, and the sum of a*b, as batched (rule x instrument) @ (instrument x rule)
    # products.
    n_rules = w.size
    pair_count, s_a, s_aa, s_ab = (np.empty((panel.n_sessions, n_rules, n_rules)) for _ in range(4))
    size = min(_BLOCK_SESSIONS, panel.n_sessions)
    m_t_buffer = np.empty((size, len(panel.instruments), n_rules))  # (sessions, instruments, rules)
    xx_buffer = np.empty((size, n_rules, len(panel.instruments)))
    with threadpool_limits(limits=1, user_api="blas"):  # thousands of tiny products: no thread team
        for start, stop, x, m in panel.blocks():
            m_t, xx = m_t_buffer[: stop - start], xx_buffer[: stop - start]
            np.copyto(m_t, m.transpose(0, 2, 1))
            np.multiply(x, x, out=xx)
            np.matmul(m, m_t, out=pair_count[start:stop])
            np.matmul(x, m_t, out=s_a[start:stop])
            np.matmul(xx, m_t, out=s_aa[start:stop])
            np.matmul(x, x.transpose(0, 2, 1), out=s_ab[start:stop])
            if average is not None:  # combine_forecasts' weighted average, from the same block
                weight_used = w @ m
                weighted = w @ x
                with np.errstate(invalid="ignore", divide="ignore"):
                    average[start:stop] = np.where(weight_used > 0, weighted / weight_used, np.nan)
    # Summed per block of sessions ending at an estimation session and accumulated: the
    # expanding sums at each estimation session without a cumulative sum over every session.
    starts = np.r_[0, estimate_at[:-1] + 1]
    end = estimate_at[-1] + 1

    def expanding(per_session: np.ndarray) -> np.ndarray:
        return np.cumsum(np.add.reduceat(per_session[:end], starts, axis=0), axis=0)

    n = expanding(pair_count)
    n_sessions = expanding((pair_count > 0).astype(float))  # sessions with a joint observation
    s_a = expanding(s_a)  # sum of a
    s_aa = expanding(s_aa)  # sum of a^2
    s_ab = expanding(s_ab)  # sum of a*b
    s_b = s_a.transpose(0, 2, 1)
    s_bb = s_aa.transpose(0, 2, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = n * s_ab - s_a * s_b
        var_a = n * s_aa - s_a * s_a
        var_b = n * s_bb - s_b * s_b
        corr = cov / np.sqrt(var_a * var_b)
    # n * sum(x^2) - sum(x)^2 of a constant forecast is rounding noise, not 0: compare it with its
    # own scale (it is n^2 * variance against n^2 * mean square).
    moves_a = var_a > 1e-10 * n * s_aa
    moves_b = var_b > 1e-10 * n * s_bb
    defined = (n_sessions >= min_periods) & moves_a & moves_b & np.isfinite(corr)
    corr = np.where(defined, np.clip(corr, 0.0, 1.0), 1.0)
    corr[:, np.arange(n_rules), np.arange(n_rules)] = 1.0

    entered = (np.diagonal(n_sessions, axis1=1, axis2=2) >= min_periods) & (w > 0)  # (K, R)
    w_k = np.where(entered, w, 0.0)
    total = w_k.sum(axis=1)
    w_k = np.divide(w_k, total[:, None], out=np.zeros_like(w_k), where=total[:, None] > 0)
    variance = np.einsum("ka,kab,kb->k", w_k, corr, w_k)
    with np.errstate(divide="ignore"):
        raw_fdm = np.where(total > 0, np.minimum(1.0 / np.sqrt(variance), cap), 1.0)

    fdm = pd.Series(np.nan, index=sessions, name="fdm")
    fdm.iloc[estimate_at] = raw_fdm
    fdm = fdm.ffill().fillna(1.0)
    return fdm.ewm(span=smooth_span, adjust=True).mean().rename("fdm")


def combine_forecasts(
    capped: pd.DataFrame, weights: pd.Series, fdm: float | pd.Series, cap: float = 20.0
) -> pd.DataFrame:
    """Combined forecast per session and instrument: weighted capped forecasts x FDM, capped again.

    ``combined = clip(FDM_t * sum_r w_r f_r / sum_{r with a forecast} w_r, -cap, cap)``: the
    weights are renormalised per instrument and session over the rules that have a forecast
    (e.g. ``breakout320`` is NaN for its first 160 sessions), pst's "fixed to forecast
    availability".

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts (``ForecastSet.capped``), forecast units; NaN = no forecast.
    weights : Series, index rule
        Forecast weights (:func:`forecast_weights`); rules with weight 0 are ignored.
    fdm : float or Series (index session)
        Forecast diversification multiplier, > 0. A Series is aligned to the sessions of
        ``capped`` by forward-filling (causal: a session uses the latest FDM at or before it).
    cap : float
        Absolute cap of the combined forecast (ST ch. 8: 20).

    Returns
    -------
    DataFrame, index ``session`` (of ``capped``), columns ``instrument`` (sorted)
        Combined forecast in forecast units, within [-cap, cap]. NaN where no weighted rule
        has a forecast.

    Raises
    ------
    CombinationError
        Malformed inputs, a weighted rule without forecasts, a non-positive FDM, or an FDM
        Series with no value at or before a session that has forecasts.

    Notes
    -----
    Source: ST ch. 8; pst ``systems/forecast_combine.py`` (pst also smooths the availability-
    adjusted weights with ewm(span=125); here the renormalisation is immediate, so weights
    depend only on the current session). The second cap is carver.md §4's pitfall.
    """
    if not (np.isfinite(cap) and cap > 0):
        raise CombinationError(f"combine_forecasts: cap must be positive and finite, got {cap}")
    panel = _Panel(capped, weights, "combine_forecasts")
    w, instruments = panel.weights, panel.instruments
    average = np.empty((panel.n_sessions, len(instruments)))
    for start, stop, x, m in panel.blocks():
        weight_used = w @ m  # (sessions, instruments)
        weighted = w @ x
        with np.errstate(invalid="ignore", divide="ignore"):
            average[start:stop] = np.where(weight_used > 0, weighted / weight_used, np.nan)

    return _times_fdm(pd.DataFrame(average, index=capped.index, columns=instruments), fdm, cap, "combine_forecasts")


def _times_fdm(averaged: pd.DataFrame, fdm: float | pd.Series, cap: float, name: str) -> pd.DataFrame:
    """``clip(averaged x FDM_t, -cap, cap)``, the FDM Series forward-filled onto the sessions."""
    average, index = averaged.to_numpy(), averaged.index
    if isinstance(fdm, pd.Series):
        fdm_values = fdm.astype(float).reindex(fdm.index.union(index)).ffill().reindex(index).to_numpy()
        has_forecast = ~np.isnan(average).all(axis=1)
        if np.isnan(fdm_values[has_forecast]).any():
            first = index[has_forecast & np.isnan(fdm_values)][0]
            raise CombinationError(
                f"{name}: no FDM at or before session {first.date()}; extend the FDM series back"
            )
        if (fdm_values[~np.isnan(fdm_values)] <= 0).any():
            raise CombinationError(f"{name}: FDM values must be > 0")
        multiplier = fdm_values[:, None]
    else:
        if not (np.isfinite(fdm) and fdm > 0):
            raise CombinationError(f"{name}: FDM must be positive and finite, got {fdm}")
        multiplier = float(fdm)
    combined = np.clip(average * multiplier, -cap, cap)
    return pd.DataFrame(combined, index=index.rename("session"), columns=averaged.columns)


def combine_forecasts_daily(
    capped: pd.DataFrame, daily_weights: pd.DataFrame, fdm: float | pd.Series, cap: float = 20.0
) -> pd.DataFrame:
    """:func:`combine_forecasts` with forecast weights that change from session to session.

    ``combined_t = clip(FDM_t * sum_r w_{t,r} f_{t,r} / sum_{r with a forecast} w_{t,r}, -cap, cap)``,
    e.g. with the smoothed weights of :func:`pipeline.signals.forecast_weights.smoothed_weights`.

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts, forecast units; NaN = no forecast.
    daily_weights : DataFrame, index = ``capped.index``, columns ``rule``
        Weight of each rule on each session (>= 0, rows not all 0); per instrument and session the
        weights are renormalised over the rules with a forecast, as in :func:`combine_forecasts`.
    fdm, cap
        As :func:`combine_forecasts`.

    Returns
    -------
    DataFrame, index ``session``, columns ``instrument`` (sorted)
        Combined forecast in forecast units within ``[-cap, cap]``; NaN where no weighted rule has
        a forecast.

    Raises
    ------
    CombinationError
        Malformed inputs, weights on other sessions, negative/NaN weights, an all-zero row, a
        weighted rule without forecasts, or a bad FDM (see :func:`combine_forecasts`).

    Notes
    -----
    Source: pst ``systems/forecast_combine.py`` (time-varying, smoothed forecast weights); ST ch. 8.
    """
    if not (np.isfinite(cap) and cap > 0):
        raise CombinationError(f"combine_forecasts_daily: cap must be positive and finite, got {cap}")
    if not daily_weights.index.equals(capped.index):
        raise CombinationError("combine_forecasts_daily: daily_weights must be on the sessions of capped")
    values = daily_weights.to_numpy(dtype=float)
    if np.isnan(values).any() or (values < 0).any() or (values.sum(axis=1) <= 0).any():
        raise CombinationError("combine_forecasts_daily: weights must be >= 0, non-NaN and not all 0 on any session")
    panel = _Panel(capped, daily_weights.max(axis=0), "combine_forecasts_daily")
    average = np.empty((panel.n_sessions, len(panel.instruments)))
    for start, stop, x, m in panel.blocks():
        w = values[start:stop]
        weight_used = np.einsum("sr,sri->si", w, m)
        weighted = np.einsum("sr,sri->si", w, x)
        with np.errstate(invalid="ignore", divide="ignore"):
            average[start:stop] = np.where(weight_used > 0, weighted / weight_used, np.nan)
    averaged = pd.DataFrame(average, index=capped.index, columns=panel.instruments)
    return _times_fdm(averaged, fdm, cap, "combine_forecasts_daily")


def fdm(
    capped: pd.DataFrame, weights: pd.Series, cap: float = 2.5, min_periods: int = 256, smooth_span: int = 125
) -> pd.Series:
    """Forecast diversification multiplier per session (research API name of :func:`estimate_fdm`).

    ``FDM = min(1 / sqrt(w' H w), cap)`` with ``H`` the pooled, expanding correlation of the
    rules' capped forecasts (floored at 0), re-estimated weekly and smoothed with
    ``ewm(span=smooth_span)``.

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts, forecast units.
    weights : Series, index rule
        Forecast weights (:func:`forecast_weights`).
    cap, min_periods, smooth_span
        pst ``dm_max`` 2.5; sessions before a rule counts (256); EWMA span (125).

    Returns
    -------
    Series, index ``session``, name ``fdm``
        Dimensionless multiplier >= 1.

    Raises
    ------
    CombinationError
        Malformed inputs or bad parameters.

    Notes
    -----
    Source: ST ch. 8; pst ``sysquant/estimators/diversification_multipliers.py``; carver.md §2.6.
    """
    return estimate_fdm(capped, weights, cap=cap, min_periods=min_periods, smooth_span=smooth_span)


def combine(capped: pd.DataFrame, weights: pd.Series, fdm: float | pd.Series, cap: float = 20.0) -> pd.DataFrame:
    """Combined forecast (research API name of :func:`combine_forecasts`).

    ``clip(FDM_t x sum_r w_r f_r / sum_{r with a forecast} w_r, -cap, cap)``.

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts, forecast units.
    weights : Series, index rule
        Forecast weights.
    fdm : float or Series (index session)
        Forecast diversification multiplier (> 0).
    cap : float
        Cap of the combined forecast (20).

    Returns
    -------
    DataFrame, index ``session``, columns ``instrument``
        Combined forecast in forecast units, within ``[-cap, cap]``.

    Raises
    ------
    CombinationError
        Malformed inputs or a non-positive FDM.

    Notes
    -----
    Source: ST ch. 8; pst ``systems/forecast_combine.py``; carver.md §2.6.
    """
    return combine_forecasts(capped, weights, fdm, cap=cap)
