"""Missing bars: which (session, instrument) pairs have no clean bar, why, and what to do about it.

A listed instrument (one with a clean bar on or before the session) that has no clean bar on a
session of the run is a *gap*. Each gap gets a reason:

============  ==========================================================================================
reason        when
============  ==========================================================================================
quarantined   the source sent a bar but it failed an ERROR rule (it is in the quarantine)
flagged       the source sent a bar flagged as a suspected bad print (a ``price_spike`` with
              ``spike_severity: WARN``, not released): always left out, never blocking
ended         no bar at or after the session up to the run's last session, and more than
              ``ended_after`` sessions of the calendar have passed since the instrument's last bar:
              the series has ended (a delisting, an expired series); reported, never blocking
missing       any other gap: a session the instrument did not trade, a file not updated yet
no_data       the instrument has no clean bar at all (a universe symbol no readable input holds)
============  ==========================================================================================

Sessions before an instrument's first clean bar (not listed yet) are not gaps and are not
reported. The policy of the instrument (``instruments[].missing_bar_policy``, else
``quality.missing_bar_policy``) turns a ``missing`` gap into an action: ``block`` (the blocking
``bars_complete`` check fails, as before the policy existed), ``carry`` (the last close is carried
forward as a flat bar with no volume and flagged ``stale_price``), ``omit`` (left out that session:
no target, no order, the position is held). ``quarantined`` gaps block under ``block`` and are left
out otherwise (never carried: the quarantine decides about a suspect print); ``flagged``, ``ended``
and ``no_data`` are always left out.

Everything is vectorised over the (session, instrument) grid; ``ended`` uses bars up to the run's
last session only (a daily run at that session sees the same).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.bars import BAR_COLUMNS, BAR_DTYPES
from pipeline.calendar import sessions as calendar_sessions

MISSING_REASONS = ("missing", "quarantined", "flagged", "ended", "no_data")
MISSING_POLICIES = ("block", "carry", "omit")
MISSING_ACTIONS = ("blocked", "carried", "left_out")
#: Columns of :func:`classify_missing_bars` (and of the ledger's ``missing_bars`` table).
MISSING_COLUMNS = ["session", "instrument", "reason", "policy", "action", "last_bar"]
#: The rule name a carried bar is flagged with in ``quality_warnings`` (as the stale-price rule).
CARRIED_RULE = "stale_price"


def classify_missing_bars(
    clean: pd.DataFrame,
    quarantine: pd.DataFrame,
    run: pd.DatetimeIndex,
    instruments: Sequence[str],
    policies: Mapping[str, str],
    ended_after: int,
    calendar: str = "XNYS",
    flagged: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every gap of ``run`` with its reason, the instrument's policy and the action it leads to.

    Parameters
    ----------
    clean : DataFrame
        Clean bars up to the run's last session, columns at least ``session, instrument, close``.
    quarantine : DataFrame
        Quarantined bars, columns at least ``session, instrument`` (rows after the run are ignored).
    run : DatetimeIndex
        The sessions to classify (ascending exchange sessions, tz-naive midnight dates).
    instruments : sequence of str
        The universe.
    policies : mapping str -> str
        The missing-bar policy of each instrument (``block``, ``carry`` or ``omit``).
    ended_after : int
        Sessions without any bar (up to ``run[-1]``) after which a series counts as ended.
    calendar : str
        exchange_calendars code whose sessions are counted for ``ended_after``.
    flagged : DataFrame, optional
        Columns ``session, instrument``: bars flagged as spikes and held out of ``clean``
        (:func:`pipeline.quality.rules.flagged_spikes`).

    Returns
    -------
    DataFrame
        Columns :data:`MISSING_COLUMNS`: ``session`` (datetime64), ``instrument``, ``reason`` (one of
        :data:`MISSING_REASONS`), ``policy``, ``action`` (one of :data:`MISSING_ACTIONS`) and
        ``last_bar`` (the instrument's last clean session before the gap, NaT if none), sorted by
        (session, instrument). Empty when every listed instrument has a bar on every session.

    Raises
    ------
    ValueError
        A policy that is not one of :data:`MISSING_POLICIES`, or ``ended_after < 1``.
    """
    bad = sorted({p for p in policies.values() if p not in MISSING_POLICIES})
    if bad:
        raise ValueError(f"missing_bar_policy {bad} is not one of {MISSING_POLICIES}")
    if ended_after < 1:
        raise ValueError(f"series_ended_after must be >= 1, got {ended_after}")
    run = pd.DatetimeIndex(run).astype("datetime64[us]")
    if run.empty or not len(instruments):
        return _empty()
    end = run[-1]
    clean = clean[clean["instrument"].isin(instruments) & (clean["session"] <= end)]
    quarantine = quarantine[quarantine["instrument"].isin(instruments) & (quarantine["session"] <= end)]
    if flagged is None:
        flagged = pd.DataFrame({"session": pd.Series(dtype="datetime64[us]"), "instrument": pd.Series(dtype=str)})
    flagged = flagged[flagged["instrument"].isin(instruments) & (flagged["session"] <= end)]
    first = clean.groupby("instrument")["session"].min()
    last_seen = pd.concat([clean[["instrument", "session"]], quarantine[["instrument", "session"]],
                           flagged[["instrument", "session"]]]).groupby(
        "instrument")["session"].max()

    grid = pd.MultiIndex.from_product([run, list(instruments)], names=["session", "instrument"]).to_frame(index=False)
    keys = pd.MultiIndex.from_frame(grid)
    gap = ~keys.isin(pd.MultiIndex.from_frame(clean[["session", "instrument"]].astype({"session": "datetime64[us]"})))
    start = grid["instrument"].map(first)
    listed = start.isna().to_numpy() | (grid["session"] >= start).to_numpy()
    grid = grid[gap & listed].reset_index(drop=True)
    if grid.empty:
        return _empty()

    keys = pd.MultiIndex.from_frame(grid)
    quarantined = keys.isin(pd.MultiIndex.from_frame(
        quarantine[["session", "instrument"]].astype({"session": "datetime64[us]"})))
    is_flagged = keys.isin(pd.MultiIndex.from_frame(
        flagged[["session", "instrument"]].astype({"session": "datetime64[us]"})))
    no_data = grid["instrument"].map(first).isna().to_numpy()
    seen = pd.to_datetime(grid["instrument"].map(last_seen))
    days = calendar_sessions(seen.min() if seen.notna().any() else end, end, calendar).astype("datetime64[us]")
    sessions_since = len(days) - days.searchsorted(seen.fillna(end).to_numpy(), side="right")
    ended = (grid["session"] > seen).to_numpy() & (sessions_since > ended_after)
    grid["reason"] = np.select([no_data, quarantined, is_flagged, ended],
                               ["no_data", "quarantined", "flagged", "ended"], "missing")

    grid["policy"] = grid["instrument"].map(dict(policies)).fillna("block")
    block = (grid["policy"] == "block").to_numpy()
    grid["action"] = np.select(
        [grid["reason"].isin(["ended", "no_data", "flagged"]).to_numpy(), block,
         (grid["reason"] == "missing").to_numpy() & (grid["policy"] == "carry").to_numpy()],
        ["left_out", "blocked", "carried"], "left_out")
    grid["last_bar"] = _last_bar_before(grid, clean)["last_bar"].to_numpy()
    return grid[MISSING_COLUMNS].sort_values(["session", "instrument"], ignore_index=True)


def carried_bars(clean: pd.DataFrame, gaps: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bars and warnings of the gaps whose action is ``carried``.

    Parameters
    ----------
    clean : DataFrame
        Clean bars, columns :data:`~pipeline.bars.BAR_COLUMNS`.
    gaps : DataFrame
        :func:`classify_missing_bars` output.

    Returns
    -------
    (bars, warnings)
        ``bars``: columns :data:`~pipeline.bars.BAR_COLUMNS`, one flat bar per carried gap: open,
        high, low and close equal to the last clean close before the session (no look-ahead),
        volume 0, ``source`` ``"carried:<source of that bar>"`` and its ``fetched_at``.
        ``warnings``: columns ``session, instrument, rule, severity, value, detail, source,
        fetched_at`` (those of ``quality_warnings``), rule :data:`CARRIED_RULE`, severity WARN,
        ``value`` the calendar days since the bar carried. Gaps with no earlier bar are not carried.
    """
    todo = gaps[gaps["action"] == "carried"][["session", "instrument"]]
    rows = _last_bar_before(todo, clean, columns=["close", "source", "fetched_at"]).dropna(subset=["last_bar"])
    bars = pd.DataFrame({
        "session": rows["session"].to_numpy(),
        "instrument": rows["instrument"].to_numpy(),
        **{c: rows["close"].to_numpy(dtype=float) for c in ("open", "high", "low", "close")},
        "volume": 0.0,
        "source": ("carried:" + rows["source"].astype("str")).to_numpy(),
        "fetched_at": rows["fetched_at"].to_numpy(),
    }, columns=BAR_COLUMNS).astype(BAR_DTYPES)
    since = (rows["session"] - rows["last_bar"]).dt.days.to_numpy(dtype=float)
    detail = ("no bar from the source: the close " + rows["close"].map("{:g}".format).astype("str") + " of "
              + rows["last_bar"].dt.strftime("%Y-%m-%d").astype("str") + " carried forward (missing_bar_policy carry)")
    warnings = pd.DataFrame({
        "session": bars["session"], "instrument": bars["instrument"], "rule": CARRIED_RULE, "severity": "WARN",
        "value": since, "detail": detail.to_numpy(), "source": bars["source"], "fetched_at": bars["fetched_at"],
    })
    return bars, warnings


def summarise_gaps(gaps: pd.DataFrame, first: int = 5) -> str:
    """``"N missing bar(s): 2022-12-27 KO, 2022-12-28 KO ..."``: the count and the first pairs."""
    shown = ", ".join(f"{s:%Y-%m-%d} {i}" for s, i in zip(gaps["session"].head(first), gaps["instrument"].head(first)))
    return f"{len(gaps)} missing bar(s): {shown}{' ...' if len(gaps) > first else ''}"


def _last_bar_before(pairs: pd.DataFrame, clean: pd.DataFrame, columns: Sequence[str] = ()) -> pd.DataFrame:
    """``pairs`` (session, instrument) with ``last_bar``, the latest clean session before each
    (and ``columns`` of that bar), in the order of ``pairs``."""
    left = pairs[["session", "instrument"]].assign(session=lambda d: d["session"].astype("datetime64[us]"),
                                                   _order=np.arange(len(pairs)))
    right = clean[["session", "instrument", *columns]].assign(
        session=lambda d: d["session"].astype("datetime64[us]"), last_bar=lambda d: d["session"])
    merged = pd.merge_asof(left.sort_values("session"), right.sort_values("session"), on="session",
                           by="instrument", allow_exact_matches=False, direction="backward")
    return merged.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({
        "session": pd.Series(dtype="datetime64[us]"), "instrument": pd.Series(dtype="str"),
        "reason": pd.Series(dtype="str"), "policy": pd.Series(dtype="str"), "action": pd.Series(dtype="str"),
        "last_bar": pd.Series(dtype="datetime64[us]"),
    })
