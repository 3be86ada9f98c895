"""Forecasts per rule variation and instrument: raw, scaled and capped (ST ch. 7, carver.md §2.5).

A raw forecast comes from a rule (:mod:`pipeline.signals.rules`). Multiplying by the rule variation's
forecast scalar puts it on Carver's common scale (average absolute value 10); capping at +/-20
limits any one rule's bet. :class:`ForecastSet` holds the three stages together in wide frames
with a ``(rule, instrument)`` column MultiIndex and converts to and from the long table the lake
stores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import RulesConfig
from pipeline.quality.stale import mask_stale_forecasts, stale_mask
from pipeline.signals.rules import breakout_set, ewmac_set

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
        Raw forecast of one rule variation (e.g. from :func:`pipeline.signals.rules.ewmac`).
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
    _check_scalar_and_cap(scalar, cap, "scale_and_cap")
    return (raw * scalar).clip(lower=-cap, upper=cap)


def _check_scalar_and_cap(scalar: float, cap: float, where: str) -> None:
    if not (np.isfinite(scalar) and scalar > 0):
        raise ForecastError(f"{where}: forecast scalar must be positive and finite, got {scalar}")
    if not (np.isfinite(cap) and cap > 0):
        raise ForecastError(f"{where}: cap must be positive and finite, got {cap}")


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
        # a plain session index (no freq) so a frame rebuilt from the long table compares equal
        index = pd.DatetimeIndex(self.raw.index.to_numpy(), name="session")
        done: dict[int, pd.DataFrame] = {}  # the same frame passed as several stages is converted once
        for stage in _STAGES:
            given = getattr(self, stage)
            if id(given) not in done:
                same = given.columns.equals(columns)
                frame = given.set_axis(columns, axis=1) if same else given.reindex(columns=columns)
                done[id(given)] = frame.astype(float).set_axis(index, axis=0)  # no data copy (copy on write)
            object.__setattr__(self, stage, done[id(given)])

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
        n_columns = self.raw.shape[1]
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
    def from_long(cls, df: pd.DataFrame) -> ForecastSet:
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

def compute_forecasts(
    prices: pd.DataFrame, vol: pd.DataFrame, rules: RulesConfig, extra: dict[str, pd.DataFrame] | None = None
) -> ForecastSet:
    """Raw, scaled and capped forecasts of every rule variation configured in ``rules``.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (ascending DatetimeIndex), columns instruments
        Back-adjusted prices in price points; NaN = no price.
    vol : DataFrame, index ``session``, columns instruments
        Daily vol in price points (:func:`pipeline.signals.volatility.robust_vol`), used by EWMAC.
    rules : RulesConfig
        EWMAC ``(fast, slow)`` pairs, breakout lookbacks, ``forecast_scalars[rule_name]`` and
        ``forecast_cap``. Rule names are ``rules.rule_names`` (``ewmac8_32``, ``breakout40``).
    extra : dict rule name -> DataFrame (index ``prices.index``, columns instruments), optional
        Raw forecasts of rules computed from other data, e.g. the carry variations
        (:func:`pipeline.signals.carry.carry_variations`); scaled by ``rules.forecast_scalars[name]``.

    Returns
    -------
    ForecastSet
        Index = ``prices.index``; columns ``(rule, instrument)`` for every rule x instrument (an
        ``extra`` rule: its own instruments).

    Raises
    ------
    ForecastError, RuleError
        Malformed inputs (see :func:`pipeline.signals.rules.ewmac` / :func:`pipeline.signals.rules.breakout`),
        or an ``extra`` rule without a forecast scalar.

    Notes
    -----
    Rules: pst ``systems/provided/rules/ewmac.py`` and ``breakout.py``; scaling and capping:
    ST ch. 7, pst ``systems/forecast_scale_cap.py``.
    """
    raw = raw_forecast_stack(prices, vol, rules, extra)
    names = list(dict.fromkeys(raw.columns.get_level_values("rule")))
    unscaled = [name for name in names if name not in rules.forecast_scalars]
    if unscaled:
        raise ForecastError(f"compute_forecasts: no forecast scalar for rules {unscaled} (rules.forecast_scalars)")
    for name in names:
        _check_scalar_and_cap(rules.forecast_scalars[name], rules.forecast_cap, "compute_forecasts")
    scalars = pd.Series(rules.forecast_scalars).reindex(raw.columns.get_level_values("rule")).to_numpy(dtype=float)
    scaled = raw.to_numpy() * scalars
    capped = np.clip(scaled, -rules.forecast_cap, rules.forecast_cap)

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=raw.index, columns=raw.columns, copy=False)

    return ForecastSet(raw=raw, scaled=frame(scaled), capped=frame(capped))


def raw_forecast_frames(prices: pd.DataFrame, vol: pd.DataFrame, rules: RulesConfig) -> dict[str, pd.DataFrame]:
    """Raw forecast of every rule variation configured in ``rules``, one wide frame each.

    Parameters
    ----------
    prices, vol : DataFrame, index ``session``, columns instruments
        As :func:`compute_forecasts` (prices in price points, daily vol in price points).
    rules : RulesConfig
        EWMAC ``(fast, slow)`` pairs and breakout lookbacks (scalars are not used here).

    Returns
    -------
    dict rule name -> DataFrame (index and columns of ``prices``)
        Raw (unscaled, uncapped) forecasts, e.g. ``"ewmac8_32"``, ``"breakout40"``; EWMAC spans
        shared between speeds are computed once (:func:`pipeline.signals.rules.ewmac_set`).

    Raises
    ------
    ForecastError
        No rule variation configured.
    RuleError
        Malformed inputs (see :func:`pipeline.signals.rules.ewmac` / :func:`pipeline.signals.rules.breakout`).
    """
    frames = {
        f"ewmac{fast}_{slow}": pd.DataFrame(values, index=prices.index, columns=prices.columns, copy=False)
        for (fast, slow), values in ewmac_set(prices, vol, list(rules.ewmac)).items()
    }
    for (lookback, _), frame in breakout_set(prices, [(lookback, None) for lookback in rules.breakout]).items():
        frames[f"breakout{lookback}"] = frame
    if not frames:
        raise ForecastError(
            "compute_forecasts: no rule variations configured (rules.ewmac and rules.breakout are empty)"
        )
    return frames


def raw_forecast_stack(
    prices: pd.DataFrame,
    vol: pd.DataFrame,
    rules: RulesConfig,
    extra: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Raw forecasts of every configured rule variation, plus ``extra`` ones, in one stacked frame.

    Equal to ``stack_forecasts({**raw_forecast_frames(prices, vol, rules), **extra})``, but each
    rule writes straight into its block of one preallocated array: no per-rule frame is kept and
    the stack is not a second copy (for the 2023 futures set's 13 rules each copy is ~340 MB, and
    fresh memory is slow to touch). With :func:`capped_forecasts` ``(..., overwrite_raw=True)``
    the capped forecasts then reuse the same memory.

    Parameters
    ----------
    prices, vol : DataFrame, index ``session``, columns instruments
        As :func:`compute_forecasts` (prices in price points, daily vol in price points).
    rules : RulesConfig
        EWMAC ``(fast, slow)`` pairs and breakout lookbacks (scalars are not used here).
    extra : dict rule name -> DataFrame (index ``prices.index``, columns instruments), optional
        Raw forecasts of other rules computed elsewhere, e.g. ``{"carry": carry_forecast(...)}``;
        a rule may cover fewer instruments than ``prices``.

    Returns
    -------
    DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)`` in canonical order
        Raw (unscaled, uncapped) forecasts; NaN kept.

    Raises
    ------
    ForecastError
        No rule variation at all, an ``extra`` name that is also a configured rule, or an
        ``extra`` frame on other sessions.
    RuleError
        Malformed inputs (see :func:`pipeline.signals.rules.ewmac` / :func:`pipeline.signals.rules.breakout`).
    """
    extra = dict(extra or {})
    ewmac_names = {f"ewmac{fast}_{slow}": (fast, slow) for fast, slow in rules.ewmac}
    breakout_names = {f"breakout{lookback}": (lookback, None) for lookback in rules.breakout}
    clash = sorted(set(extra) & (set(ewmac_names) | set(breakout_names)))
    if clash:
        raise ForecastError(f"raw_forecast_stack: extra rules {clash} are also configured rule variations")
    if not (ewmac_names or breakout_names or extra):
        raise ForecastError(
            "raw_forecast_stack: no rule variations configured (rules.ewmac, rules.breakout and extra are empty)"
        )
    for name, frame in extra.items():
        if not frame.index.equals(prices.index):
            raise ForecastError(f"raw_forecast_stack: extra rule {name} is on different sessions from prices")
    order = sorted(range(prices.shape[1]), key=lambda j: str(prices.columns[j]))
    if order != list(range(prices.shape[1])):  # canonical: instruments alphabetical within a rule
        prices = prices.iloc[:, order]
    extra_orders = {
        name: sorted(range(frame.shape[1]), key=lambda j, c=frame.columns: str(c[j])) for name, frame in extra.items()
    }
    names = sorted([*ewmac_names, *breakout_names, *extra], key=rule_sort_key)
    widths = [len(extra_orders[name]) if name in extra else prices.shape[1] for name in names]
    values = np.empty((len(prices.index), sum(widths)), order="F")
    bounds = dict(zip(names, zip(np.cumsum([0, *widths[:-1]]), np.cumsum(widths))))

    def block(name: str) -> np.ndarray:
        start, stop = bounds[name]
        return values[:, start:stop]

    ewmac_set(prices, vol, list(ewmac_names.values()), out={pair: block(name) for name, pair in ewmac_names.items()})
    breakout_set(
        prices, list(breakout_names.values()), out={pair: block(name) for name, pair in breakout_names.items()}
    )
    for name, frame in extra.items():
        block(name)[...] = frame.to_numpy(dtype=float)[:, extra_orders[name]]
    columns = pd.MultiIndex.from_arrays(
        [
            np.repeat(np.asarray(names, dtype=object), widths),
            np.concatenate(
                [
                    np.asarray(extra[name].columns[extra_orders[name]] if name in extra else prices.columns, dtype=object)
                    for name in names
                ]
            ),
        ],
        names=list(COLUMN_LEVELS),
    )
    return pd.DataFrame(values, index=prices.index, columns=columns, copy=False)


def stack_forecasts(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One wide frame with columns ``(rule, instrument)`` from a wide frame per rule variation.

    The same as ``pd.concat(frames, axis=1, names=["rule", "instrument"])`` put in canonical
    column order (:class:`ForecastSet`), written once into a single array instead of
    concatenated and then reordered (each copy of the 2023 futures set's 13 rules is ~340 MB).

    Parameters
    ----------
    frames : dict rule name -> DataFrame (index ``session``, columns instruments)
        Any stage of forecast (raw, scaled or capped), all on the same sessions; a rule may
        cover fewer instruments than another (e.g. carry only where multiple prices exist).

    Returns
    -------
    DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)`` in canonical order
        Float values of the frames, NaN kept.

    Raises
    ------
    ForecastError
        No frames, or frames on different sessions.
    """
    values, index, columns = _stacked(frames, "stack_forecasts")
    return pd.DataFrame(values, index=index, columns=columns, copy=False)


def _check_frames(frames: dict[str, pd.DataFrame], where: str) -> list[str]:
    """Rule names of ``frames`` in canonical order, after checking they share one session index."""
    if not frames:
        raise ForecastError(f"{where}: no forecast frames given")
    names = sorted(frames, key=rule_sort_key)
    index = frames[names[0]].index
    if not isinstance(index, pd.DatetimeIndex) or not (index.is_monotonic_increasing and index.is_unique):
        raise ForecastError(f"{where}: index must be an ascending, unique DatetimeIndex of sessions")
    for name in names:
        if not frames[name].index.equals(index):
            raise ForecastError(
                f"{where}: {name} is on different sessions from {names[0]}; reindex every rule's "
                "frame to the same sessions first"
            )
    return names


def _stacked(
    frames: dict[str, pd.DataFrame], where: str, factors: pd.DataFrame | None = None
) -> tuple[np.ndarray, pd.Index, pd.MultiIndex]:
    """The frames as one canonical (rule, instrument) array, each rule's block times ``factors[rule]``;
    returns the array (sessions x columns, Fortran order), the sessions and the columns."""
    names = _check_frames(frames, where)
    index = frames[names[0]].index
    orders = {
        name: sorted(range(frames[name].shape[1]), key=lambda j, c=frames[name].columns: str(c[j])) for name in names
    }
    widths = [len(orders[name]) for name in names]
    # Fortran order: pandas keeps a single float block this way without copying it.
    values = np.empty((len(index), sum(widths)), order="F")
    offset = 0
    for name, width in zip(names, widths):
        source, order = frames[name].to_numpy(dtype=float), orders[name]
        if order != list(range(width)):  # columns not yet alphabetical
            source = np.asfortranarray(source[:, order])
        block = values[:, offset : offset + width]
        if factors is None:
            block[...] = source
        else:
            np.multiply(source, factors[name].to_numpy()[:, None], out=block)
        offset += width
    columns = pd.MultiIndex.from_arrays(
        [
            np.repeat(np.asarray(names, dtype=object), widths),
            np.concatenate([np.asarray(frames[name].columns[orders[name]], dtype=object) for name in names]),
        ],
        names=list(COLUMN_LEVELS),
    )
    return values, index, columns


def estimate_forecast_scalars(
    raw: ForecastSet | pd.DataFrame | dict[str, pd.DataFrame],
    target_abs: float = AVERAGE_ABS_FORECAST,
    min_periods: int = 500,
) -> pd.DataFrame:
    """Forecast scalar per rule variation over time, pooled across instruments, no look-ahead.

    For each rule: ``x_t = median_i |raw_{t,i}|`` (cross-sectional median over the instruments
    with a non-zero raw forecast at session t; pst treats exact zeros as "no forecast"), then
    ``scalar_t = target_abs / mean(x_1..x_t)`` (expanding mean over sessions with a median).

    Parameters
    ----------
    raw : ForecastSet, DataFrame (index ``session``, columns MultiIndex ``(rule, instrument)``) or
        dict rule -> DataFrame (index ``session``, columns instruments; all on the same sessions)
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
    if not (target_abs > 0 and min_periods >= 1):
        raise ForecastError(
            f"estimate_forecast_scalars: need target_abs > 0 and min_periods >= 1, got {target_abs}, {min_periods}"
        )
    # One row-wise median per rule over its instruments' columns: a loop over rules, not rows.
    if isinstance(raw, dict):
        names = _check_frames(raw, "estimate_forecast_scalars")
        index = raw[names[0]].index
        medians = pd.DataFrame(
            {name: _row_median_nonzero(raw[name].to_numpy(dtype=float)) for name in names}, index=index
        )
    else:
        frame = raw.raw if isinstance(raw, ForecastSet) else raw
        _check_multi(frame, "estimate_forecast_scalars raw")
        canonical = _canonical_columns(frame.columns)
        if not frame.columns.equals(canonical):
            frame = frame.reindex(columns=canonical)
        values = frame.to_numpy(dtype=float)
        blocks = _rule_blocks(frame.columns.get_level_values("rule"))
        medians = pd.DataFrame(
            {rule: _row_median_nonzero(values[:, block]) for rule, block in blocks}, index=frame.index
        )
    mean_abs = medians.expanding(min_periods=min_periods).mean()
    scalars = target_abs / mean_abs
    scalars.columns.name = "rule"
    scalars.index.name = "session"
    return scalars


def estimate_guarded_scalars(
    closes: pd.DataFrame,
    vol: pd.DataFrame,
    rules: RulesConfig,
    stale_sessions: int = 0,
    min_periods: int = 500,
) -> pd.DataFrame:
    """Forecast scalars estimated on the forecasts that are traded (the ``forecast_scalars`` asset).

    Raw forecasts of every rule variation in ``rules`` (:func:`raw_forecast_stack`); with
    ``stale_sessions`` > 0 the sessions where an instrument's close is stale
    (:func:`pipeline.quality.stale.stale_mask`) are removed **before** estimating, as the ``forecasts``
    asset removes them after scaling, so a market whose flat closes drag its vol towards the
    floor (and its raw forecast towards infinity) cannot move the scalar of the others; then
    :func:`estimate_forecast_scalars`.

    Parameters
    ----------
    closes : DataFrame, index ``session``, columns instruments
        Close (back-adjusted) prices in price points.
    vol : DataFrame, same grid
        Daily vol in price points (computed without the stale closes when the guard is on, as the
        ``volatility`` asset does).
    rules : RulesConfig
        Rule variations (EWMAC pairs, breakout lookbacks).
    stale_sessions : int
        ``stale_guard.sessions``: unchanged closes that make a close stale; 0 = no guard.
    min_periods : int
        Sessions with a median before the first estimate (``rules.min_scalar_periods``, pst 500).

    Returns
    -------
    DataFrame, index ``session``, columns ``rule``
        As :func:`estimate_forecast_scalars` (dimensionless, expanding, no look-ahead).

    Raises
    ------
    ForecastError, RuleError, StaleError
        Malformed inputs or parameters.

    Notes
    -----
    Source: pst ``sysquant/estimators/forecast_scalar.py`` on the guarded forecasts; carver.md §2.5.
    """
    raw = raw_forecast_stack(closes, vol, rules)
    if stale_sessions:
        raw = mask_stale_forecasts(raw, stale_mask(closes, stale_sessions))
    return estimate_forecast_scalars(raw, min_periods=min_periods)


def _rule_blocks(rules: pd.Index) -> list[tuple[str, slice]]:
    """``(rule, columns)`` of each rule in a canonically ordered ``rule`` level (contiguous runs)."""
    codes, uniques = pd.factorize(rules)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    stops = np.r_[starts[1:], len(codes)]
    if len(starts) != len(uniques):
        raise ForecastError("forecast columns are not grouped by rule; build the frame through ForecastSet")
    return [(uniques[codes[a]], slice(a, b)) for a, b in zip(starts, stops)]


def _row_median_nonzero(block: np.ndarray) -> np.ndarray:
    """Median of ``|x|`` per row over the non-NaN, non-zero entries (NaN where there are none).

    Sorting each row puts the zeros first and NaN last, so the median of the ``k`` non-zero
    values sits at the middle of the entries after the zeros; ``(lower + upper) / 2`` as
    ``np.median`` takes it.
    """
    magnitude = np.empty(block.shape)  # C order: rows contiguous, so the sort runs along them
    np.abs(block, out=magnitude)
    magnitude.sort(axis=1)
    zeros = np.count_nonzero(magnitude == 0.0, axis=1)  # pst: an exact zero is "no forecast"
    count = np.count_nonzero(~np.isnan(magnitude), axis=1) - zeros
    rows = np.arange(len(magnitude))
    last = magnitude.shape[1] - 1
    lower = magnitude[rows, np.minimum(zeros + np.maximum((count - 1) // 2, 0), last)]
    upper = magnitude[rows, np.minimum(zeros + count // 2, last)]
    return np.where(count > 0, (lower + upper) / 2.0, np.nan)


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
    scaled = _scaled(raw, scalars, fallback, "rescale")
    capped = np.clip(scaled, -cap, cap)

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=raw.index, columns=raw.columns, copy=False)

    return ForecastSet(raw=raw, scaled=frame(scaled), capped=frame(capped))


def capped_forecasts(
    raw: pd.DataFrame | dict[str, pd.DataFrame],
    scalars: pd.DataFrame,
    cap: float = 20.0,
    fallback: dict[str, float] | None = None,
    overwrite_raw: bool = False,
) -> pd.DataFrame:
    """Capped forecasts only: ``clip(raw x scalar_t, -cap, cap)``, as :func:`rescale` computes them.

    For research passes that go straight on to the FDM and the combination, which use the capped
    forecasts alone: one array instead of the scaled and the capped (each ~340 MB for the 2023
    futures set's 13 rules).

    Parameters
    ----------
    raw : DataFrame (index ``session``, columns MultiIndex ``(rule, instrument)``) or dict rule ->
        DataFrame (index ``session``, columns instruments; e.g. :func:`raw_forecast_frames` plus carry)
        Raw forecasts. A dict is scaled straight into the stacked result (no stacked raw copy).
    scalars, cap, fallback
        As :func:`rescale`.
    overwrite_raw : bool
        For a stacked ``raw`` frame in canonical column order (e.g. :func:`raw_forecast_stack`):
        write the capped values into ``raw``'s own memory instead of a new array, like LAPACK's
        ``overwrite_a``. ``raw`` (and any frame sharing its memory) then holds the capped
        forecasts; use it only when the raw forecasts are no longer needed. Ignored for a dict.

    Returns
    -------
    DataFrame, index ``session``, columns ``(rule, instrument)`` (canonical order)
        Capped forecasts in forecast units, within ``[-cap, cap]``; NaN where ``raw`` is NaN or
        no scalar exists yet. Equal to ``rescale(ForecastSet(raw, raw, raw), ...).capped``.

    Raises
    ------
    ForecastError
        Malformed ``raw``, or a rule with neither an estimated column nor a fallback scalar.
    """
    if isinstance(raw, dict):
        names = _check_frames(raw, "capped_forecasts")
        by_session = _scalars_by_session(names, raw[names[0]].index, scalars, fallback, "capped_forecasts")
        capped, index, columns = _stacked(raw, "capped_forecasts", factors=by_session)
        np.clip(capped, -cap, cap, out=capped)
        index = pd.DatetimeIndex(index.to_numpy(), name="session")
        return pd.DataFrame(capped, index=index, columns=columns, copy=False)
    _check_multi(raw, "capped_forecasts raw")
    canonical = _canonical_columns(raw.columns)
    in_place = overwrite_raw and raw.columns.equals(canonical)
    raw = raw.set_axis(canonical, axis=1) if raw.columns.equals(canonical) else raw.reindex(columns=canonical)
    capped = _scaled(raw, scalars, fallback, "capped_forecasts", in_place=in_place)
    np.clip(capped, -cap, cap, out=capped)
    index = pd.DatetimeIndex(raw.index.to_numpy(), name="session")
    return pd.DataFrame(capped, index=index, columns=raw.columns, copy=False)


def _scalars_by_session(
    rules: list[str], index: pd.Index, scalars: pd.DataFrame, fallback: dict[str, float] | None, where: str
) -> pd.DataFrame:
    """Scalar of each rule on each session: the estimate forward-filled, else the fallback."""
    missing = sorted(set(rules) - set(scalars.columns) - set(fallback or {}))
    if missing:
        raise ForecastError(f"{where}: no scalar (estimated or fallback) for rules {missing}")
    by_session = scalars.reindex(columns=sorted(set(rules))).reindex(index, method="ffill")
    if fallback:
        by_session = by_session.fillna(pd.Series(fallback).reindex(by_session.columns))
    return by_session


def _scaled(
    raw: pd.DataFrame,
    scalars: pd.DataFrame,
    fallback: dict[str, float] | None,
    where: str,
    in_place: bool = False,
) -> np.ndarray:
    """``raw x scalar_t`` (canonical columns), the scalar forward-filled per rule, else the fallback;
    ``in_place`` writes into ``raw``'s array (see ``capped_forecasts(overwrite_raw=True)``)."""
    rules = raw.columns.get_level_values("rule")
    by_session = _scalars_by_session(list(rules), raw.index, scalars, fallback, where)
    # Scale each rule's block of columns by its per-session scalar, into one preallocated array.
    raw_values = raw.to_numpy(dtype=float)
    scaled = None
    if in_place and raw_values.dtype == np.float64:
        try:  # pandas hands out its own memory read-only (copy on write); the caller gave it up
            raw_values.flags.writeable = True
            scaled = raw_values
        except ValueError:  # memory that is read-only underneath (e.g. mapped from a file)
            pass
    if scaled is None:
        scaled = np.empty_like(raw_values, order="F")
    for rule, block in _rule_blocks(rules):
        np.multiply(raw_values[:, block], by_session[rule].to_numpy()[:, None], out=scaled[:, block])
    return scaled


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


def estimate_scalars(
    raw: ForecastSet | pd.DataFrame, target_abs: float = AVERAGE_ABS_FORECAST, min_periods: int = 500
) -> pd.DataFrame:
    """Forecast scalars per rule over time, pooled across instruments (research API name).

    The same as :func:`estimate_forecast_scalars`: ``scalar_t = target_abs / mean_{s<=t}
    median_i |raw_{s,i}|``, expanding, no backfill.

    Parameters
    ----------
    raw : ForecastSet or DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Raw forecasts (build a frame with ``pd.concat({"ewmac8_32": frame}, axis=1,
        names=["rule", "instrument"])``).
    target_abs : float
        Target average absolute forecast (10).
    min_periods : int
        Sessions with a median before the first estimate (pst 500).

    Returns
    -------
    DataFrame, index ``session``, columns ``rule``
        Dimensionless scalars; NaN until ``min_periods`` sessions exist.

    Raises
    ------
    ForecastError
        Malformed ``raw`` or bad parameters.

    Notes
    -----
    Source: pst ``sysquant/estimators/forecast_scalar.py``; carver.md §2.5.
    """
    return estimate_forecast_scalars(raw, target_abs=target_abs, min_periods=min_periods)
