"""Forecasts per rule variation and instrument: raw, scaled and capped (ST ch. 7, carver.md §2.5).

A raw forecast comes from a rule (:mod:`pipeline.rules`). Multiplying by the rule variation's
forecast scalar puts it on Carver's common scale (average absolute value 10); capping at +/-20
limits any one rule's bet. :class:`ForecastSet` holds the three stages together in wide frames
with a ``(rule, instrument)`` column MultiIndex and converts to and from the long table the lake
stores.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import RulesConfig
from pipeline.rules import breakout, ewmac

#: Carver's target average absolute forecast (ST ch. 7; pst ``average_absolute_forecast``).
AVERAGE_ABS_FORECAST = 10.0

COLUMN_LEVELS = ("rule", "instrument")
LONG_COLUMNS = ["session", "instrument", "rule", "raw", "scaled", "capped"]
_STAGES = ("raw", "scaled", "capped")


class ForecastError(ValueError):
    """Forecast input is malformed; the message says which and how to fix it."""


def rule_sort_key(rule: str) -> tuple:
    """Natural sort key of a rule variation name: ``breakout20`` before ``breakout160``,
    ``ewmac2_8`` before ``ewmac16_64`` (digits compare as numbers)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|\D+", rule))


def _canonical_columns(columns: pd.MultiIndex) -> pd.MultiIndex:
    ordered = sorted(columns, key=lambda rc: (rule_sort_key(str(rc[0])), str(rc[1])))
    return pd.MultiIndex.from_tuples(ordered, names=list(COLUMN_LEVELS))


def _check_multi(frame: pd.DataFrame, name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ForecastError(f"{name}: expected a DataFrame, got {type(frame).__name__}")
    if not isinstance(frame.index, pd.DatetimeIndex) or not (
        frame.index.is_monotonic_increasing and frame.index.is_unique
    ):
        raise ForecastError(f"{name}: index must be an ascending, unique DatetimeIndex of sessions")
    if not isinstance(frame.columns, pd.MultiIndex) or frame.columns.nlevels != 2:
        raise ForecastError(
            f"{name}: columns must be a 2-level MultiIndex (rule, instrument); "
            "build it with pd.concat({rule: wide_frame}, axis=1, names=['rule', 'instrument'])"
        )
    if not frame.columns.is_unique:
        raise ForecastError(f"{name}: duplicate (rule, instrument) columns")


def scale_and_cap(raw: pd.DataFrame, scalar: float, cap: float = 20.0) -> pd.DataFrame:
    """Scale a raw forecast and cap it: ``clip(raw * scalar, -cap, cap)``.

    Parameters
    ----------
    raw : DataFrame, index ``session``, columns instruments (or any columns)
        Raw forecast of one rule variation (e.g. from :func:`pipeline.rules.ewmac`).
    scalar : float
        Forecast scalar, > 0, chosen so the average |scaled forecast| is 10.
    cap : float
        Absolute cap, > 0 (ST ch. 7: 20).

    Returns
    -------
    DataFrame, same shape as ``raw``
        Capped forecast in forecast units (10 = average conviction). NaN stays NaN.

    Raises
    ------
    ForecastError
        ``scalar`` or ``cap`` not positive and finite.

    Notes
    -----
    Source: ST ch. 7; pst ``systems/forecast_scale_cap.py`` (floor = -cap).
    """
    if not (np.isfinite(scalar) and scalar > 0):
        raise ForecastError(f"scale_and_cap: forecast scalar must be positive and finite, got {scalar}")
    if not (np.isfinite(cap) and cap > 0):
        raise ForecastError(f"scale_and_cap: cap must be positive and finite, got {cap}")
    return (raw * scalar).clip(lower=-cap, upper=cap)


@dataclass(frozen=True)
class ForecastSet:
    """Raw, scaled and capped forecasts of every rule variation and instrument.

    Attributes
    ----------
    raw, scaled, capped : DataFrame, index ``session`` (ascending DatetimeIndex), columns
        MultiIndex ``(rule, instrument)``
        The three stages, all with identical index and columns. Columns are kept in canonical
        order: rules in natural order (``breakout10, ..., breakout320, ewmac2_8, ...,
        ewmac64_256``), instruments alphabetical within a rule. NaN = no forecast.

    Raises
    ------
    ForecastError
        On construction, if a frame is malformed or the three frames disagree in index or columns.
    """

    raw: pd.DataFrame
    scaled: pd.DataFrame
    capped: pd.DataFrame

    def __post_init__(self) -> None:
        for stage in _STAGES:
            _check_multi(getattr(self, stage), f"ForecastSet.{stage}")
        for stage in ("scaled", "capped"):
            frame = getattr(self, stage)
            if not (frame.index.equals(self.raw.index) and frame.columns.equals(self.raw.columns)):
                raise ForecastError(f"ForecastSet: {stage} must have the same sessions and columns as raw")
        columns = _canonical_columns(self.raw.columns)
        for stage in _STAGES:
            frame = getattr(self, stage).reindex(columns=columns).astype(float)
            # a plain session index (no freq) so a frame rebuilt from the long table compares equal
            frame.index = pd.DatetimeIndex(frame.index.to_numpy(), name="session")
            object.__setattr__(self, stage, frame)

    @property
    def rules(self) -> list[str]:
        """Rule variation names, in canonical order."""
        return list(dict.fromkeys(self.raw.columns.get_level_values("rule")))

    @property
    def instruments(self) -> list[str]:
        """Instrument symbols, alphabetical."""
        return sorted(set(self.raw.columns.get_level_values("instrument")))

    def to_long(self) -> pd.DataFrame:
        """One row per session, instrument and rule that has a raw forecast.

        Returns
        -------
        DataFrame with columns ``["session", "instrument", "rule", "raw", "scaled", "capped"]``
            Sorted by session, instrument, then rule in natural order; RangeIndex. Rows where
            ``raw`` is NaN are dropped.
        """
        columns = self.raw.columns
        # Instrument-major column order: flattening row by row then yields session, instrument, rule.
        order = sorted(range(len(columns)), key=lambda j: (str(columns[j][1]), rule_sort_key(str(columns[j][0]))))
        n_sessions, n_columns = self.raw.shape
        raw = self.raw.to_numpy()[:, order].reshape(-1)
        keep = np.flatnonzero(~np.isnan(raw))
        session_pos, column_pos = np.divmod(keep, n_columns)
        # take() from the few distinct labels is much faster than building a million strings
        instruments = pd.array(columns.get_level_values("instrument")[order].astype(str), dtype="str")
        rules = pd.array(columns.get_level_values("rule")[order].astype(str), dtype="str")
        data = {
            "session": self.raw.index.take(session_pos).to_numpy(),
            "instrument": instruments.take(column_pos),
            "rule": rules.take(column_pos),
            "raw": raw[keep],
        }
        for stage in ("scaled", "capped"):
            data[stage] = getattr(self, stage).to_numpy()[:, order].reshape(-1)[keep]
        return pd.DataFrame(data, columns=LONG_COLUMNS)

    @classmethod
    def from_long(cls, df: pd.DataFrame) -> "ForecastSet":
        """Rebuild the wide frames from :meth:`to_long` output (any row order).

        ``ForecastSet.from_long(fs.to_long())`` equals ``fs`` on the sessions and columns that
        have at least one raw forecast (the long table cannot carry all-NaN sessions/columns);
        ``ForecastSet.from_long(long).to_long()`` equals ``long`` sorted.

        Raises
        ------
        ForecastError
            Missing columns or duplicate (session, instrument, rule) rows.
        """
        missing = [c for c in LONG_COLUMNS if c not in df.columns]
        if missing:
            raise ForecastError(f"ForecastSet.from_long: missing columns {missing}; expected {LONG_COLUMNS}")
        session_codes, sessions = pd.factorize(df["session"], sort=True)
        rule_codes, rule_names = pd.factorize(df["rule"])
        instrument_codes, instrument_names = pd.factorize(df["instrument"])
        if (session_codes < 0).any() or (rule_codes < 0).any() or (instrument_codes < 0).any():
            raise ForecastError("ForecastSet.from_long: session, instrument and rule must not be missing")
        pair = rule_codes.astype(np.int64) * len(instrument_names) + instrument_codes
        # the (rule, instrument) pairs present, via a lookup table (the pair space is small)
        pair_space = len(rule_names) * len(instrument_names)
        pairs = np.flatnonzero(np.bincount(pair, minlength=pair_space))
        lookup = np.full(pair_space, -1, dtype=np.int64)
        lookup[pairs] = np.arange(pairs.size)
        column_codes = lookup[pair]
        columns = pd.MultiIndex.from_arrays(
            [
                np.asarray(rule_names, dtype=object)[pairs // len(instrument_names)],
                np.asarray(instrument_names, dtype=object)[pairs % len(instrument_names)],
            ],
            names=list(COLUMN_LEVELS),
        )
        cell = session_codes.astype(np.int64) * len(columns) + column_codes
        if cell.size and np.bincount(cell).max() > 1:
            dupes = df.loc[pd.Series(cell).duplicated(keep=False).to_numpy(), ["session", "instrument", "rule"]]
            raise ForecastError(
                "ForecastSet.from_long: duplicate (session, instrument, rule) rows, "
                f"e.g. {dupes.head(3).to_dict('records')}"
            )
        index = pd.DatetimeIndex(sessions, name="session")
        frames = {}
        for stage in _STAGES:
            values = np.full((len(index), len(columns)), np.nan)
            values[session_codes, column_codes] = df[stage].to_numpy(dtype=float)
            frames[stage] = pd.DataFrame(values, index=index, columns=columns)
        return cls(**frames)

def compute_forecasts(prices: pd.DataFrame, vol: pd.DataFrame, rules: RulesConfig) -> ForecastSet:
    """Raw, scaled and capped forecasts of every rule variation configured in ``rules``.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (ascending DatetimeIndex), columns instruments
        Back-adjusted prices in price points; NaN = no price.
    vol : DataFrame, index ``session``, columns instruments
        Daily vol in price points (:func:`pipeline.volatility.robust_vol`), used by EWMAC.
    rules : RulesConfig
        EWMAC ``(fast, slow)`` pairs, breakout lookbacks, ``forecast_scalars[rule_name]`` and
        ``forecast_cap``. Rule names are ``rules.rule_names`` (``ewmac8_32``, ``breakout40``).

    Returns
    -------
    ForecastSet
        Index = ``prices.index``; columns ``(rule, instrument)`` for every rule x instrument.

    Raises
    ------
    ForecastError, RuleError
        Malformed inputs (see :func:`pipeline.rules.ewmac` / :func:`pipeline.rules.breakout`).

    Notes
    -----
    Rules: pst ``systems/provided/rules/ewmac.py`` and ``breakout.py``; scaling and capping:
    ST ch. 7, pst ``systems/forecast_scale_cap.py``.
    """
    raw: dict[str, pd.DataFrame] = {}
    for fast, slow in rules.ewmac:
        raw[f"ewmac{fast}_{slow}"] = ewmac(prices, vol, fast, slow)
    for lookback in rules.breakout:
        raw[f"breakout{lookback}"] = breakout(prices, lookback)
    if not raw:
        raise ForecastError(
            "compute_forecasts: no rule variations configured (rules.ewmac and rules.breakout are empty)"
        )
    raw_frame = pd.concat(raw, axis=1, names=list(COLUMN_LEVELS))
    scaled_frame = pd.concat(
        {name: frame * rules.forecast_scalars[name] for name, frame in raw.items()}, axis=1, names=list(COLUMN_LEVELS)
    )
    capped_frame = pd.concat(
        {
            name: scale_and_cap(frame, rules.forecast_scalars[name], rules.forecast_cap)
            for name, frame in raw.items()
        },
        axis=1,
        names=list(COLUMN_LEVELS),
    )
    return ForecastSet(raw=raw_frame, scaled=scaled_frame, capped=capped_frame)


def estimate_forecast_scalars(
    raw: ForecastSet | pd.DataFrame, target_abs: float = AVERAGE_ABS_FORECAST, min_periods: int = 500
) -> pd.DataFrame:
    """Forecast scalar per rule variation over time, pooled across instruments, no look-ahead.

    For each rule: ``x_t = median_i |raw_{t,i}|`` (cross-sectional median over the instruments
    with a non-zero raw forecast at session t; pst treats exact zeros as "no forecast"), then
    ``scalar_t = target_abs / mean(x_1..x_t)`` (expanding mean over sessions with a median).

    Parameters
    ----------
    raw : ForecastSet or DataFrame (index ``session``, columns MultiIndex ``(rule, instrument)``)
        Raw forecasts; a ForecastSet's ``raw`` frame is used.
    target_abs : float
        Target average absolute forecast (10).
    min_periods : int
        Sessions with a median needed before the first estimate (pst: 500).

    Returns
    -------
    DataFrame, index ``session``, columns ``rule`` (canonical order)
        Forecast scalar (dimensionless multiplier). NaN until ``min_periods`` sessions with a
        forecast exist; **not backfilled** (pst backfills the first estimate, which is look-ahead).

    Raises
    ------
    ForecastError
        Malformed ``raw`` or non-positive ``target_abs`` / ``min_periods``.

    Notes
    -----
    Source: pst ``sysquant/estimators/forecast_scalar.py`` (pooled, window 250000 ~ expanding),
    carver.md §2.5. The scalar of a single instrument is ``target_abs / mean |raw|``; with
    several instruments the cross-sectional median makes it robust to one wild instrument.
    pst also forward-fills each instrument's forecast; not done here, so a delisted instrument
    leaves the cross-section instead of staying in it forever.
    """
    frame = raw.raw if isinstance(raw, ForecastSet) else raw
    _check_multi(frame, "estimate_forecast_scalars raw")
    if not (target_abs > 0 and min_periods >= 1):
        raise ForecastError(
            f"estimate_forecast_scalars: need target_abs > 0 and min_periods >= 1, got {target_abs}, {min_periods}"
        )
    frame = frame.reindex(columns=_canonical_columns(frame.columns)).astype(float)
    abs_raw = frame.abs().replace(0.0, np.nan)
    # One nanmedian per rule over its instruments' columns (a loop over rules, not rows; the
    # transpose-groupby-transpose it replaces cost seconds on 238 instruments).
    rules = abs_raw.columns.get_level_values("rule")
    values = abs_raw.to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN sessions give NaN, as intended
        medians = pd.DataFrame(
            {rule: np.nanmedian(values[:, np.asarray(rules == rule)], axis=1) for rule in pd.unique(rules)},
            index=abs_raw.index,
        )
    mean_abs = medians.expanding(min_periods=min_periods).mean()
    scalars = target_abs / mean_abs
    scalars.columns.name = "rule"
    scalars.index.name = "session"
    return scalars


def rescale(
    fset: ForecastSet,
    scalars: pd.DataFrame,
    cap: float = 20.0,
    fallback: dict[str, float] | None = None,
) -> ForecastSet:
    """Scale raw forecasts by time-varying forecast scalars, then cap.

    Parameters
    ----------
    fset : ForecastSet
        Raw forecasts (the ``raw`` frame is used; ``scaled``/``capped`` are replaced).
    scalars : DataFrame
        Index session, columns rule: the scalar to apply at each session, estimated with data up
        to that session only (:func:`estimate_forecast_scalars`); forward-filled onto the
        forecasts' sessions.
    cap : float
        Absolute cap (ST ch. 7: 20).
    fallback : dict, optional
        Fixed scalar per rule used where no estimate exists yet (the first ``min_periods``
        sessions); without it those forecasts are NaN. pysystemtrade instead backfills the first
        estimate, which looks ahead; this keeps the published value until an estimate exists.

    Returns
    -------
    ForecastSet
        Same raw, ``scaled = raw x scalar_t``, ``capped = clip(scaled, -cap, cap)``.

    Raises
    ------
    ForecastError
        A rule of ``fset`` has neither an estimated column nor a fallback scalar.
    """
    raw = fset.raw
    rules = raw.columns.get_level_values("rule")
    missing = sorted(set(rules) - set(scalars.columns) - set(fallback or {}))
    if missing:
        raise ForecastError(f"rescale: no scalar (estimated or fallback) for rules {missing}")
    by_session = scalars.reindex(columns=sorted(set(rules))).reindex(raw.index, method="ffill")
    if fallback:
        by_session = by_session.fillna(pd.Series(fallback).reindex(by_session.columns))
    factors = by_session.reindex(columns=rules)
    factors.columns = raw.columns
    scaled = raw * factors
    capped = scaled.clip(-cap, cap)
    return ForecastSet(raw=raw, scaled=scaled, capped=capped)


def floor_long_only(capped: pd.DataFrame, long_only: list[str]) -> pd.DataFrame:
    """Floor the forecasts of long-only instruments at 0 (pysystemtrade ``forecast_floor: 0``).

    ``capped`` has a column MultiIndex (rule, instrument); other instruments are unchanged.
    """
    if not long_only:
        return capped
    out = capped.copy()
    cols = out.columns.get_level_values("instrument").isin(long_only)
    out.loc[:, cols] = out.loc[:, cols].clip(lower=0.0)
    return out
