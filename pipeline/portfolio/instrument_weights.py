"""Instrument weights by equal risk contribution (ERC) and the instrument diversification multiplier.

Each month end the covariance of *vol-normalised* returns (the daily returns of a position sized
to unit daily vol, so every instrument is on the same risk footing as in Carver's subsystems) is
estimated over a trailing window, the long-only weights that give every instrument the same share
of portfolio risk are solved for, and the IDM is computed from the same correlations (floored at 0
and capped, as in pysystemtrade ``systems/portfolio.py``; carver.md §2.8, §3.4).

ERC is the default in place of Carver's handcrafting (ST ch. 4, pst ``instrument_weight_estimate:
handcraft``): it needs no Sharpe ratio estimates and equalises risk rather than money, which is what
handcrafting with ``equalise_vols`` approximates. Equal, fixed (from the config) and handcrafted
weights are the other methods of :func:`estimate_instrument_weights`; the IDM always comes from the
weights chosen. Definition: Maillard, Roncalli & Teiletche (2010), "The
properties of equally weighted risk contribution portfolios"; algorithm: Spinu (2013), "An
algorithm for computing risk parity weights".

An estimate made at month end ``m`` is used from the next session after ``m``
(:meth:`InstrumentWeights.daily`), so nothing on or before ``m`` depends on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from pipeline.portfolio import optimisers

if TYPE_CHECKING:
    from pipeline.config import OptimiserConfig

SESSION = "session"
INSTRUMENT = "instrument"
ESTIMATED_AT = "estimated_at"

#: Required accuracy of the solved ERC: max |RC_i - 1/n| (RC as fractions of portfolio variance).
ERC_TOLERANCE = 1e-8
#: Eigenvalue floor (relative to the largest) used to repair a pairwise correlation matrix that is
#: not positive definite; small enough not to move well-behaved estimates.
_EIGEN_FLOOR = 1e-6


class WeightsError(ValueError):
    """Bad input to, or failure of, the instrument-weight estimation; the message says what to do."""


# --------------------------------------------------------------------------------------------------
# Vol-normalised returns
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# ERC weights, risk contributions, IDM
# --------------------------------------------------------------------------------------------------


def erc_weights(cov: pd.DataFrame) -> pd.Series:
    """Long-only equal-risk-contribution weights.

    Solves Spinu's (2013) strictly convex problem ``min_x 0.5 x'Σx - (1/n) Σ_i log x_i`` over
    ``x > 0``, whose unique minimiser satisfies ``x_i (Σx)_i = 1/n`` for every ``i``; normalising
    ``w = x / Σx`` then gives ``RC_i = w_i (Σw)_i / w'Σw = 1/n``. The problem is solved on the
    correlation matrix (well scaled, unit diagonal) and mapped back by ``x_i = y_i / σ_i``, by
    Spinu's damped Newton method (one Cholesky solve per step), with scipy's ``trust-exact`` Newton
    method in log coordinates as the fallback. The result is verified: ``max |RC_i - 1/n| <= 1e-8``.

    Closed forms used in the tests: a diagonal Σ gives ``w ∝ 1/σ``; two assets give ``w ∝ 1/σ``
    whatever their correlation.

    Parameters
    ----------
    cov : pd.DataFrame
        Square covariance matrix, index and columns the same instruments in the same order; any
        units (only ratios matter). Must be finite, symmetric, positive semi-definite, with a
        positive diagonal.

    Returns
    -------
    pd.Series
        Index = instruments of ``cov``, name ``"weight"``; weights > 0 summing to 1.

    Raises
    ------
    WeightsError
        If ``cov`` is empty, not square, labelled inconsistently, contains NaN/inf, is not
        symmetric, has a non-positive variance, is not positive semi-definite, or the solver
        cannot reach the accuracy above (e.g. a singular matrix with a zero-risk long portfolio,
        for which no ERC portfolio exists).
    """
    values = _checked_cov(cov, "erc_weights")
    sigma = np.sqrt(np.diag(values))
    corr = values / np.outer(sigma, sigma)
    x = _erc_solve(corr, sigma, u0=None, where="erc_weights")
    return pd.Series(x / x.sum(), index=cov.index.copy(), name="weight")


def risk_contributions(weights: pd.Series, cov: pd.DataFrame) -> pd.Series:
    """Fraction of portfolio variance contributed by each instrument.

    ``RC_i = w_i (Σw)_i / (w'Σw)``; the fractions sum to 1 (Maillard, Roncalli & Teiletche 2010).

    Parameters
    ----------
    weights : pd.Series
        Index = instruments; any scale (the fractions are scale free).
    cov : pd.DataFrame
        Covariance with index and columns containing every instrument of ``weights``.

    Returns
    -------
    pd.Series
        Index of ``weights``, name ``"risk_contribution"``.

    Raises
    ------
    WeightsError
        If an instrument of ``weights`` is missing from ``cov``, an input is not finite, or the
        portfolio variance ``w'Σw`` is not positive.
    """
    w, sigma = _weights_and_matrix(weights, cov, "risk_contributions", "cov")
    sw = sigma @ w
    variance = float(w @ sw)
    if not variance > 0:
        raise WeightsError(
            f"risk_contributions: portfolio variance w'Σw = {variance!r} is not positive; "
            "give at least one non-zero weight and a covariance with positive variances"
        )
    return pd.Series(w * sw / variance, index=weights.index.copy(), name="risk_contribution")


def idm(weights: pd.Series, corr: pd.DataFrame, cap: float = 2.5) -> float:
    """Instrument diversification multiplier ``min(1 / sqrt(w'Hw), cap)``.

    ``H`` is the correlation matrix with negative entries set to 0, as pysystemtrade does
    (``systems/portfolio.py``, ``sysquant/estimators/diversification_multipliers.py``; carver.md
    §2.8 and §3.4; ST ch. 11). E.g. two instruments at 50/50 with correlation 0.5:
    ``1 / sqrt(0.25 + 0.25 + 2 * 0.25 * 0.5) = 1 / sqrt(0.75) = 1.1547``.

    Parameters
    ----------
    weights : pd.Series
        Index = instruments, weights >= 0 (normally summing to 1); instruments with weight 0 are
        ignored, so their correlations may be NaN.
    corr : pd.DataFrame
        Correlation matrix whose index and columns contain every weighted instrument.
    cap : float
        Upper limit (pst ``dm_max`` = 2.5).

    Returns
    -------
    float
        The IDM; at least 1 when the weights sum to 1 (correlations are at most 1).

    Raises
    ------
    WeightsError
        If a weight is negative or NaN, all weights are 0, a weighted instrument is missing from
        ``corr`` or has a NaN correlation, or ``cap`` is not positive.
    """
    if not cap > 0:
        raise WeightsError(f"idm: cap must be positive, got {cap!r}")
    bad = weights.isna() | (weights < 0)
    if bad.any():
        raise WeightsError(f"idm: weights must be non-negative numbers, got {weights[bad].to_dict()}")
    used = weights[weights > 0]
    if used.empty:
        raise WeightsError("idm: every weight is 0; give at least one positive weight")
    w, h = _weights_and_matrix(used, corr, "idm", "corr")
    h = np.maximum(h, 0.0)
    return float(min(1.0 / np.sqrt(w @ h @ w), cap))


# --------------------------------------------------------------------------------------------------
# Month-end estimation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstrumentWeights:
    """Instrument weights, risk contributions and IDM estimated at month ends.

    Attributes
    ----------
    weights : pd.DataFrame
        Index ``estimated_at`` (the month-end session of each estimate), columns instruments.
        ERC weights of the eligible instruments, summing to 1 per row; 0 for the others.
    risk_contributions : pd.DataFrame
        Same shape; each instrument's fraction of portfolio variance (1/n for the n eligible, 0
        otherwise).
    idm : pd.Series
        Index ``estimated_at``, name ``"idm"``; the IDM of each estimate (capped).
    correlation : pd.DataFrame
        The latest estimate's correlation matrix (eligible instruments only, as used by the ERC
        and the IDM: not floored; the IDM floors it at 0). Empty if built with :meth:`from_long`.
    covariance : pd.DataFrame
        The latest estimate's covariance of vol-normalised returns (same instruments; unitless,
        daily). Empty if built with :meth:`from_long`.
    """

    weights: pd.DataFrame
    risk_contributions: pd.DataFrame
    idm: pd.Series
    correlation: pd.DataFrame
    covariance: pd.DataFrame

    def daily(self, sessions: pd.DatetimeIndex) -> tuple[pd.DataFrame, pd.Series]:
        """Weights and IDM in force on each session (see :func:`weights_on_sessions`)."""
        return weights_on_sessions(self.weights, self.idm, sessions)

    def to_long(self) -> pd.DataFrame:
        """Long table for storage: columns ``[estimated_at, instrument, weight, risk_contribution]``.

        One row per estimate and instrument (ineligible instruments appear with 0). Store
        :attr:`idm` (index ``estimated_at``, name ``idm``) beside it; :meth:`from_long` inverts.
        """
        w = self.weights.stack().rename("weight")
        rc = self.risk_contributions.stack().rename("risk_contribution")
        out = pd.concat([w, rc], axis=1).reset_index()
        out.columns = [ESTIMATED_AT, INSTRUMENT, "weight", "risk_contribution"]
        return out

    @classmethod
    def from_long(cls, long: pd.DataFrame, idm: pd.Series) -> InstrumentWeights:
        """Rebuild from :meth:`to_long` and the stored IDM (correlation and covariance empty).

        Raises
        ------
        WeightsError
            If ``long`` lacks a column of :meth:`to_long` or the IDM's dates differ from it.
        """
        missing = {ESTIMATED_AT, INSTRUMENT, "weight", "risk_contribution"} - set(long.columns)
        if missing:
            raise WeightsError(f"InstrumentWeights.from_long: columns {sorted(missing)} missing")
        order = pd.unique(long[INSTRUMENT])  # pivot sorts; keep the stored instrument order

        def wide(values: str) -> pd.DataFrame:
            frame = long.pivot(index=ESTIMATED_AT, columns=INSTRUMENT, values=values).reindex(columns=order)
            return _named(frame.astype(float), ESTIMATED_AT)

        weights, rcs = wide("weight"), wide("risk_contribution")
        idm = idm.sort_index()
        if not idm.index.equals(weights.index):
            raise WeightsError(
                "InstrumentWeights.from_long: the IDM's estimation dates differ from the weights'; "
                "store and load both from the same estimate"
            )
        idm = idm.rename("idm").rename_axis(ESTIMATED_AT)
        return cls(weights, rcs, idm, pd.DataFrame(), pd.DataFrame())


def weights_on_sessions(
    weights: pd.DataFrame, idm: pd.Series, sessions: pd.DatetimeIndex
) -> tuple[pd.DataFrame, pd.Series]:
    """Map month-end estimates onto sessions without look-ahead.

    An estimate made at ``m`` is in force from the first session strictly after ``m`` until the
    next estimate takes over (a step function, forward filled). Carver additionally smooths weights
    with an EWMA of span 125 (carver.md §4); that is not done here because buffering already
    absorbs the small monthly changes.

    Parameters
    ----------
    weights : pd.DataFrame
        Index = estimation dates (ascending), columns instruments (e.g. :attr:`InstrumentWeights.weights`).
    idm : pd.Series
        Index = the same estimation dates.
    sessions : pd.DatetimeIndex
        Ascending sessions to map onto; any datetime resolution.

    Returns
    -------
    (pd.DataFrame, pd.Series)
        Weights with index ``session`` = ``sessions`` and the columns of ``weights``, and the IDM
        series (name ``"idm"``) on the same index. NaN on sessions on or before the first estimate.

    Raises
    ------
    WeightsError
        If the estimation dates are not ascending and unique, or differ between weights and IDM.
    """
    est = pd.DatetimeIndex(weights.index)
    if not (est.is_monotonic_increasing and est.is_unique):
        raise WeightsError("weights_on_sessions: estimation dates must be ascending and unique")
    if not pd.DatetimeIndex(idm.index).equals(est):
        raise WeightsError("weights_on_sessions: the IDM and the weights have different estimation dates")
    sessions = pd.DatetimeIndex(sessions, name=SESSION)
    # Position of the last estimate made strictly before each session (-1: none yet).
    k = est.searchsorted(sessions, side="left") - 1
    valid = k >= 0
    w = np.full((len(sessions), weights.shape[1]), np.nan)
    w[valid] = weights.to_numpy(dtype=float)[k[valid]]
    d = np.full(len(sessions), np.nan)
    d[valid] = idm.to_numpy(dtype=float)[k[valid]]
    daily_w = pd.DataFrame(w, index=sessions, columns=weights.columns.copy())
    return _named(daily_w), pd.Series(d, index=sessions, name="idm")


def weight_concentration(weights: pd.Series, max_multiple: float) -> pd.DataFrame:
    """Instruments whose weight is more than ``max_multiple`` times the equal share ``1/n``.

    Equal risk contribution gives a diversifier more than ``1/n`` (the bundled sample's largest
    ERC weight is 6.0 times its equal share), but one instrument holding most of the book means
    its vol-normalised returns are nearly constant: its vol estimate is broken (a bad print in
    the vol inflates it) and the IDM collapses with it, shrinking every position.

    Parameters
    ----------
    weights : Series, index instruments
        One estimate's weights (fractions summing to 1; 0 = not eligible yet).
    max_multiple : float
        Allowed multiple of the equal share (> 1).

    Returns
    -------
    DataFrame, index ``instrument``, columns ``weight, equal_share, multiple``
        One row per concentrated instrument (empty when none), largest first; ``n`` counts the
        instruments with a weight > 0.

    Raises
    ------
    WeightsError
        ``max_multiple`` is not > 1.

    Notes
    -----
    This project's guard; Carver's handcrafting and pysystemtrade cap nothing of the kind.
    """
    if not max_multiple > 1:
        raise WeightsError(f"weight_concentration: max_multiple must be > 1, got {max_multiple}")
    w = weights.astype(float).fillna(0.0)
    n = int((w > 0).sum())
    share = 1.0 / n if n else np.nan
    out = pd.DataFrame({"weight": w, "equal_share": share, "multiple": w / share})
    out = out[out["multiple"] > max_multiple].sort_values("weight", ascending=False)
    return out.rename_axis(INSTRUMENT)


def month_end_sessions(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The last session of each calendar month present in ``index`` (ascending, unique).

    The index's final session counts as the end of its month even if the month is not over; an
    estimate made there only affects sessions after the index, and is superseded once the month's
    true last session arrives.
    """
    idx = pd.DatetimeIndex(index)
    return idx[_month_end_mask(idx)]


def _month_end_mask(idx: pd.DatetimeIndex) -> np.ndarray:
    key = np.asarray(idx.year * 12 + idx.month)
    last = np.ones(len(idx), dtype=bool)
    last[:-1] = key[1:] != key[:-1]
    return last


#: Instrument-weight methods of :func:`estimate_instrument_weights` (``portfolio.instrument_weights_method``).
WEIGHT_METHODS = ("erc", "equal", "fixed", "handcraft", *optimisers.OPTIMISER_METHODS)


def estimate_instrument_weights(
    norm_returns: pd.DataFrame,
    lookback_sessions: int,
    min_sessions: int,
    idm_cap: float = 2.5,
    method: str = "erc",
    fixed_weights: Mapping[str, float] | None = None,
    fixed_idm: float | None = None,
    optimiser: OptimiserConfig | None = None,
) -> InstrumentWeights:
    """Instrument weights (ERC by default), risk contributions and IDM at each month end, from
    trailing data only.

    ``method`` chooses the weights of the eligible instruments at each month end:

    * ``"erc"``: equal risk contribution (below);
    * ``"equal"``: ``1/n`` each (pst's default when no weights are given, carver.md §2.8);
    * ``"fixed"``: ``fixed_weights`` (e.g. from the config, pst ``instrument_weights``), restricted
      to the eligible instruments and re-normalised to sum to 1, as pst re-normalises fixed weights
      over the instruments that have data; an instrument missing from ``fixed_weights`` gets 0;
    * ``"handcraft"``: Carver's handcrafting on the window's correlation of vol-normalised returns
      (:func:`pipeline.signals.forecast_weights.handcraft_weights`, the same algorithm as the forecast
      weights: clusters by correlation, equal Sharpe ratios and vols; ST ch. 4, pst
      ``instrument_weight_estimate: handcraft`` with ``equalise_SR`` and ``equalise_vols``);
    * ``"kelly"``, ``"mean_variance"``, ``"black_litterman"``: the optimisers of
      :mod:`pipeline.portfolio.optimisers` on the window's annualised moments (``μ`` = 16 x the mean
      vol-normalised return, ``Σ`` = the covariance below), with ``optimiser``'s settings. Kelly weights are
      ``f / Σ|f|`` (all 0 when Kelly holds nothing); mean-variance and Black-Litterman weights sum to
      ``optimiser.mean_variance.budget``; a Black-Litterman view naming an instrument not eligible at
      a month end is left out of that estimate.

    The IDM is always computed from the chosen weights and the same correlation (floored at 0). For
    signed weights (optimisers allowed to go short) it is ``1 / sqrt(|w|' H |w|)`` with ``H`` the
    correlation of the signed subsystems ``s_i s_j ρ_ij`` floored at 0 (the same number for weights
    >= 0); with every weight 0 it is 1.

    At each month end ``m`` (:func:`month_end_sessions`) the window is the last
    ``lookback_sessions`` rows of ``norm_returns`` up to and including ``m``. An instrument is
    *eligible* when it has at least ``min_sessions`` non-NaN returns in the window and a
    positive variance; the others get weight 0. Month ends with no eligible instrument are skipped.

    Covariance, pairwise-complete: each correlation uses the sessions where both instruments have a
    return (as ``pandas.DataFrame.corr``), so a newly listed instrument does not shorten the
    history of the others; each variance uses all of that instrument's sessions in the window.
    A pair with fewer than ``min_sessions`` common sessions (only possible when histories barely
    overlap, e.g. one delisted before the other listed) gets correlation 0. Pairwise correlations
    need not form a positive-definite matrix; if not, eigenvalues are floored at 1e-6 of the
    largest and the diagonal is rescaled to 1 (eigenvalue clipping), which leaves a
    positive-definite matrix untouched. Then ``cov = D C D`` with ``D`` the instruments' vols.

    IDM: :func:`idm` of the ERC weights and the same correlation (floored at 0), capped at
    ``idm_cap``. With one eligible instrument the weight is 1 and the IDM 1. With ``fixed_idm`` the
    IDM of every estimate is that number instead, uncapped (pst ``instrument_div_multiplier`` with
    ``use_instrument_div_mult_estimates: False``, e.g. 1.89 in the chapter-15 system).

    The loop runs over month ends only (one small optimisation each, warm-started from the
    previous month's solution); the window sums are matrix products, updated each month by
    adding the sessions that enter the window and subtracting those that leave it.

    Parameters
    ----------
    norm_returns : pd.DataFrame
        Index ``session`` (ascending, unique), columns instruments; vol-normalised daily returns
        (:func:`vol_normalised_returns`), NaN = no data.
    lookback_sessions : int
        Window length in sessions, e.g. ``round(PortfolioConfig.weights_lookback_years * 256)``.
    min_sessions : int
        Returns an instrument needs in the window to take part (``PortfolioConfig.weights_min_sessions``).
    idm_cap : float
        ``PortfolioConfig.idm_cap`` (pst ``dm_max`` = 2.5).
    method : str
        One of :data:`WEIGHT_METHODS` (``PortfolioConfig.instrument_weights_method``).
    fixed_weights : mapping instrument -> weight, optional
        Non-negative weights for ``method="fixed"`` (``PortfolioConfig.instrument_weights``), any
        scale; every key must be a column of ``norm_returns``.
    fixed_idm : float, optional
        A fixed IDM (>= 1, ``PortfolioConfig.idm`` when a number); None = estimated as above.
    optimiser : OptimiserConfig, optional
        ``PortfolioConfig.optimiser``; needed by the optimiser methods (its ``kelly``, its
        ``mean_variance``, or its ``black_litterman`` and ``mean_variance``).

    Returns
    -------
    InstrumentWeights
        Estimates indexed by month-end session; see the class for fields. Month ends where no
        eligible instrument has a positive fixed weight are skipped.

    Raises
    ------
    WeightsError
        If the index is not an ascending unique DatetimeIndex, ``min_sessions < 2``,
        ``lookback_sessions < min_sessions``, ``idm_cap < 1``, ``fixed_idm < 1``, an unknown ``method``,
        ``"fixed"`` without weights (or with negative ones, or with instruments not in ``norm_returns``),
        an optimiser method without its settings (or with a view that does not parse, or constraints no
        weights meet), or an ERC solve fails.
    """
    _check_session_index(norm_returns, "estimate_instrument_weights")
    if min_sessions < 2:
        raise WeightsError(f"estimate_instrument_weights: min_sessions must be >= 2, got {min_sessions}")
    if lookback_sessions < min_sessions:
        raise WeightsError(
            f"estimate_instrument_weights: lookback_sessions ({lookback_sessions}) is shorter than "
            f"min_sessions ({min_sessions}); no instrument could ever be eligible"
        )
    if idm_cap < 1:
        raise WeightsError(f"estimate_instrument_weights: idm_cap must be >= 1, got {idm_cap}")
    if fixed_idm is not None and not fixed_idm >= 1:
        raise WeightsError(f"estimate_instrument_weights: fixed_idm must be >= 1, got {fixed_idm}")
    fixed = _fixed_weight_vector(norm_returns.columns, method, fixed_weights)
    _check_optimiser(method, optimiser, norm_returns.columns)

    columns = norm_returns.columns.copy()
    n_all = len(columns)
    positions = np.flatnonzero(_month_end_mask(norm_returns.index))
    window = _WindowSums(norm_returns.to_numpy(dtype=float))

    dates, w_rows, rc_rows, idms = [], [], [], []
    last_eligible, last_corr, last_cov = np.arange(0), np.empty((0, 0)), np.empty((0, 0))
    u_prev = np.full(n_all, np.nan)  # log(y) of the previous solution, to warm-start the next
    was_pd = True  # whether the previous month's pairwise correlation was positive definite
    # Hundreds of small (n x n) factorisations: one BLAS thread each is faster than a team,
    # and far faster when other work competes for the cores.
    with threadpool_limits(limits=1, user_api="blas"):
        for p in positions:
            a, b = max(0, p + 1 - lookback_sessions), p + 1
            window.over(a, b)
            moments = _window_moments(window, min_sessions, fixed, try_cholesky=was_pd)
            if moments is None:
                continue
            # Last month's matrix needed a repair: this one almost surely does too, skip the test.
            eligible, corr, sigma, mean, was_pd = moments
            if method == "erc":
                where = f"estimate_instrument_weights at {norm_returns.index[p]:%Y-%m-%d}"
                u0 = u_prev[eligible]
                if np.isnan(u0).all():
                    u0 = None
                else:  # newly eligible instruments start where an equal-weight solution would put them
                    u0 = np.where(np.isnan(u0), -0.5 * np.log(len(u0)), u0)
                x = _erc_solve(corr, sigma, u0=u0, where=where)
                u_prev = np.full(n_all, np.nan)
                u_prev[eligible] = np.log(x * sigma)
                w = x / x.sum()
            else:
                where = f"estimate_instrument_weights ({method}) at {norm_returns.index[p]:%Y-%m-%d}"
                w = _method_weights(method, corr, eligible, fixed, sigma=sigma, mean=mean,
                                    names=columns[eligible], optimiser=optimiser, where=where)
            cov = corr * np.outer(sigma, sigma)
            sw = cov @ w
            variance = w @ sw
            full_w, full_rc = np.zeros(n_all), np.zeros(n_all)
            full_w[eligible] = w
            full_rc[eligible] = w * sw / variance if variance > 0 else 0.0  # all 0: Kelly holds nothing
            dates.append(norm_returns.index[p])
            w_rows.append(full_w)
            rc_rows.append(full_rc)
            idms.append(fixed_idm if fixed_idm is not None else _estimated_idm(w, corr, idm_cap))
            last_eligible, last_corr, last_cov = eligible, corr, cov

    est = pd.DatetimeIndex(dates, name=ESTIMATED_AT)
    shape = (len(dates), n_all)
    weights = pd.DataFrame(np.array(w_rows).reshape(shape), index=est, columns=columns.copy())
    rcs = pd.DataFrame(np.array(rc_rows).reshape(shape), index=est, columns=columns.copy())
    names = columns[last_eligible]
    return InstrumentWeights(
        weights=_named(weights, ESTIMATED_AT),
        risk_contributions=_named(rcs, ESTIMATED_AT),
        idm=pd.Series(idms, index=est.copy(), name="idm", dtype=float),
        correlation=_named_square(pd.DataFrame(last_corr, index=names, columns=names.copy())),
        covariance=_named_square(pd.DataFrame(last_cov, index=names.copy(), columns=names.copy())),
    )


def last_window_frontier(
    norm_returns: pd.DataFrame,
    lookback_sessions: int,
    min_sessions: int,
    method: str = "erc",
    fixed_weights: Mapping[str, float] | None = None,
    optimiser: OptimiserConfig | None = None,
) -> optimisers.EfficientFrontier:
    """The mean-variance efficient frontier of the last estimation window, with the ERC portfolio,
    the ``method``'s portfolio and each instrument on it (annualised risk and return).

    The window, the eligible instruments and the moments are those of the last estimate of
    :func:`estimate_instrument_weights` with the same arguments (the last ``lookback_sessions`` rows;
    ``μ`` = 16 x the mean vol-normalised return, ``Σ`` = the repaired pairwise covariance: positions
    at 100% annual vol, :func:`pipeline.portfolio.optimisers.annualised_moments`). The frontier's
    constraints are ``optimiser.mean_variance``'s when set, else long-only and fully invested
    (``Σw = 1``, ``0 <= w_i <= 1``); ``optimiser.frontier_points`` portfolios (30 without ``optimiser``).
    A Black-Litterman portfolio is placed at its sample moments (it was optimised on the posterior).

    Parameters
    ----------
    norm_returns, lookback_sessions, min_sessions, method, fixed_weights, optimiser
        As :func:`estimate_instrument_weights`.

    Returns
    -------
    pipeline.portfolio.optimisers.EfficientFrontier
        ``portfolios`` rows ``erc`` and ``method`` (one row when the method is ERC).

    Raises
    ------
    WeightsError
        As :func:`estimate_instrument_weights`, or no instrument is eligible in the last window.
    """
    _check_session_index(norm_returns, "last_window_frontier")
    fixed = _fixed_weight_vector(norm_returns.columns, method, fixed_weights)
    _check_optimiser(method, optimiser, norm_returns.columns)
    n_rows = len(norm_returns)
    window = _WindowSums(norm_returns.to_numpy(dtype=float)[max(0, n_rows - lookback_sessions):])
    window.over(0, min(n_rows, lookback_sessions))
    moments = _window_moments(window, min_sessions, None)
    if moments is None:
        raise WeightsError(f"last_window_frontier: no instrument has {min_sessions} returns in the last "
                           f"{lookback_sessions} sessions")
    eligible, corr, sigma, mean, _ = moments
    names = norm_returns.columns[eligible]
    end = norm_returns.index[-1]
    where = f"last_window_frontier ({method}) at {end:%Y-%m-%d}"
    portfolios = {"erc": _method_weights("erc", corr, eligible, None, sigma=sigma, where=where)}
    if method != "erc":
        sel = np.ones(len(eligible), dtype=bool) if fixed is None else fixed[eligible] > 0  # as the estimate
        w = _method_weights(method, corr[np.ix_(sel, sel)], eligible[sel], fixed, sigma=sigma[sel], mean=mean[sel],
                            names=names[sel], optimiser=optimiser, where=where)
        portfolios[method] = np.zeros(len(eligible))
        portfolios[method][sel] = w
    mu, cov = _annualised(mean, corr, sigma, names)
    mv = optimiser.mean_variance if optimiser is not None else None
    bounds = (mv.budget, mv.min_weight, mv.max_weight) if mv is not None else (1.0, 0.0, 1.0)
    try:
        return optimisers.efficient_frontier(
            mu, cov, optimiser.frontier_points if optimiser is not None else 30, *bounds,
            portfolios={k: pd.Series(v, index=mu.index) for k, v in portfolios.items()}, estimated_at=end)
    except optimisers.OptimiserError as exc:
        raise WeightsError(f"{where}: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------


def _fixed_weight_vector(
    columns: pd.Index, method: str, fixed_weights: Mapping[str, float] | None
) -> np.ndarray | None:
    """The fixed weights as a vector over ``columns`` (0 where not given), or None if not ``fixed``."""
    if method not in WEIGHT_METHODS:
        raise WeightsError(
            f"estimate_instrument_weights: unknown method {method!r}; use one of {list(WEIGHT_METHODS)}"
        )
    if method != "fixed":
        return None
    if not fixed_weights:
        raise WeightsError(
            "estimate_instrument_weights: method 'fixed' needs weights (portfolio.instrument_weights: "
            "{instrument: weight, ...})"
        )
    unknown = sorted(set(fixed_weights) - set(columns))
    if unknown:
        raise WeightsError(f"estimate_instrument_weights: fixed weights for instruments without returns: {unknown}")
    negative = sorted(k for k, v in fixed_weights.items() if not (np.isfinite(v) and v >= 0))
    if negative:
        raise WeightsError(f"estimate_instrument_weights: fixed weights must be finite and >= 0; bad: {negative}")
    return pd.Series(fixed_weights, dtype=float).reindex(columns).fillna(0.0).to_numpy()


def _method_weights(method: str, corr: np.ndarray, eligible: np.ndarray, fixed: np.ndarray | None, *,
                    sigma: np.ndarray | None = None, mean: np.ndarray | None = None, names: pd.Index | None = None,
                    optimiser: OptimiserConfig | None = None, where: str = "") -> np.ndarray:
    """Weights of the eligible instruments for the methods other than warm-started ERC (summing to 1,
    or to the mean-variance budget, or all 0 for a Kelly that holds nothing)."""
    n = len(eligible)
    if method in optimisers.OPTIMISER_METHODS or method == "erc":
        try:
            return _optimiser_weights(method, corr, sigma, mean, names, optimiser, where)
        except optimisers.OptimiserError as exc:
            raise WeightsError(f"{where}: {exc}") from exc
    if method == "equal":
        return np.full(n, 1.0 / n)
    if method == "fixed":
        w = fixed[eligible]
        return w / w.sum()
    from pipeline.signals.forecast_weights import (
        handcraft_weights,  # it imports this module
    )

    labels = pd.RangeIndex(n)
    return handcraft_weights(pd.DataFrame(corr, index=labels, columns=labels)).to_numpy()


def _optimiser_weights(method: str, corr: np.ndarray, sigma: np.ndarray, mean: np.ndarray, names: pd.Index,
                       optimiser: OptimiserConfig | None, where: str) -> np.ndarray:
    """ERC (cold start), Kelly, mean-variance or Black-Litterman weights on one window's moments."""
    if method == "erc":
        x = _erc_solve(corr, sigma, u0=None, where=where)
        return x / x.sum()
    mu, cov = _annualised(mean, corr, sigma, names)
    if method == "kelly":
        k = optimiser.kelly
        f = optimisers.kelly_fractions(mu, cov, fraction=k.fraction, joint=k.joint, long_only=k.long_only,
                                       max_instrument=k.max_instrument_leverage, max_gross=k.max_gross_leverage)
        return optimisers.kelly_weights(f).to_numpy()
    mv = optimiser.mean_variance
    if method == "black_litterman":
        bl = optimiser.black_litterman
        if bl.reference_weights == "erc":
            x = _erc_solve(corr, sigma, u0=None, where=where)
            ref = x / x.sum()
        else:
            ref = np.full(len(sigma), 1.0 / len(sigma))
        keep = optimisers.applicable_views(bl.views, [str(n) for n in names])
        confidences = None if bl.view_confidences is None else [bl.view_confidences[k] for k in keep]
        mu, cov, _ = optimisers.black_litterman_moments(
            cov, pd.Series(ref, index=cov.index), [bl.views[k] for k in keep], tau=bl.tau,
            risk_aversion=bl.risk_aversion, view_confidences=confidences)
    return optimisers.mean_variance_weights(mu, cov, mv.objective, mv.budget, mv.min_weight, mv.max_weight,
                                            risk_aversion=mv.risk_aversion).to_numpy()


def _annualised(mean: np.ndarray, corr: np.ndarray, sigma: np.ndarray, names: pd.Index) -> tuple[pd.Series, pd.DataFrame]:
    labels = pd.Index([str(n) for n in names], name=INSTRUMENT)
    return optimisers.annualised_moments(pd.Series(mean, index=labels),
                                         pd.DataFrame(corr * np.outer(sigma, sigma), index=labels, columns=labels))


def _estimated_idm(w: np.ndarray, corr: np.ndarray, cap: float) -> float:
    """``min(1 / sqrt(|w|' H |w|), cap)``, ``H`` the correlation of the signed subsystems floored at 0
    (``max(ρ, 0)`` for weights >= 0, as pysystemtrade); 1 when every weight is 0."""
    s = np.sign(w)
    a = np.abs(w)
    variance = a @ np.maximum(corr * np.outer(s, s), 0.0) @ a
    return 1.0 if not variance > 0 else float(min(1.0 / np.sqrt(variance), cap))


def _window_moments(window: _WindowSums, min_sessions: int, fixed: np.ndarray | None, try_cholesky: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool] | None:
    """Eligible instruments of the window (positions), their repaired correlation, vols and mean
    returns, and whether the pairwise correlation was positive definite; None when none is eligible."""
    eligible = np.flatnonzero(window.counts() >= min_sessions)  # non-NaN returns in the window
    if eligible.size == 0:
        return None
    stats = window.of(eligible)
    corr, sigma = _pairwise_corr(*stats, min_sessions)
    mean = np.diag(stats[1]) / np.diag(stats[0])  # each instrument's own sessions: s_ii / n_ii
    keep = sigma > 0
    if fixed is not None:  # only instruments with a positive fixed weight take part
        keep &= fixed[eligible] > 0
    if not keep.all():
        eligible, corr, sigma, mean = eligible[keep], corr[np.ix_(keep, keep)], sigma[keep], mean[keep]
    if eligible.size == 0:
        return None
    corr, was_pd = _nearest_positive_definite(corr, try_cholesky=try_cholesky)
    return eligible, corr, sigma, mean, was_pd


def _check_optimiser(method: str, optimiser: OptimiserConfig | None, columns: pd.Index) -> None:
    """The optimiser methods need their settings; Black-Litterman views must parse against the instruments."""
    if method not in optimisers.OPTIMISER_METHODS:
        return
    needs = {"kelly": ["kelly"], "mean_variance": ["mean_variance"],
             "black_litterman": ["black_litterman", "mean_variance"]}[method]
    missing = [n for n in needs if optimiser is None or getattr(optimiser, n) is None]
    if missing:
        raise WeightsError(f"estimate_instrument_weights: method {method!r} needs portfolio.optimiser."
                           f"{' and portfolio.optimiser.'.join(missing)}")
    if method == "black_litterman":
        try:
            optimisers.check_views(optimiser.black_litterman.views, [str(c) for c in columns])
        except optimisers.OptimiserError as exc:
            raise WeightsError(f"estimate_instrument_weights: portfolio.optimiser.black_litterman: {exc}") from exc



def _erc_solve(corr: np.ndarray, sigma: np.ndarray, u0: np.ndarray | None, where: str) -> np.ndarray:
    """Unnormalised ERC solution ``x`` (``x_i (Σx)_i = 1/n``) for ``Σ = diag(σ) C diag(σ)``."""
    from scipy import optimize

    n = len(sigma)
    if n == 1:
        return np.array([1.0 / sigma[0]])
    b = np.full(n, 1.0 / n)

    def fun(u: np.ndarray) -> tuple[float, np.ndarray]:
        y = np.exp(u)
        cy = corr @ y
        return 0.5 * y @ cy - b @ u, y * cy - b

    def hess(u: np.ndarray) -> np.ndarray:
        # d²/du² of the objective in log coordinates; positive definite near the optimum.
        y = np.exp(u)
        return corr * np.outer(y, y) + np.diag(y * (corr @ y))

    def residual(u: np.ndarray) -> np.ndarray:
        y = np.exp(u)
        return y * (corr @ y) - b

    def rc_error(u: np.ndarray) -> float:
        y = np.exp(u)
        if not (np.all(np.isfinite(y)) and np.all(y > 0)):
            return np.inf
        cy = corr @ y
        variance = y @ cy
        if not variance > 0:
            return np.inf
        return float(np.max(np.abs(y * cy / variance - 1.0 / n)))

    # Damped Newton on Spinu's self-concordant objective in y (Hessian C + diag(b / y^2) is
    # positive definite): a few n x n Cholesky solves, from last month's solution when there is
    # one. The scipy paths below are the fallback; every answer is verified.
    y = _newton_erc(corr, b, np.exp(u0) if u0 is not None else np.full(n, 1.0 / np.sqrt(n)))
    if y is not None and rc_error(np.log(y)) <= ERC_TOLERANCE:
        return y / sigma
    if u0 is not None:
        # Warm start (last month's solution): Powell's hybrid method on the first-order conditions
        # converges in a few steps from nearby, several times faster than the trust region below.
        res = optimize.root(residual, u0, jac=hess, method="hybr", options={"xtol": 1e-12})
        err = rc_error(res.x)
        if err <= ERC_TOLERANCE:
            return np.exp(res.x) / sigma
    # Cold start: equal y = 1/sqrt(n) solves the problem exactly when all correlations are 0.
    # A trust region on the convex objective converges from anywhere (hybr alone does not);
    # Newton-CG is a second opinion should trust-exact stall on a near-singular Hessian.
    err, failure = np.inf, ""
    for method, options in (("trust-exact", {"gtol": 1e-12, "maxiter": 500}), ("Newton-CG", {"xtol": 1e-14})):
        try:
            with warnings.catch_warnings():
                # Warnings on the way through near-singular Hessians are moot: the result is verified.
                warnings.simplefilter("ignore", RuntimeWarning)
                res = optimize.minimize(
                    fun, np.full(n, -0.5 * np.log(n)), jac=True, hess=hess, method=method, options=options
                )
        except Exception as exc:  # scipy can raise from inside a degenerate subproblem
            failure = f"; scipy {method} raised {exc!r}"
            continue
        err = rc_error(res.x)
        if err <= ERC_TOLERANCE:
            return np.exp(res.x) / sigma
    raise WeightsError(
        f"{where}: the ERC solver did not converge (max |risk contribution - 1/n| = {err:.2e} > "
        f"{ERC_TOLERANCE:.0e}{failure}); the covariance is probably singular with a zero-risk long portfolio "
        "(e.g. perfectly negatively correlated instruments). Remove the redundant instrument or "
        "lengthen the estimation window"
    )


def _newton_erc(corr: np.ndarray, b: np.ndarray, y0: np.ndarray, max_iter: int = 100) -> np.ndarray | None:
    """Minimise ``0.5 y'Cy - b'log(y)`` over y > 0 by damped Newton steps (Spinu 2013).

    With ``b = 1/n``, ``n`` times the objective is a standard self-concordant function, so the
    damped step ``1 / (1 + λ)`` (λ its Newton decrement) stays inside y > 0 and converges from
    anywhere, and full steps converge quadratically once λ < 1/4 (Nesterov, *Introductory
    Lectures on Convex Optimization*, 4.1.5): no line search, one Cholesky solve per step.
    Returns the minimiser (its risk contributions ``y_i (Cy)_i`` equal ``b_i``), or None if the
    Hessian cannot be factorised or the iteration does not settle.
    """
    y = y0.astype(float).copy()
    scale = 1.0 / float(np.min(b))
    for _ in range(max_iter):
        grad = corr @ y - b / y
        if np.max(np.abs(grad * y)) < 1e-14:
            return y
        hess = corr + np.diag(b / (y * y))
        # LAPACK's Cholesky factor and solve (what scipy.linalg.cho_factor / cho_solve call, without
        # their per-call overhead, which matters over thousands of small solves).
        factor, info = lapack.dpotrf(hess, lower=0, clean=0, overwrite_a=1)
        if info != 0:  # not positive definite (or not finite)
            return None
        step, info = lapack.dpotrs(factor, grad, lower=0)
        if info != 0:
            return None
        decrement = float(np.sqrt(max(scale * float(grad @ step), 0.0)))
        trial = y - (step if decrement < 0.25 else step / (1.0 + decrement))
        if not np.all(trial > 0):
            return None
        y = trial
    return y if np.max(np.abs((corr @ y - b / y) * y)) < 1e-10 else None


class _WindowSums:
    """Sums over a sliding window of rows ``[a, b)`` of the pairwise statistics of the columns.

    With ``X`` the values with NaN replaced by 0 and ``M`` 1.0 where a value is real, each sum over
    the rows where both columns of a pair are present is a matrix product: ``M'M`` (common rows),
    ``X'M`` (sum of x_i where j is present; x_i = 0 where i is not), ``(X*X)'M`` and ``X'X``.
    Moving the window adds the rows that enter and subtracts the rows that leave (a month's
    worth instead of the whole window); the sums are recomputed from scratch every
    ``refresh`` moves so rounding errors cannot accumulate. Columns are kept in order of their
    first value, so the products only span the columns that have started by the window's end
    (the others' sums are 0).
    """

    def __init__(self, values: np.ndarray, refresh: int = 120) -> None:
        n_rows, n = values.shape
        present = np.isfinite(values)
        first = np.where(present.any(axis=0), present.argmax(axis=0), n_rows)
        self._order = np.argsort(first, kind="stable")
        self._position = np.empty(n, dtype=int)
        self._position[self._order] = np.arange(n)
        self._first = first[self._order]
        # The columns reordered once (a copy), then NaN -> 0 in place in that copy.
        self._x = values[:, self._order]
        present = present[:, self._order]
        self._x[~present] = 0.0
        self._m = present.astype(float)
        self._refresh = refresh
        self._a = self._b = 0
        self._moves = 0
        self._sums = np.zeros((4, n, n))

    def _block(self, a: int, b: int, k: int) -> np.ndarray:
        """The four sums over rows ``[a, b)`` of the first ``k`` (ordered) columns, shape (4, k, k)."""
        x, m = self._x[a:b, :k], self._m[a:b, :k]
        return np.stack([m.T @ m, x.T @ m, (x * x).T @ m, x.T @ x])

    def over(self, a: int, b: int) -> None:
        """Move the window to rows ``[a, b)``; windows must move forward."""
        k = int(np.searchsorted(self._first, b, side="left"))  # columns with a value before b
        self._moves += 1
        if self._moves % self._refresh == 0 or a >= self._b or a < self._a or b < self._b:
            self._sums[:] = 0.0
            self._sums[:, :k, :k] = self._block(a, b, k)
        else:
            if b > self._b:
                self._sums[:, :k, :k] += self._block(self._b, b, k)
            if a > self._a:
                self._sums[:, :k, :k] -= self._block(self._a, a, k)
        self._a, self._b = a, b

    def counts(self) -> np.ndarray:
        """Non-NaN values of each column (original order) in the window."""
        return np.diagonal(self._sums[0])[self._position]

    def of(self, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(n_ij, s_ij, q_ij, p_ij)`` of the columns ``cols`` (original positions), in that order."""
        positions = self._position[cols]
        # Two takes along the axes of the stacked sums: several times faster than np.ix_ per array.
        return tuple(self._sums.take(positions, axis=1).take(positions, axis=2))


def _pairwise_corr(
    n_ij: np.ndarray, s_ij: np.ndarray, q_ij: np.ndarray, p_ij: np.ndarray, min_overlap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise-complete correlation and own-window vol of the columns of a window.

    Inputs are the window sums of those columns (:class:`_WindowSums`): common sessions
    ``n_ij``, ``s_ij`` = sum of x_i where j is present, ``q_ij`` = sum of x_i^2 where j is present,
    ``p_ij`` = sum of x_i x_j.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = (p_ij - s_ij * s_ij.T / n_ij) / (n_ij - 1)
        var_i = (q_ij - s_ij**2 / n_ij) / (n_ij - 1)  # var of i over the pair's common sessions
        corr = cov / np.sqrt(var_i * var_i.T)
    corr = np.where((n_ij >= min_overlap) & np.isfinite(corr), np.clip(corr, -1.0, 1.0), 0.0)
    np.fill_diagonal(corr, 1.0)
    own_var = np.diag(var_i).copy()
    sigma = np.sqrt(np.where(np.isfinite(own_var) & (own_var > 0), own_var, 0.0))
    return corr, sigma


def _nearest_positive_definite(corr: np.ndarray, try_cholesky: bool = True) -> tuple[np.ndarray, bool]:
    """Eigenvalue-clipped correlation matrix (``corr`` itself when it is already PD) and whether
    ``corr`` was PD. ``try_cholesky=False`` skips the fast path (when a repair is expected)."""
    # Fast path: a Cholesky factorisation of corr - f I proves every eigenvalue exceeds f; with
    # f = floor x n (a correlation matrix's largest eigenvalue is at most n) that settles the
    # well-conditioned case without an eigendecomposition.
    n = len(corr)
    if try_cholesky:
        try:
            np.linalg.cholesky(corr - _EIGEN_FLOOR * max(n, 1) * np.eye(n))
            return corr, True
        except np.linalg.LinAlgError:
            pass
    eigval, eigvec = np.linalg.eigh(corr)
    floor = _EIGEN_FLOOR * max(float(eigval[-1]), 1.0)
    if eigval[0] >= floor:
        return corr, True
    fixed = (eigvec * np.maximum(eigval, floor)) @ eigvec.T
    d = np.sqrt(np.diag(fixed))
    fixed = fixed / np.outer(d, d)
    fixed = 0.5 * (fixed + fixed.T)
    np.fill_diagonal(fixed, 1.0)
    return fixed, False


def _checked_cov(cov: pd.DataFrame, where: str) -> np.ndarray:
    if not isinstance(cov, pd.DataFrame) or cov.shape[0] != cov.shape[1] or cov.empty:
        raise WeightsError(f"{where}: the covariance must be a non-empty square DataFrame")
    if not cov.index.equals(cov.columns):
        raise WeightsError(
            f"{where}: the covariance's index and columns must be the same instruments in the same order"
        )
    values = cov.to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        bad = sorted({str(cov.index[i]) for i in np.argwhere(~np.isfinite(values))[:, 0]})
        raise WeightsError(
            f"{where}: the covariance has NaN/inf entries for {bad}; drop those instruments first"
        )
    scale = float(np.max(np.abs(values)))
    if not np.allclose(values, values.T, rtol=1e-8, atol=1e-12 * scale):
        raise WeightsError(f"{where}: the covariance is not symmetric")
    values = 0.5 * (values + values.T)
    diag = np.diag(values)
    if np.any(diag <= 0):
        raise WeightsError(
            f"{where}: instruments {list(cov.index[diag <= 0])} have non-positive variance; "
            "an instrument without risk cannot take an equal share of it, drop it"
        )
    min_eig = float(np.linalg.eigvalsh(values)[0])
    if min_eig < -1e-10 * scale:
        raise WeightsError(
            f"{where}: the covariance is not positive semi-definite (smallest eigenvalue {min_eig:.3g}); "
            "estimate it from one common window or repair it (e.g. eigenvalue clipping) first"
        )
    return values


def _weights_and_matrix(
    weights: pd.Series, matrix: pd.DataFrame, where: str, matrix_name: str
) -> tuple[np.ndarray, np.ndarray]:
    names = weights.index
    missing = [str(n) for n in names if n not in matrix.index or n not in matrix.columns]
    if missing:
        raise WeightsError(f"{where}: instruments {missing} are missing from {matrix_name}")
    w = weights.to_numpy(dtype=float)
    m = matrix.loc[names, names].to_numpy(dtype=float)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(m))):
        raise WeightsError(
            f"{where}: weights or {matrix_name} contain NaN/inf for instruments {list(map(str, names))}"
        )
    return w, m


def _check_session_index(frame: pd.DataFrame, where: str) -> None:
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise WeightsError(
            f"{where}: the index must be a DatetimeIndex of sessions, got {type(frame.index).__name__}"
        )
    if not (frame.index.is_monotonic_increasing and frame.index.is_unique):
        raise WeightsError(f"{where}: the sessions must be ascending and unique")


def _named(frame: pd.DataFrame, index_name: str = SESSION) -> pd.DataFrame:
    frame = frame.rename_axis(index=index_name, columns=INSTRUMENT)
    return frame


def _named_square(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename_axis(index=INSTRUMENT, columns=INSTRUMENT)
