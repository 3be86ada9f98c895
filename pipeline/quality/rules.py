"""Validation of raw daily bars into clean bars, a quarantine and warnings (the clean_bars step).

Nothing is fixed and nothing is silently dropped: every raw bar either reaches ``clean`` or
appears in ``quarantine`` with the rule it failed, the offending value and a sentence saying why;
a bar replaced by a later fetch of the same session is counted (``superseded``). Rules, in order:

====================  ========  ===========================================================
rule                  severity  a bar fails when
====================  ========  ===========================================================
duplicate             ERROR     the latest fetch of its (instrument, session) holds two
                                different bars (all of them are quarantined)
non_session           ERROR     its date is not a session of the instrument's exchange
                                calendar (a weekend, holiday or closure; e.g. a vendor's
                                Sunday-evening FX bar); dates outside the calendar's range
                                (before 1985, or over a year ahead) are not judged
close_not_finite      ERROR     close is NaN or +/-inf
non_positive_price    ERROR     open, high, low or close <= 0, unless the instrument is
                                back-adjusted (back-adjusted futures go negative)
ohlc_inconsistent     ERROR     high < low, high < open or close, or low > open or close
                                (only where both values exist: close-only bars are valid)
negative_volume       ERROR     volume < 0
impossible_move       ERROR     a positive series' close is x8 or /8 of the previous and of
                                the last clean close (a x10 bad print, whatever the history)
price_spike           ERROR     the close moved more than ``max_price_spike`` vol units from
                                a robust reference (pysystemtrade's spike check, judged from
                                an instrument's second bar, see :func:`spike_flags`). With
                                ``spike_severity: WARN`` the bar is *flagged* instead: a
                                warning, not a quarantine; it is held out of ``clean`` (so
                                out of vol and references, the instrument's position held
                                that session) without blocking the run, until released
stale_price           WARN      the close has been unchanged for ``stale_sessions`` or more
                                consecutive bars of the instrument (stays in ``clean``)
====================  ========  ===========================================================

No look-ahead: the verdict on a bar of session d depends only on bars of sessions <= d, so
validating a history truncated at d gives the same verdicts up to d (tested).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from pipeline.bars import (
    BAR_COLUMNS,
    PRICE_COLUMNS,
    SESSION_DTYPE,
    VALUE_COLUMNS,
    SchemaError,
    conform_bars,
)
from pipeline.calendar import exchange_calendar
from pipeline.config import QualityConfig

#: (rule, severity) in the order the rules are applied.
RULES: list[tuple[str, str]] = [
    ("duplicate", "ERROR"),
    ("non_session", "ERROR"),
    ("close_not_finite", "ERROR"),
    ("non_positive_price", "ERROR"),
    ("ohlc_inconsistent", "ERROR"),
    ("negative_volume", "ERROR"),
    ("impossible_move", "ERROR"),
    ("price_spike", "ERROR"),
    ("spike_regime", "WARN"),
    ("stale_price", "WARN"),
]
ISSUE_COLUMNS: list[str] = [
    "session", "instrument", "rule", "severity", "value", "detail", "source", "fetched_at"
]
#: Clean changes an instrument needs before its own EWMA is its spike reference; before that a
#: robust warm-up reference judges it (:func:`spike_flags`).
SPIKE_MIN_PERIODS = 20
#: Changes (own, or mature peers) a warm-up reference needs: the median of three is the
#: smallest that one bad value cannot move.
WARM_UP_MIN_CHANGES = 3
#: Mean / median of |x| for a normal x (0.7979 / 0.6745): turns a median |change| into the
#: mean |change| the threshold is expressed in.
MEAN_TO_MEDIAN_ABS = 0.7978845608 / 0.6744897502
#: How the detail of a bar a person released starts (the bar is then in the clean set).
RELEASED_PREFIX = "released after a manual check: "
#: What a flagged (WARN) spike's detail says happens to it.
FLAGGED_ACTION = "flagged: not traded, out of vol, until released"
#: A close this many times (or this fraction of) the previous one is a bad print, whatever the
#: market's vol: no stock, FX rate or index moves x8 in a session, and a x10 (or /10) print of
#: the true price still crosses it when the true price itself moved up to 25% that day.
IMPOSSIBLE_MOVE = 8.0
_KEYS = ["instrument", "session"]


class QualityInputError(ValueError):
    """The raw bars given to :func:`validate_bars` do not have the raw-bar schema."""


@dataclass(frozen=True)
class QualityResult:
    """Outcome of :func:`validate_bars`.

    Attributes
    ----------
    clean : DataFrame
        Long bars, columns :data:`~pipeline.bars.BAR_COLUMNS`, one row per
        (instrument, session) that passed every ERROR rule, sorted by (instrument, session).
    quarantine : DataFrame
        Columns :data:`ISSUE_COLUMNS`, one row per (bar, ERROR rule failed), severity "ERROR";
        ``value`` is the offending raw value (the vol-unit move z for ``price_spike``) and
        ``detail`` a sentence such as ``"high 101.2 < low 101.5"``. Sorted by instrument,
        session, rule order.
    warnings : DataFrame
        Same columns, severity "WARN". Stale prices and released bars are also in ``clean``; flagged
        spikes (``rule == "price_spike"``, ``spike_severity: WARN``) are not: see :func:`flagged_spikes`.
    summary : DataFrame
        Columns ``rule, severity, rows``: one row per rule of :data:`RULES` (zeros included).
    superseded : int
        Raw rows replaced by a later fetch of the same (instrument, session): normal, not an
        error.
    """

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    warnings: pd.DataFrame
    summary: pd.DataFrame
    superseded: int


def validate_bars(
    raw: pd.DataFrame, cfg: QualityConfig, back_adjusted: Collection[str] = (),
    released: pd.DataFrame | None = None, calendars: Mapping[str, str] | None = None,
    peers: Mapping[str, str] | None = None,
) -> QualityResult:
    """Validate all raw bars received so far into clean bars, quarantine and warnings.

    Parameters
    ----------
    raw : DataFrame
        Long raw bars with the columns :data:`~pipeline.bars.BAR_COLUMNS` (any column
        or row order; other columns, e.g. a Hive partition column, are ignored), the whole
        append-only history: the same (instrument, session) may appear once
        per fetch. Prices in price points, volume in units.
    cfg : QualityConfig
        ``max_price_spike`` (vol units), ``spike_vol_span`` (EWMA span, bars),
        ``stale_sessions`` (bars).
    back_adjusted : collection of str
        Instruments whose prices may be zero or negative (back-adjusted futures).
    released : DataFrame, optional
        Columns ``session, instrument, rule``: bars a person checked and released for that
        rule (``trading-pipeline release``). Such a bar is not quarantined for that rule; it
        stays in the clean set and a WARN row (``detail`` starting "released after a manual
        check") records it. Duplicates cannot be released (there is no single bar to keep).
    calendars : mapping of str to str, optional
        Instrument -> ``exchange_calendars`` code of its exchange (``Instrument.calendar``, e.g.
        ``XNYS``, ``CMES``, ``24/5`` for spot FX). A bar dated on a day that is not a session of
        its instrument's calendar is quarantined (``non_session``). Instruments not in the
        mapping, and all bars when it is None, are not date-checked.
    peers : mapping of str to str, optional
        Instrument -> peer group (the asset class): whose spike reference stands in while an
        instrument's own history is short (:func:`spike_flags`). None = one group.

    Returns
    -------
    QualityResult
        See the class. For each (instrument, session) only the bar of the latest
        ``fetched_at`` is validated; identical copies within one fetch count once.

    Raises
    ------
    QualityInputError
        ``raw`` lacks a column of the raw-bar schema (named) or has values of the wrong type, or
        ``calendars`` names a calendar that ``exchange_calendars`` does not know.

    Notes
    -----
    Rules: module docstring. Source: the OHLC relations follow nautilus_trader's
    ``Bar::new_checked``; the spike check is pysystemtrade's
    ``syscore/pandas/merge_data_keeping_past_data.py`` with ``max_price_spike`` from
    ``sysdata/config/defaults.yaml``; see
    :func:`spike_flags` for how quarantined spikes affect the bars after them.
    """
    missing = [c for c in BAR_COLUMNS if c not in raw.columns]
    if missing:
        raise QualityInputError(
            f"validate_bars: raw bars lack columns {missing}; expected {BAR_COLUMNS} "
            "(read raw_bars with all its columns)"
        )
    try:
        bars = conform_bars(raw[BAR_COLUMNS])
    except SchemaError as exc:
        raise QualityInputError(f"validate_bars: raw bars do not fit the schema: {exc}") from exc

    latest = bars.groupby(_KEYS, sort=False)["fetched_at"].transform("max")
    current = bars[bars["fetched_at"] == latest]
    superseded = len(bars) - len(current)
    current = current.drop_duplicates(_KEYS + VALUE_COLUMNS)
    dup = current.duplicated(_KEYS, keep=False).to_numpy()
    issues = [_duplicate_issues(current[dup])]
    rows = current[~dup].reset_index(drop=True)

    failed = np.zeros(len(rows), dtype=bool)
    release_notes = []
    row_checks = (partial(_non_session, calendars=calendars or {}), _close_not_finite, _non_positive,
                  _ohlc_inconsistent, _negative_volume)
    for check in row_checks:
        mask, frame = check(rows, back_adjusted)
        mask, frame, note = _apply_releases(rows, mask, frame, released)
        failed |= mask
        issues.append(frame)
        release_notes.append(note)

    valid = rows[~failed].reset_index(drop=True)
    v = spike_flags(valid, cfg.max_price_spike, cfg.spike_vol_span, back_adjusted=back_adjusted, peers=peers,
                    regime_sessions=cfg.spike_regime_sessions)
    impossible = v.impossible
    impossible_issues = _issues(valid, impossible, "impossible_move", "ERROR", v.ratio,
                                _impossible_details(valid[impossible], v.ratio[impossible], v.ref_close[impossible],
                                                    v.ref_session[impossible]))
    impossible, impossible_issues, note = _apply_releases(valid, impossible, impossible_issues, released)
    issues.append(impossible_issues)
    release_notes.append(note)
    spike = v.spike & ~v.impossible
    flagged = cfg.spike_severity == "WARN"
    spike_issues = _issues(
        valid, spike, "price_spike", cfg.spike_severity, v.z,
        _spike_details(valid[spike], v.z[spike], v.ref_close[spike], v.ref_session[spike], cfg.max_price_spike,
                       action=FLAGGED_ACTION if flagged else "quarantined"),
    )
    spike, spike_issues, note = _apply_releases(valid, spike, spike_issues, released)
    release_notes.append(note)
    # ERROR: quarantined, blocks the run. WARN: flagged, the bar is held out of the clean set (so out of
    # vol, forecasts and the spike reference) and the instrument is left out of that session (its position
    # held, missing-bar reason "flagged"), without blocking the others, until a person releases it.
    regime = v.regime & ~impossible
    regime_issues = _issues(valid, regime, "spike_regime", "WARN", v.z, [
        f"z = {z:.1f} vol units from the last clean close {c:.10g} ({pd.Timestamp(d).date()}) after "
        f"{cfg.spike_regime_sessions} sessions in a row flagged: accepted as the start of a new regime (the spike "
        "reference restarts here); check the earlier flagged bars and release them if they were the market"
        for z, c, d in zip(v.z[regime], v.ref_close[regime], v.ref_session[regime])])
    warn_frames = [spike_issues, regime_issues] if flagged else [regime_issues]
    if not flagged:
        issues.append(spike_issues)
    clean = valid[~spike & ~impossible].reset_index(drop=True)
    warn_frames.append(_stale_warnings(clean, cfg.stale_sessions))
    warn_frames.extend(release_notes)

    quarantine = _sorted_issues(issues)
    warnings = _sorted_issues(warn_frames)
    counts = pd.concat([quarantine["rule"], warnings["rule"]]).value_counts()
    summary = pd.DataFrame(
        {
            "rule": [r for r, _ in RULES],
            "severity": [cfg.spike_severity if r == "price_spike" else s for r, s in RULES],
            "rows": [int(counts.get(r, 0)) for r, _ in RULES],
        }
    )
    return QualityResult(clean[BAR_COLUMNS], quarantine, warnings, summary, superseded)


def _apply_releases(
    rows: pd.DataFrame, mask: np.ndarray, frame: pd.DataFrame, released: pd.DataFrame | None
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Take released (session, instrument, rule) bars out of a rule's failures.

    Returns the new mask over ``rows``, the remaining issue rows, and WARN rows for the released.
    """
    if released is None or released.empty or frame.empty:
        return mask, frame, frame.iloc[0:0]
    rule = frame["rule"].iloc[0]
    rel = released[released["rule"] == rule]
    if rel.empty:
        return mask, frame, frame.iloc[0:0]
    keys = pd.MultiIndex.from_arrays([pd.to_datetime(rel["session"]).astype("datetime64[ns]"), rel["instrument"].astype(str)])

    def hit(df: pd.DataFrame) -> np.ndarray:
        return pd.MultiIndex.from_arrays(
            [pd.to_datetime(df["session"]).astype("datetime64[ns]"), df["instrument"].astype(str)]
        ).isin(keys)

    in_frame = hit(frame)
    note = frame[in_frame].assign(severity="WARN")
    note["detail"] = RELEASED_PREFIX + note["detail"].astype(str)
    return mask & ~hit(rows), frame[~in_frame], note


def flagged_mask(warnings: pd.DataFrame) -> np.ndarray:
    """Rows of ``QualityResult.warnings`` that are flagged spikes not released (bool array, one per row).

    A released bar carries a detail starting with :data:`RELEASED_PREFIX` and is in the clean set.
    """
    released = warnings["detail"].astype(str).str.startswith(RELEASED_PREFIX)
    return ((warnings["rule"] == "price_spike") & ~released).to_numpy()


def flagged_spikes(warnings: pd.DataFrame) -> pd.DataFrame:
    """The (session, instrument) bars flagged as spikes and not released, from ``QualityResult.warnings``.

    Returns
    -------
    DataFrame
        Columns ``session, instrument``, one row per flagged bar (:func:`flagged_mask`).
    """
    return warnings.loc[flagged_mask(warnings), ["session", "instrument"]].reset_index(drop=True)


def quality_errors(result: QualityResult, sessions: Iterable[object]) -> pd.DataFrame:
    """Quarantine rows of the given sessions (e.g. the partitions a run materializes).

    Parameters
    ----------
    result : QualityResult
    sessions : iterable of date-like
        Session dates (tz-naive; times are dropped).

    Returns
    -------
    DataFrame
        The rows of ``result.quarantine`` whose session is in ``sessions``, same columns.
    """
    wanted = pd.DatetimeIndex(pd.to_datetime(list(sessions))).normalize().as_unit("us")
    q = result.quarantine
    return q[q["session"].isin(wanted)].reset_index(drop=True)


@dataclass(frozen=True)
class SpikeVerdicts:
    """Per-bar outcome of :func:`spike_flags`, arrays aligned with the rows given to it.

    Attributes
    ----------
    spike : ndarray of bool
        The move is more than ``max_spike`` vol units from both references.
    impossible : ndarray of bool
        The close is ``ceiling`` times (or 1/``ceiling`` of) both references: no market makes that
        move between two bars (positive series only).
    z : ndarray of float
        min(z against the previous close, z against the last clean close), vol units; NaN where
        no reference scale exists yet (only the ceiling judges such a bar).
    ratio : ndarray of float
        close / last clean close (NaN for back-adjusted series and an instrument's first bar).
    ref_close : ndarray of float
        The last clean close before each bar (NaN for an instrument's first bar).
    ref_session : ndarray of datetime64[us]
        Its session.
    regime : ndarray of bool
        Accepted as the start of a new regime: far outside the reference after ``regime_sessions``
        flagged sessions in a row (the reference restarts from here); not a spike.
    """

    spike: np.ndarray
    impossible: np.ndarray
    z: np.ndarray
    ratio: np.ndarray
    ref_close: np.ndarray
    ref_session: np.ndarray
    regime: np.ndarray | None = None


def spike_flags(
    bars: pd.DataFrame, max_spike: float, span: int, min_periods: int = SPIKE_MIN_PERIODS,
    back_adjusted: Collection[str] = (), ceiling: float = IMPOSSIBLE_MOVE,
    peers: Mapping[str, str] | None = None, regime_sessions: int | None = None,
) -> SpikeVerdicts:
    """Judge every close against a robust reference of the instrument's own moves (or its peers').

    Changes are measured in log price for series that are positive by nature (stocks, FX,
    indices, unadjusted futures) and in price points for back-adjusted futures (they can cross
    zero, as WTI did on 2020-04-20). Against an earlier close ``p`` of the same instrument
    ``Δt`` calendar days before::

        change = (x - x_p) / sqrt(Δt)        x = log(close), or close when back-adjusted
        z      = |change| / scale

    ``scale`` is the mean absolute change (pysystemtrade's measure), estimated robustly from
    the instrument's *clean* changes before the bar (no look-ahead):

    * from the ``min_periods``-th clean change on: an EWMA (span ``span``, pandas ``adjust=True``,
      gaps do not decay it) of the clean |changes|, each **winsorised** at ``max_spike`` times the
      scale it was judged with, so no single accepted move can inflate it by more than one
      threshold's worth;
    * before that (a new listing, the first bars of a history): the larger of the median of its
      own clean |changes| (at least 3) times :data:`MEAN_TO_MEDIAN_ABS`, and the median scale of
      its peers (instruments of the same ``peers`` group with a mature scale, at least 3; log
      series only, as a price-point scale does not carry across instruments). One bad print
      cannot move a median of three or more, and the peers judge a series from its second bar.

    A flagged bar never feeds the scale nor becomes the reference of later bars. A bar is a
    spike when its z exceeds ``max_spike`` both against the previous bar's close and against the
    last clean close, so:

    - a bad print (one-day spike that reverts): the next bar is close to the last clean close,
      so the return back is **not** flagged; the spike is flagged alone;
    - a genuine level shift: the next bar is close to the spike's close, so it is accepted and
      the instrument is not flagged for ever; only the first day of the shift is flagged
      (a person confirms it); its move enters the scale winsorised;
    - a change of regime (a pegged currency that floats, as the Brazilian real in January 1999:
      every later daily move is many times the peg's): with ``regime_sessions`` = k, after k
      sessions in a row with a flagged bar the next bar far outside the reference is accepted as
      the start of a new regime (``regime``): it becomes the reference close and the scale
      restarts from the warm-up (its own median, the peers meanwhile), so a market that keeps
      moving is traded again after k sessions held, not held until someone releases every bar.
      The k flagged bars stay flagged; the decision uses only bars up to the session.

    The ceiling uses the same two references: a positive series whose close is ``ceiling``
    times (or 1/``ceiling`` of) both the previous close and the last clean close is
    ``impossible`` whatever its history, so a x100 or x0.01 print on a series' second bar is
    caught. A series' first bar has no earlier close: a bad first print shows up as an
    impossible (or spike) second bar.

    Parameters
    ----------
    bars : DataFrame
        Long bars with ``instrument, session, close``, at most one row per (instrument, session),
        close finite and, for series not back-adjusted, positive (rows that failed other rules
        removed).
    max_spike : float
        Threshold in vol units (pysystemtrade ``max_price_spike`` = 8).
    span : int
        EWMA span in bars (pysystemtrade: 500).
    min_periods : int
        Clean changes before an instrument's own EWMA is its scale.
    back_adjusted : collection of str
        Instruments measured in price points (back-adjusted futures); no ceiling for them.
    ceiling : float
        The impossible move as a price ratio (> 1; default :data:`IMPOSSIBLE_MOVE`).
    peers : mapping of str to str, optional
        Instrument -> peer group (e.g. the asset class); instruments not in it, and all of them
        when None, form one group.
    regime_sessions : int, optional
        Flagged sessions in a row after which a bar far outside the reference starts a new regime
        (``quality.spike_regime_sessions``); None = never (every such bar stays a spike).

    Returns
    -------
    SpikeVerdicts
        Arrays of length ``len(bars)``, in the rows' order.

    Notes
    -----
    Path-dependent (the last clean close depends on earlier verdicts), so it loops over
    sessions, vectorised across instruments. Source: pysystemtrade
    ``syscore/pandas/merge_data_keeping_past_data.py`` (``_calculate_change_in_vol_normalised_units``,
    which rejects a whole merge on a spike; here the bar alone is flagged). The winsorised and
    median warm-up reference and the ceiling are this project's: with pysystemtrade's plain EWMA a
    bad print among an instrument's first bars is never judged and then inflates the reference
    that judges the next one.
    """
    n = len(bars)
    spike = np.zeros(n, dtype=bool)
    impossible = np.zeros(n, dtype=bool)
    z_out = np.full(n, np.nan)
    ratio_out = np.full(n, np.nan)
    ref_close = np.full(n, np.nan)
    ref_days = np.full(n, np.nan)
    regime_out = np.zeros(n, dtype=bool)
    if n == 0:
        empty = np.full(0, np.datetime64("NaT", "us"))
        return SpikeVerdicts(spike, impossible, z_out, ratio_out, ref_close, empty, regime_out)

    inst_codes, inst_names = pd.factorize(bars["instrument"], sort=True)
    sess = bars["session"].to_numpy().astype("datetime64[D]")
    sess_codes, sess_values = pd.factorize(sess, sort=True)
    n_t, n_i = len(sess_values), len(inst_names)
    relative = ~np.asarray(pd.Index(inst_names).isin(list(back_adjusted)))
    group_of = pd.Series(inst_names, dtype=object).map(dict(peers or {})).fillna("").to_numpy()
    groups = [group_of == g for g in pd.unique(group_of)]
    close = np.full((n_t, n_i), np.nan)
    close[sess_codes, inst_codes] = bars["close"].to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.where(relative, np.log(close), close)
    row_of = np.full((n_t, n_i), -1, dtype=np.int64)
    row_of[sess_codes, inst_codes] = np.arange(n)
    days = sess_values.astype("int64").astype("float64")

    alpha = 2.0 / (span + 1.0)
    log_ceiling = np.log(ceiling)
    prev_x = np.full(n_i, np.nan)
    prev_d = np.full(n_i, np.nan)
    clean_x = np.full(n_i, np.nan)
    clean_c = np.full(n_i, np.nan)
    clean_d = np.full(n_i, np.nan)
    num = np.zeros(n_i)
    den = np.zeros(n_i)
    count = np.zeros(n_i, dtype=np.int64)
    streak = np.zeros(n_i, dtype=np.int64)  # sessions in a row with a flagged bar
    first = np.full((n_i, max(min_periods, 1)), np.nan)  # the clean |changes| of the warm-up
    cols = np.arange(n_i)
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(n_t):
            x = level[t]
            has = ~np.isnan(x)
            d = days[t]
            mature = count >= min_periods
            scale = np.where(mature, num / den, np.nan)
            if not mature.all():
                scale = np.where(mature, scale, _warm_up_scale(first, count, scale, mature, relative, groups))
            scale[~(scale > 0)] = np.nan
            c_prev = (x - prev_x) / np.sqrt(d - prev_d)
            c_clean = (x - clean_x) / np.sqrt(d - clean_d)
            z_prev = np.abs(c_prev) / scale
            z_clean = np.abs(c_clean) / scale
            is_spike = has & (z_prev > max_spike) & (z_clean > max_spike)
            is_impossible = has & relative & (np.abs(x - prev_x) >= log_ceiling) & (np.abs(x - clean_x) >= log_ceiling)
            is_regime = (is_spike & ~is_impossible & (streak >= regime_sessions) if regime_sessions
                         else np.zeros(n_i, dtype=bool))
            is_spike &= ~is_regime

            rows = row_of[t, has]
            spike[rows] = is_spike[has]
            impossible[rows] = is_impossible[has]
            z_out[rows] = np.fmin(z_prev, z_clean)[has]
            ratio_out[rows] = np.exp(np.where(relative, x - clean_x, np.nan))[has]
            ref_close[rows] = clean_c[has]
            ref_days[rows] = clean_d[has]
            regime_out[rows] = is_regime[has]

            ok = has & ~is_spike & ~is_impossible
            fed = np.abs(c_clean)
            fed = np.where(np.isnan(scale), fed, np.fmin(fed, max_spike * scale))  # winsorised
            if is_regime.any():  # a new regime: the old scale no longer describes it; the jump is not fed
                num, den = np.where(is_regime, 0.0, num), np.where(is_regime, 0.0, den)
                count = np.where(is_regime, 0, count)
                first[is_regime] = np.nan
            feed = ok & ~is_regime & ~np.isnan(c_clean)
            warm = feed & (count < first.shape[1])
            first[cols[warm], count[warm]] = fed[warm]
            num = np.where(feed, num * (1 - alpha) + fed, num)
            den = np.where(feed, den * (1 - alpha) + 1.0, den)
            count += feed
            clean_x = np.where(ok, x, clean_x)
            clean_c = np.where(ok, close[t], clean_c)
            clean_d = np.where(ok, d, clean_d)
            prev_x = np.where(has, x, prev_x)
            prev_d = np.where(has, d, prev_d)
            streak = np.where(has, np.where(is_spike, streak + 1, 0), streak)
    ref_session = np.full(n, np.datetime64("NaT", "us"))
    known = ~np.isnan(ref_days)
    days_known = ref_days[known].astype("int64").astype("datetime64[D]")
    ref_session[known] = days_known.astype("datetime64[us]")
    return SpikeVerdicts(spike, impossible, z_out, ratio_out, ref_close, ref_session, regime_out)


def _warm_up_scale(
    first: np.ndarray, count: np.ndarray, mature_scale: np.ndarray, mature: np.ndarray, relative: np.ndarray,
    groups: list[np.ndarray],
) -> np.ndarray:
    """The scale of instruments still short of history: max(own median x MEAN_TO_MEDIAN_ABS, peers' median).

    ``first`` holds each instrument's first clean |changes| (NaN beyond ``count``); the own
    median needs :data:`WARM_UP_MIN_CHANGES` of them, the peers' median that many mature log
    series of the group.
    """
    own = np.full(len(count), np.nan)
    enough = (count >= WARM_UP_MIN_CHANGES) & ~mature
    if enough.any():
        own[enough] = np.nanmedian(first[enough], axis=1) * MEAN_TO_MEDIAN_ABS
    peer = np.full(len(count), np.nan)
    for members in groups:
        mates = members & mature & relative
        if mates.sum() >= WARM_UP_MIN_CHANGES:
            peer[members & relative] = np.median(mature_scale[mates])
    return np.fmax(own, peer)


# -- the row rules -------------------------------------------------------------------------


def _fmt(values: np.ndarray | pd.Series) -> list[str]:
    return [f"{v:.10g}" for v in np.asarray(values, dtype="float64")]


def _describe(
    mask: np.ndarray, conditions: list[tuple[np.ndarray, str, list[np.ndarray]]]
) -> list[str]:
    """For each flagged row, '; '.join of the texts of the conditions it violates.

    ``conditions`` are (violated, template, arrays): the template is filled with the row's
    values of ``arrays``. Only flagged rows are formatted (usually a handful).
    """
    out = []
    for i in np.flatnonzero(mask):
        out.append("; ".join(
            tpl.format(*(f"{a[i]:.10g}" for a in arrays))
            for violated, tpl, arrays in conditions if violated[i]
        ))
    return out


def _issues(
    rows: pd.DataFrame, mask: np.ndarray, rule: str, severity: str,
    value: np.ndarray, detail: list[str] | np.ndarray,
) -> pd.DataFrame:
    sel = rows[mask]
    return pd.DataFrame(
        {
            "session": sel["session"].to_numpy(),
            "instrument": sel["instrument"].to_numpy(),
            "rule": rule,
            "severity": severity,
            "value": np.asarray(value, dtype="float64")[mask],
            "detail": np.asarray(detail, dtype=object),
            "source": sel["source"].to_numpy(),
            "fetched_at": sel["fetched_at"].to_numpy(),
        },
        columns=ISSUE_COLUMNS,
    )


def _duplicate_issues(dups: pd.DataFrame) -> pd.DataFrame:
    mask = np.ones(len(dups), dtype=bool)
    if not len(dups):
        return _issues(dups, mask, "duplicate", "ERROR", np.array([]), [])
    closes = dups.groupby(_KEYS, sort=False)["close"].transform(
        lambda c: ", ".join(_fmt(c))
    )
    n = dups.groupby(_KEYS, sort=False)["close"].transform("size")
    detail = [
        f"{k} different bars for this session in the fetch of {f} (closes {c}); "
        "the source must return one bar per session"
        for k, f, c in zip(n, dups["fetched_at"], closes)
    ]
    return _issues(dups, mask, "duplicate", "ERROR", dups["close"].to_numpy(), detail)


def _non_session(
    rows: pd.DataFrame, _ba: Collection[str], calendars: Mapping[str, str]
) -> tuple[np.ndarray, pd.DataFrame]:
    """Bars dated on a non-session of their instrument's calendar (vectorised per calendar)."""
    mask = np.zeros(len(rows), dtype=bool)
    codes = rows["instrument"].map(calendars)
    code_of = codes.to_numpy(dtype=object)
    days = pd.DatetimeIndex(rows["session"]).normalize()
    for code in codes.dropna().unique():  # one pass per calendar, vectorised over its bars
        mine = code_of == code
        try:
            cal = exchange_calendar(code)
        except xcals.errors.InvalidCalendarName as exc:
            named = sorted(set(rows.loc[mine, "instrument"]))
            raise QualityInputError(
                f"validate_bars: calendar {code!r} of {', '.join(named)} is not an exchange_calendars code "
                "(e.g. XNYS, CMES, 24/5); fix the instrument's calendar in the configuration"
            ) from exc
        judged = mine & np.asarray((days >= cal.first_session) & (days <= cal.last_session))
        mask |= judged & ~np.asarray(days.isin(cal.sessions))
    bad = days[mask]
    detail = [
        f"{d.date()} is a {d.day_name()}, not a session of the instrument's calendar {c} (weekend, "
        "holiday or closure); check the source's date stamps"
        for d, c in zip(bad, code_of[mask])
    ]
    return mask, _issues(rows, mask, "non_session", "ERROR", rows["close"].to_numpy(), detail)


def _close_not_finite(rows: pd.DataFrame, _ba: Collection[str]) -> tuple[np.ndarray, pd.DataFrame]:
    close = rows["close"].to_numpy()
    mask = ~np.isfinite(close)
    detail = [f"close is {v}" for v in _fmt(close[mask])]
    return mask, _issues(rows, mask, "close_not_finite", "ERROR", close, detail)


def _non_positive(
    rows: pd.DataFrame, back_adjusted: Collection[str]
) -> tuple[np.ndarray, pd.DataFrame]:
    prices = rows[PRICE_COLUMNS].to_numpy()
    bad = prices <= 0  # NaN compares False: a missing open is not a non-positive open
    bad &= ~rows["instrument"].isin(list(back_adjusted)).to_numpy()[:, None]
    mask = bad.any(axis=1)
    value = np.min(np.where(bad, prices, np.inf), axis=1)  # the most negative offender
    conds = [(bad[:, j], c + " {} <= 0", [prices[:, j]]) for j, c in enumerate(PRICE_COLUMNS)]
    detail = [
        f"{d}; prices must be positive (mark the instrument back_adjusted if its prices can "
        "be negative)"
        for d in _describe(mask, conds)
    ]
    return mask, _issues(rows, mask, "non_positive_price", "ERROR", value, detail)


def _ohlc_inconsistent(rows: pd.DataFrame, _ba: Collection[str]) -> tuple[np.ndarray, pd.DataFrame]:
    o, h, l, c = (rows[k].to_numpy() for k in PRICE_COLUMNS)
    # (violated, offending value, text); NaN compares False, so missing OHLC never fails
    checks = [
        (h < l, h, "high {} < low {}", [h, l]),
        (h < o, h, "high {} < open {}", [h, o]),
        (h < c, h, "high {} < close {}", [h, c]),
        (l > o, l, "low {} > open {}", [l, o]),
        (l > c, l, "low {} > close {}", [l, c]),
    ]
    mask = np.zeros(len(rows), dtype=bool)
    value = np.full(len(rows), np.nan)
    for violated, v, _, _ in reversed(checks):  # the first violated check names the value
        value = np.where(violated, v, value)
        mask |= violated
    detail = _describe(mask, [(v, t, a) for v, _, t, a in checks])
    return mask, _issues(rows, mask, "ohlc_inconsistent", "ERROR", value, detail)


def _negative_volume(rows: pd.DataFrame, _ba: Collection[str]) -> tuple[np.ndarray, pd.DataFrame]:
    vol = rows["volume"].to_numpy()
    mask = vol < 0
    detail = [f"volume {v} < 0" for v in _fmt(vol[mask])]
    return mask, _issues(rows, mask, "negative_volume", "ERROR", vol, detail)


def _spike_details(
    rows: pd.DataFrame, z: np.ndarray, ref_close: np.ndarray, ref_session: np.ndarray,
    limit: float, action: str = "quarantined",
) -> list[str]:
    return [
        f"close {c} is {zz:.1f} vol units from the last clean close {r} of "
        f"{pd.Timestamp(s).date()} (limit {limit:g}); {action}, check the source"
        for c, zz, r, s in zip(_fmt(rows["close"]), z, _fmt(ref_close), ref_session)
    ]


def _impossible_details(
    rows: pd.DataFrame, ratio: np.ndarray, ref_close: np.ndarray, ref_session: np.ndarray
) -> list[str]:
    return [
        f"close {c} is {r:.4g} times the last clean close {p} of {pd.Timestamp(s).date()} "
        f"(limit x{IMPOSSIBLE_MOVE:g} or /{IMPOSSIBLE_MOVE:g}); quarantined, a bad print or an unadjusted split"
        for c, r, p, s in zip(_fmt(rows["close"]), ratio, _fmt(ref_close), ref_session)
    ]


def _stale_warnings(clean: pd.DataFrame, stale_sessions: int) -> pd.DataFrame:
    """WARN on each bar whose close equals the closes of the previous bars, once the run of
    equal closes (this bar included) reaches ``stale_sessions``; counting only up to the bar
    itself keeps the verdict free of look-ahead."""
    inst = clean["instrument"]
    close = clean["close"]
    same = (close == close.shift()) & (inst == inst.shift())
    run_id = (~same).cumsum()
    run_len = clean.groupby(run_id).cumcount().to_numpy() + 1
    since = clean.groupby(run_id)["session"].transform("first")
    mask = run_len >= stale_sessions
    detail = [
        f"close {c} unchanged for {k} sessions (since {pd.Timestamp(s).date()}); "
        "check that the source is still updating"
        for c, k, s in zip(_fmt(close[mask]), run_len[mask], since[mask])
    ]
    return _issues(clean, mask, "stale_price", "WARN", run_len.astype("float64"), detail)


def _sorted_issues(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        out = pd.DataFrame({c: [] for c in ISSUE_COLUMNS})
    else:
        out = pd.concat(frames, ignore_index=True)
    order = {r: i for i, (r, _) in enumerate(RULES)}
    out = out.assign(_o=out["rule"].map(order).astype("int64"))
    out = out.sort_values(["instrument", "session", "_o"], kind="stable", ignore_index=True)
    return out.drop(columns="_o").astype(
        {
            "session": SESSION_DTYPE,
            "instrument": "str",
            "rule": "str",
            "severity": "str",
            "value": "float64",
            "detail": "str",
            "source": "str",
            "fetched_at": "datetime64[us, UTC]",
        }
    )
