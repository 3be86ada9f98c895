"""Portfolio optimisers as instrument-weight methods: Kelly, mean-variance, Black-Litterman, and the
efficient frontier.

Every function here works on **annualised moments of positions held at 100% annual vol**: the
vol-normalised returns ``r`` of :func:`pipeline.signals.volatility.vol_normalised_returns` (daily
returns of a position with one unit of daily vol, the series ERC uses) divided by 16 (Carver's
``sqrt(256)``) are the daily returns of a position with unit annual vol, so with 256 sessions a year

    ``μ_i = 256 x mean(r_i / 16) = 16 x mean(r_i)``   (the instrument's annualised Sharpe ratio, buy and hold)
    ``Σ   = 256 x cov(r / 16)   = cov(r)``            (about the correlation matrix: every variance is near 1)

(:func:`annualised_moments`). A Kelly fraction is then the annual vol held in an instrument as a
fraction of capital (``f_i = 0.3``: run it at 30% annual vol), and a mean-variance weight the share of
the risk budget given to it, as an ERC weight is.

**Kelly** (the project's own maths): the growth-optimal leverage of a portfolio with moments ``μ, Σ``
is ``f* = Σ⁻¹μ`` (per instrument, ignoring correlations, ``f_i = μ_i / σ_i²``); a fraction ``c`` of it
(``c = 0.5``: half Kelly) maximises ``μ'f - f'Σf / (2c)`` with optimum ``c Σ⁻¹μ``. Caps on each
``|f_i|`` and the long-only bound ``f >= 0`` are solved exactly as the box-constrained optimum of that
objective (a bounded least squares, scipy ``lsq_linear``); a cap on the gross ``Σ|f_i|`` scales every
fraction down. Thorp (2006), "The Kelly criterion in blackjack, sports betting and the stock market",
section 7; ST ch. 9 (half Kelly).

**From Kelly fractions to instrument weights** (:func:`kelly_weights`): ``w = f / Σ|f|``. In this
system the level of risk is set by ``portfolio.vol_target`` and the IDM (ST ch. 9-11), and the
instrument weights only share that budget among the subsystems, summing to 1 as ERC's do; so Kelly
gives the *shape* (how much of the risk each instrument deserves) and the vol target the *size*.
The fraction and the gross cap do not move the weights by themselves (they scale every ``f_i`` alike);
they matter through the per-instrument cap, which binds on the scaled fractions. Carver's answer to
the Kelly level is the vol target itself: no more than half the Kelly-optimal vol, i.e. half the
expected Sharpe ratio (ST ch. 9). Kelly's answer when no instrument has a positive expected return
and ``long_only`` is true is to hold nothing: every weight is 0 and the system is flat.

**Mean-variance** and **Black-Litterman** go through skfolio (``MeanRisk``, ``BlackLitterman``),
imported inside the functions that use them, with the window's moments given as a fixed prior
(so skfolio optimises exactly the moments ERC and Kelly see, pairwise-complete across instruments
with different histories). The objective that has no solution at an estimate (maximum Sharpe when no
instrument has a positive expected return, or a solver failure) falls back to the minimum-variance
portfolio under the same constraints. Markowitz (1952), "Portfolio selection"; Black & Litterman
(1992), "Global portfolio optimization"; He & Litterman (1999), "The intuition behind Black-Litterman
model portfolios".

A negative weight (``long_only: false``, ``min_weight < 0``) multiplies the instrument's combined
forecast like any weight: it trades *against* the forecast. The optimisers price buy-and-hold returns,
not the trading rules' returns; ERC makes the same proxy for the covariance only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg, optimize

#: Sessions a year (Carver's 256; ST ch. 9).
SESSIONS_A_YEAR = 256
#: The optimiser methods of ``portfolio.instrument_weights_method``.
OPTIMISER_METHODS = ("kelly", "mean_variance", "black_litterman")
#: ``portfolio.optimiser.mean_variance.objective`` values.
OBJECTIVES = ("max_sharpe", "max_utility", "min_variance")


class OptimiserError(ValueError):
    """Bad input to, or an infeasible problem of, an optimiser; the message says what to change."""


# --------------------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------------------


def annualised_moments(mean_daily: pd.Series, cov_daily: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """Annualised moments of positions at 100% annual vol from those of vol-normalised returns.

    ``μ = 16 x mean``, ``Σ = cov`` (module docstring: dividing the returns by 16 and annualising
    with 256 sessions).

    Parameters
    ----------
    mean_daily : Series, index instruments
        Mean daily vol-normalised return of each instrument over the window.
    cov_daily : DataFrame, index and columns the same instruments
        Daily covariance of the same returns.

    Returns
    -------
    (Series, DataFrame)
        ``μ`` (index instruments, name ``"mu"``; annualised Sharpe ratios) and ``Σ`` (annualised,
        unit-vol positions).

    Raises
    ------
    OptimiserError
        If the labels differ or a value is not finite.
    """
    mu, cov = _checked(mean_daily, cov_daily, "annualised_moments")
    return (pd.Series(mu * math.sqrt(SESSIONS_A_YEAR), index=mean_daily.index.copy(), name="mu"),
            pd.DataFrame(cov, index=cov_daily.index.copy(), columns=cov_daily.columns.copy()))


# --------------------------------------------------------------------------------------------------
# Kelly
# --------------------------------------------------------------------------------------------------


def kelly_fractions(
    mu: pd.Series,
    cov: pd.DataFrame,
    fraction: float = 1.0,
    joint: bool = True,
    long_only: bool = False,
    max_instrument: float | None = None,
    max_gross: float | None = None,
) -> pd.Series:
    """Fractional, capped Kelly leverage of each instrument.

    Joint: the maximiser of ``μ'f - f'Σf / (2c)`` subject to ``lo <= f_i <= hi``, i.e.
    ``f = c Σ⁻¹μ`` when no bound binds (``c = fraction``), solved otherwise as the bounded least squares
    ``min ||L'f - c L⁻¹μ||²`` (``Σ = LL'``, scipy ``lsq_linear``, method ``bvls``). Per instrument
    (``joint=False``, Σ's off-diagonal ignored): ``f_i = clip(c μ_i / σ_i², lo, hi)``. Bounds:
    ``hi = max_instrument`` (or +inf), ``lo = 0`` if ``long_only`` else ``-max_instrument`` (or -inf).
    Then, if ``Σ|f_i| > max_gross``, every fraction is multiplied by ``max_gross / Σ|f_i|``.

    Closed forms (the tests): one asset ``f = c μ / σ²``; two assets ``f = c Σ⁻¹μ``.

    Parameters
    ----------
    mu : Series, index instruments
        Annualised expected excess returns (:func:`annualised_moments`).
    cov : DataFrame, index and columns the instruments of ``mu`` in the same order
        Annualised covariance, positive definite.
    fraction : float
        Kelly multiplier ``c`` in (0, 1]; 0.5 = half Kelly.
    joint : bool
        Use the correlations (``Σ⁻¹μ``) or each variance alone (``μ_i / σ_i²``).
    long_only : bool
        Keep every fraction >= 0.
    max_instrument, max_gross : float, optional
        Caps on ``|f_i|`` and on ``Σ|f_i|`` (> 0); None = none.

    Returns
    -------
    Series, index of ``mu``, name ``"kelly_fraction"``
        Leverage in units of the return series' positions (annual vol as a fraction of capital here).

    Raises
    ------
    OptimiserError
        Labels differ, values are not finite, ``fraction`` is outside (0, 1], a cap is not > 0, or
        ``cov`` is not positive definite.

    Notes
    -----
    Thorp (2006) section 7 (``f* = C⁻¹(M - R)``); the project's own code, no library.
    """
    m, s = _checked(mu, cov, "kelly_fractions")
    if not 0 < fraction <= 1:
        raise OptimiserError(f"kelly_fractions: fraction must be in (0, 1], got {fraction}")
    for name, cap in (("max_instrument", max_instrument), ("max_gross", max_gross)):
        if cap is not None and not cap > 0:
            raise OptimiserError(f"kelly_fractions: {name} must be > 0 or None, got {cap}")
    hi = np.inf if max_instrument is None else float(max_instrument)
    lo = 0.0 if long_only else -hi
    if joint:
        try:
            chol = linalg.cholesky(s, lower=True)
        except linalg.LinAlgError as exc:
            raise OptimiserError("kelly_fractions: the covariance is not positive definite; Σ⁻¹μ does not exist "
                                 "(drop a redundant instrument or lengthen the window)") from exc
        target = fraction * linalg.solve_triangular(chol, m, lower=True)
        if np.isinf(hi) and np.isinf(lo):
            f = linalg.solve_triangular(chol.T, target, lower=False)  # c Σ⁻¹μ
        else:
            f = optimize.lsq_linear(chol.T, target, bounds=(lo, hi), method="bvls", tol=1e-12).x
    else:
        f = np.clip(fraction * m / np.diag(s), lo, hi)
    gross = float(np.abs(f).sum())
    if max_gross is not None and gross > max_gross:
        f = f * (max_gross / gross)
    return pd.Series(f, index=mu.index.copy(), name="kelly_fraction")


def kelly_weights(fractions: pd.Series) -> pd.Series:
    """Instrument weights from Kelly fractions: ``w = f / Σ|f|`` (shares of the risk budget).

    The vol target and the IDM set the total risk; see the module docstring for why the level of
    ``f`` is dropped. All fractions 0 (no instrument worth holding) give all weights 0.

    Parameters
    ----------
    fractions : Series, index instruments
        :func:`kelly_fractions`.

    Returns
    -------
    Series, index of ``fractions``, name ``"weight"``
        ``Σ|w| = 1`` (``Σw = 1`` when long-only), or all 0.

    Raises
    ------
    OptimiserError
        A fraction is not finite.
    """
    f = fractions.to_numpy(dtype=float)
    if not np.all(np.isfinite(f)):
        raise OptimiserError(f"kelly_weights: fractions must be finite, got {fractions.to_dict()}")
    gross = np.abs(f).sum()
    w = f / gross if gross > 0 else np.zeros_like(f)
    return pd.Series(w, index=fractions.index.copy(), name="weight")


# --------------------------------------------------------------------------------------------------
# Mean-variance and Black-Litterman (skfolio)
# --------------------------------------------------------------------------------------------------


def mean_variance_weights(
    mu: pd.Series,
    cov: pd.DataFrame,
    objective: str,
    budget: float,
    min_weight: float,
    max_weight: float,
    risk_aversion: float = 1.0,
) -> pd.Series:
    """Mean-variance weights by skfolio's ``MeanRisk`` (risk measure: variance) on given moments.

    ``max_sharpe`` maximises ``μ'w / sqrt(w'Σw)``, ``max_utility`` ``μ'w - λ w'Σw`` (``λ =
    risk_aversion``), ``min_variance`` minimises ``w'Σw``; all subject to ``Σw = budget`` and
    ``min_weight <= w_i <= max_weight``. An objective without a solution (maximum Sharpe when no
    expected return is positive; a solver failure) falls back to the minimum-variance portfolio under
    the same constraints. Two-asset closed form (the tests): the minimum-variance weight of asset 1 is
    ``(σ2² - σ12) / (σ1² + σ2² - 2σ12)``.

    Parameters
    ----------
    mu : Series, index instruments
        Annualised expected returns (:func:`annualised_moments`, or a Black-Litterman posterior).
    cov : DataFrame, index and columns the instruments of ``mu``
        Annualised covariance.
    objective : str
        One of :data:`OBJECTIVES`.
    budget, min_weight, max_weight : float
        Sum of the weights and the bounds of each (``MeanVarianceConfig``).
    risk_aversion : float
        ``λ`` of ``max_utility`` (> 0).

    Returns
    -------
    Series, index of ``mu``, name ``"weight"``
        Weights summing to ``budget``.

    Raises
    ------
    OptimiserError
        Unknown objective, labels or values not valid, constraints that no weights satisfy
        (``n x min_weight > budget`` or ``n x max_weight < budget``), or even the minimum-variance
        problem fails.

    Notes
    -----
    Markowitz (1952); skfolio ``skfolio.optimization.MeanRisk``.
    """
    m, s = _checked(mu, cov, "mean_variance_weights")
    _check_constraints(len(m), objective, budget, min_weight, max_weight, "mean_variance_weights")
    if not risk_aversion > 0:
        raise OptimiserError(f"mean_variance_weights: risk_aversion must be > 0, got {risk_aversion}")
    names = [str(n) for n in mu.index]
    w = _mean_risk(m, s, names, objective, budget, min_weight, max_weight, risk_aversion)
    return pd.Series(w, index=mu.index.copy(), name="weight")


def black_litterman_moments(
    cov: pd.DataFrame,
    reference_weights: pd.Series,
    views: Sequence[str],
    tau: float = 0.05,
    risk_aversion: float = 2.5,
    view_confidences: Sequence[float] | None = None,
) -> tuple[pd.Series, pd.DataFrame, pd.Series]:
    """Black-Litterman posterior moments by skfolio's ``BlackLitterman`` prior.

    The equilibrium prior is ``π = δ Σ w_ref`` (``δ = risk_aversion``); the views ``P μ = Q`` (strings
    such as ``"A - B == 0.02"``, on annualised returns) have the uncertainty ``Ω = diag(τ P Σ P')``
    (He & Litterman 1999), or Idzorek's from ``view_confidences``. Posterior (skfolio's form, equal to
    He & Litterman's ``[(τΣ)⁻¹ + P'Ω⁻¹P]⁻¹ [(τΣ)⁻¹π + P'Ω⁻¹Q]``):

        ``μ_BL = π + τΣP' (PτΣP' + Ω)⁻¹ (Q - Pπ)``,  ``Σ_BL = Σ + τΣ - τΣP' (PτΣP' + Ω)⁻¹ PτΣ``.

    No views: ``μ_BL = π``, ``Σ_BL = (1 + τ) Σ``.

    Parameters
    ----------
    cov : DataFrame, index and columns instruments
        Annualised covariance (the prior's).
    reference_weights : Series, index the instruments of ``cov``
        ``w_ref``, e.g. the window's ERC weights (summing to 1).
    views : sequence of str
        skfolio view equations naming instruments of ``cov`` (absolute ``"KO == 0.3"`` or relative).
    tau, risk_aversion : float
        ``τ`` and ``δ`` (> 0).
    view_confidences : sequence of float, optional
        One confidence in [0, 1] per view (Idzorek 2005).

    Returns
    -------
    (Series, DataFrame, Series)
        Posterior ``μ_BL`` (name ``"mu"``), posterior ``Σ_BL``, and the prior ``π`` (name ``"pi"``).

    Raises
    ------
    OptimiserError
        A view that does not parse or names an instrument not in ``cov``; confidences not one per
        view; bad labels or values; ``tau`` or ``risk_aversion`` not > 0.
    """
    w_ref, s = _checked(reference_weights, cov, "black_litterman_moments")
    if not (tau > 0 and risk_aversion > 0):
        raise OptimiserError(f"black_litterman_moments: tau and risk_aversion must be > 0, got {tau}, {risk_aversion}")
    names = [str(n) for n in cov.index]
    views = list(views)
    check_views(views, names)
    if view_confidences is not None and len(view_confidences) != len(views):
        raise OptimiserError(f"black_litterman_moments: {len(view_confidences)} view_confidences for {len(views)} views")
    pi = risk_aversion * s @ w_ref
    if views:
        from skfolio.prior import BlackLitterman

        bl = BlackLitterman(views=views, prior_estimator=_moments_prior()(pi, s), tau=tau,
                            view_confidences=None if view_confidences is None else list(view_confidences))
        bl.fit(_placeholder_returns(names))
        post_mu, post_cov = bl.return_distribution_.mu, bl.return_distribution_.covariance
    else:
        post_mu, post_cov = pi, (1.0 + tau) * s
    return (pd.Series(post_mu, index=cov.index.copy(), name="mu"),
            pd.DataFrame(post_cov, index=cov.index.copy(), columns=cov.columns.copy()),
            pd.Series(pi, index=cov.index.copy(), name="pi"))


def check_views(views: Sequence[str], instruments: Sequence[str]) -> None:
    """Raise :class:`OptimiserError` naming the first view that does not parse against ``instruments``."""
    from skfolio.utils.equations import equations_to_matrix

    groups = np.asarray([[str(i) for i in instruments]])
    for view in views:
        try:
            _, _, a_ineq, _ = equations_to_matrix(groups, np.asarray([view]), sum_to_one=True,
                                                  raise_if_group_missing=True, names=("instruments", "views"))
        except Exception as exc:  # skfolio raises its own error types for each kind of bad string
            raise OptimiserError(f"Black-Litterman view {view!r}: {exc} (instruments: {list(instruments)})") from exc
        if len(a_ineq):
            raise OptimiserError(f"Black-Litterman view {view!r}: a view is an equation (==), not an inequality")


def applicable_views(views: Sequence[str], instruments: Sequence[str]) -> list[int]:
    """Positions of the views that name only instruments in ``instruments`` (the others are left out
    of an estimate made before an instrument they name has enough history)."""
    from skfolio.exceptions import GroupNotFoundError
    from skfolio.utils.equations import equations_to_matrix

    groups = np.asarray([[str(i) for i in instruments]])
    keep = []
    for k, view in enumerate(views):
        try:
            equations_to_matrix(groups, np.asarray([view]), sum_to_one=True, raise_if_group_missing=True)
        except GroupNotFoundError:  # an instrument of the view is missing here (the views were checked up front)
            pass
        else:
            keep.append(k)
    return keep


# --------------------------------------------------------------------------------------------------
# Efficient frontier
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EfficientFrontier:
    """The mean-variance frontier of one estimation window, with portfolios and instruments on it.

    Attributes
    ----------
    frontier : DataFrame, columns ``vol, expected_return``
        One row per frontier portfolio, from minimum variance to maximum return; annualised, as
        fractions (positions at 100% annual vol: the returns are Sharpe ratios).
    portfolios : DataFrame, index portfolio name, columns ``vol, expected_return``
        The marked portfolios (e.g. ``erc`` and the configured method).
    instruments : DataFrame, index instrument, columns ``vol, expected_return``
        Each instrument held alone.
    estimated_at : Timestamp
        The last session of the window.
    constraints : str
        The frontier's constraints, for the caption.
    """

    frontier: pd.DataFrame
    portfolios: pd.DataFrame
    instruments: pd.DataFrame
    estimated_at: pd.Timestamp
    constraints: str


def efficient_frontier(
    mu: pd.Series,
    cov: pd.DataFrame,
    points: int,
    budget: float = 1.0,
    min_weight: float = 0.0,
    max_weight: float = 1.0,
    portfolios: Mapping[str, pd.Series] | None = None,
    estimated_at: pd.Timestamp | None = None,
) -> EfficientFrontier:
    """The mean-variance efficient frontier by skfolio's ``MeanRisk(efficient_frontier_size=points)``.

    Each point is a portfolio minimising ``w'Σw`` for a target return between the minimum-variance
    portfolio's and the largest reachable; risk = ``sqrt(w'Σw)``, return = ``μ'w``.

    Parameters
    ----------
    mu, cov : Series, DataFrame
        Annualised moments (:func:`annualised_moments`).
    points : int
        Number of frontier portfolios (>= 2).
    budget, min_weight, max_weight : float
        Constraints of the frontier portfolios.
    portfolios : mapping name -> Series of weights (index instruments of ``mu``), optional
        Portfolios to place on the chart (missing instruments count as 0).
    estimated_at : Timestamp, optional
        End of the window, carried to the result.

    Returns
    -------
    EfficientFrontier

    Raises
    ------
    OptimiserError
        ``points < 2``, bad labels or values, infeasible constraints, or a solver failure.
    """
    m, s = _checked(mu, cov, "efficient_frontier")
    if points < 2:
        raise OptimiserError(f"efficient_frontier: points must be >= 2, got {points}")
    _check_constraints(len(m), "min_variance", budget, min_weight, max_weight, "efficient_frontier")
    from skfolio.exceptions import OptimizationError
    from skfolio.measures import RiskMeasure
    from skfolio.optimization import MeanRisk

    model = MeanRisk(risk_measure=RiskMeasure.VARIANCE, efficient_frontier_size=points,
                     prior_estimator=_moments_prior()(m, s), budget=budget, min_weights=min_weight,
                     max_weights=max_weight)
    try:
        model.fit(_placeholder_returns([str(n) for n in mu.index]))
    except (OptimizationError, ValueError) as exc:
        raise OptimiserError(f"efficient_frontier: skfolio MeanRisk failed: {exc}") from exc
    w = np.atleast_2d(np.asarray(model.weights_, dtype=float))
    frontier = pd.DataFrame({"vol": np.sqrt(np.einsum("ki,ij,kj->k", w, s, w)), "expected_return": w @ m})
    marked = {name: _risk_return(weights.reindex(mu.index).fillna(0.0).to_numpy(dtype=float), m, s)
              for name, weights in (portfolios or {}).items()}
    inst = pd.DataFrame({"vol": np.sqrt(np.diag(s)), "expected_return": m}, index=mu.index.copy())
    caption = f"Σw = {budget:g}, {min_weight:g} <= w_i <= {max_weight:g}"
    return EfficientFrontier(
        frontier=frontier,
        portfolios=pd.DataFrame.from_dict(marked, orient="index", columns=["vol", "expected_return"]),
        instruments=inst.rename_axis("instrument"),
        estimated_at=pd.Timestamp(estimated_at) if estimated_at is not None else pd.NaT,
        constraints=caption,
    )


# --------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------


def _risk_return(w: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> tuple[float, float]:
    return float(np.sqrt(max(w @ cov @ w, 0.0))), float(mu @ w)


def _check_constraints(n: int, objective: str, budget: float, lo: float, hi: float, where: str) -> None:
    if objective not in OBJECTIVES:
        raise OptimiserError(f"{where}: unknown objective {objective!r}; use one of {list(OBJECTIVES)}")
    if not (np.isfinite([budget, lo, hi]).all() and lo <= hi):
        raise OptimiserError(f"{where}: need finite bounds with min_weight <= max_weight, got {lo}, {hi}")
    if not n * lo <= budget + 1e-12 or not n * hi >= budget - 1e-12:
        raise OptimiserError(
            f"{where}: no weights of {n} instruments within [{lo:g}, {hi:g}] sum to the budget {budget:g}; "
            "widen min_weight / max_weight (portfolio.optimiser.mean_variance) or the universe"
        )


def _mean_risk(mu: np.ndarray, cov: np.ndarray, names: list[str], objective: str, budget: float, lo: float,
               hi: float, risk_aversion: float) -> np.ndarray:
    """skfolio ``MeanRisk`` weights; an objective without a solution falls back to minimum variance."""
    from skfolio.exceptions import OptimizationError
    from skfolio.measures import RiskMeasure
    from skfolio.optimization import MeanRisk, ObjectiveFunction

    functions = {"max_sharpe": ObjectiveFunction.MAXIMIZE_RATIO, "max_utility": ObjectiveFunction.MAXIMIZE_UTILITY,
                 "min_variance": ObjectiveFunction.MINIMIZE_RISK}
    x = _placeholder_returns(names)
    failure = None
    for name in dict.fromkeys([objective, "min_variance"]):
        model = MeanRisk(objective_function=functions[name], risk_measure=RiskMeasure.VARIANCE,
                         risk_aversion=risk_aversion, prior_estimator=_moments_prior()(mu, cov), budget=budget,
                         min_weights=lo, max_weights=hi)
        try:
            model.fit(x)
        except (OptimizationError, ValueError) as exc:  # ValueError: max Sharpe with no positive return
            failure = exc
            continue
        w = np.asarray(model.weights_, dtype=float)
        if np.all(np.isfinite(w)):
            return np.clip(w, lo, hi)  # the solver's tolerance (a -1e-10 is a 0 of a long-only bound)
    raise OptimiserError(f"mean-variance ({objective}) failed and so did minimum variance: {failure}")


def _placeholder_returns(names: list[str]) -> pd.DataFrame:
    """The ``X`` skfolio's ``fit`` needs for the asset names and count; the fixed prior supplies the
    moments, and the variance objectives use nothing else."""
    return pd.DataFrame(np.zeros((2, len(names))), columns=names)


@functools.cache
def _moments_prior():
    """skfolio prior estimator class returning given moments (built on first use: skfolio is imported
    lazily)."""
    import sklearn.utils.validation as skv
    from skfolio.prior import BasePrior, ReturnDistribution

    class MomentsPrior(BasePrior):
        """A prior whose ``return_distribution_`` has the given ``mu`` and ``covariance``."""

        def __init__(self, mu=None, covariance=None) -> None:
            self.mu = mu
            self.covariance = covariance

        def fit(self, X, y=None, **fit_params):
            returns = skv.validate_data(self, X)
            self.return_distribution_ = ReturnDistribution(
                mu=np.asarray(self.mu, dtype=float), covariance=np.asarray(self.covariance, dtype=float),
                returns=returns)
            return self

    return MomentsPrior


def _checked(vector: pd.Series, matrix: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(matrix, pd.DataFrame) or not matrix.index.equals(matrix.columns):
        raise OptimiserError(f"{where}: the covariance must be a square DataFrame with the same index and columns")
    if not vector.index.equals(matrix.index):
        raise OptimiserError(f"{where}: the vector's instruments {list(vector.index)} differ from the covariance's "
                             f"{list(matrix.index)}")
    v, m = vector.to_numpy(dtype=float), matrix.to_numpy(dtype=float)
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(m))):
        raise OptimiserError(f"{where}: NaN/inf in the inputs for {list(map(str, vector.index))}")
    if len(v) == 0:
        raise OptimiserError(f"{where}: no instruments")
    return v, 0.5 * (m + m.T)
