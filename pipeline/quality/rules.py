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
price_spike           ERROR     the close moved more than ``max_price_spike`` vol units
                                (pysystemtrade's spike check, see :func:`spike_flags`)
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
    ("price_spike", "ERROR"),
    ("stale_price", "WARN"),
]
ISSUE_COLUMNS: list[str] = [
    "session", "instrument", "rule", "severity", "value", "detail", "source", "fetched_at"
]
#: Changes an instrument needs before the spike check starts: an EWMA of fewer is too noisy to
#: call anything a spike (a new listing's first weeks would raise false alarms).
SPIKE_MIN_PERIODS = 20
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
        Same columns, severity "WARN"; these bars are also in ``clean``.
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
    spike, z, ref_close, ref_session = spike_flags(
        valid, cfg.max_price_spike, cfg.spike_vol_span
    )
    spike_issues = _issues(
        valid, spike, "price_spike", cfg.spike_severity, z,
        _spike_details(valid[spike], z[spike], ref_close[spike], ref_session[spike], cfg.max_price_spike,
                       action="quarantined" if cfg.spike_severity == "ERROR" else "kept (spike_severity WARN)"),
    )
    warn_frames = []
    if cfg.spike_severity == "ERROR":
        spike, spike_issues, note = _apply_releases(valid, spike, spike_issues, released)
        issues.append(spike_issues)
        release_notes.append(note)
        clean = valid[~spike].reset_index(drop=True)
    else:
        # A WARN spike is kept in the clean set and reported (never silently "fixed").
        warn_frames.append(spike_issues)
        clean = valid
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
    note["detail"] = "released after a manual check: " + note["detail"].astype(str)
    return mask & ~hit(rows), frame[~in_frame], note


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


def spike_flags(
    bars: pd.DataFrame, max_spike: float, span: int, min_periods: int = SPIKE_MIN_PERIODS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flag closes that jump more than ``max_spike`` vol units (pysystemtrade's spike check).

    For each bar, against an earlier close ``p`` of the same instrument ``Δt`` calendar days
    before::

        change = (close - p) / sqrt(Δt)
        z      = |change| / EWMA(span) of the |change| of the instrument's previous clean bars

    The EWMA is pandas' ``adjust=True`` mean over the instrument's own bars (gaps do not decay
    it), uses only earlier bars (no look-ahead) and needs ``min_periods`` of them; while it is
    missing or zero (e.g. a long flat run) no spike can be judged and none is flagged.

    A bar is a spike when its z exceeds ``max_spike`` both against the previous bar's close and
    against the last clean (non-spike) close. The two references differ only right after a
    spike, and the rule then handles both cases without looking ahead:

    - a bad print (one-day spike that reverts): the next bar is close to the last clean close,
      so the return back is **not** flagged; the spike is quarantined alone;
    - a genuine level shift: the next bar is close to the spike's close, so it is accepted and
      the instrument is not quarantined for ever; only the first day of the shift is flagged
      (a human confirms it from the quarantine).

    Only clean bars feed the EWMA, with their change against the last clean close (so a level
    shift's move enters the vol estimate once it is confirmed, and a bad print never does).

    Parameters
    ----------
    bars : DataFrame
        Long bars with ``instrument, session, close``, at most one row per (instrument, session),
        close finite (rows that failed other rules removed).
    max_spike : float
        Threshold in vol units (pysystemtrade ``max_price_spike`` = 8).
    span : int
        EWMA span in bars (pysystemtrade: 500).
    min_periods : int
        Changes needed before the check starts.

    Returns
    -------
    spike : ndarray of bool, shape (len(bars),)
    z : ndarray of float, shape (len(bars),)
        min(z against previous close, z against last clean close); NaN where not computable.
    ref_close : ndarray of float, shape (len(bars),)
        The last clean close before each bar (NaN for an instrument's first bar).
    ref_session : ndarray of datetime64, shape (len(bars),)
        Its session.

    Notes
    -----
    Path-dependent (the last clean close depends on earlier verdicts), so it loops over
    sessions, vectorised across instruments. Source: pysystemtrade
    ``syscore/pandas/merge_data_keeping_past_data.py``
    (``_calculate_change_in_vol_normalised_units``), which rejects a whole merge on a spike; here the spike bar alone is quarantined.
    """
    n = len(bars)
    spike = np.zeros(n, dtype=bool)
    z_out = np.full(n, np.nan)
    ref_close = np.full(n, np.nan)
    ref_days = np.full(n, np.nan)
    if n == 0:
        return spike, z_out, ref_close, np.full(0, np.datetime64("NaT", "us"))

    inst_codes, inst_names = pd.factorize(bars["instrument"], sort=True)
    sess = bars["session"].to_numpy().astype("datetime64[D]")
    sess_codes, sess_values = pd.factorize(sess, sort=True)
    n_t, n_i = len(sess_values), len(inst_names)
    close = np.full((n_t, n_i), np.nan)
    close[sess_codes, inst_codes] = bars["close"].to_numpy(dtype="float64")
    row_of = np.full((n_t, n_i), -1, dtype=np.int64)
    row_of[sess_codes, inst_codes] = np.arange(n)
    days = sess_values.astype("int64").astype("float64")

    alpha = 2.0 / (span + 1.0)
    prev_c = np.full(n_i, np.nan)
    prev_d = np.full(n_i, np.nan)
    clean_c = np.full(n_i, np.nan)
    clean_d = np.full(n_i, np.nan)
    num = np.zeros(n_i)
    den = np.zeros(n_i)
    count = np.zeros(n_i, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(n_t):
            x = close[t]
            has = ~np.isnan(x)
            d = days[t]
            scale = np.where(count >= min_periods, num / den, np.nan)
            scale[scale == 0] = np.nan
            c_prev = (x - prev_c) / np.sqrt(d - prev_d)
            c_clean = (x - clean_c) / np.sqrt(d - clean_d)
            z_prev = np.abs(c_prev) / scale
            z_clean = np.abs(c_clean) / scale
            is_spike = has & (z_prev > max_spike) & (z_clean > max_spike)

            rows = row_of[t, has]
            spike[rows] = is_spike[has]
            z_out[rows] = np.fmin(z_prev, z_clean)[has]
            ref_close[rows] = clean_c[has]
            ref_days[rows] = clean_d[has]

            ok = has & ~is_spike
            feed = ok & ~np.isnan(c_clean)
            num = np.where(feed, num * (1 - alpha) + np.abs(c_clean), num)
            den = np.where(feed, den * (1 - alpha) + 1.0, den)
            count += feed
            clean_c = np.where(ok, x, clean_c)
            clean_d = np.where(ok, d, clean_d)
            prev_c = np.where(has, x, prev_c)
            prev_d = np.where(has, d, prev_d)
    ref_session = np.full(n, np.datetime64("NaT", "us"))
    known = ~np.isnan(ref_days)
    days_known = ref_days[known].astype("int64").astype("datetime64[D]")
    ref_session[known] = days_known.astype("datetime64[us]")
    return spike, z_out, ref_close, ref_session


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
