"""Bars a run received for days its exchange did not trade: the ``non_session`` quarantine rows of a run.

``pipeline.quality.rules`` quarantines every bar dated on a non-session of its instrument's calendar
(rule ``non_session``). A run is told about the ones that arrived with it: those dated after the
last session before the run's first session and up to its last session (for a daily run on a
Monday, the Saturday, the Sunday and a Monday holiday; for a backfill, every day of its range).
Older ones stay in the quarantine table, reported by earlier runs.
"""

from __future__ import annotations

import pandas as pd

from pipeline.calendar import sessions

__all__ = ["NON_SESSION_RULE", "non_session_bars", "run_window"]

NON_SESSION_RULE = "non_session"
#: Days searched back for the session before a run (longer than any closure of a calendar).
_LOOKBACK_DAYS = 30


def run_window(run: pd.DatetimeIndex, calendar: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The days a run covers: after the last ``calendar`` session before ``run[0]``, to ``run[-1]``.

    Parameters
    ----------
    run : pd.DatetimeIndex
        The run's sessions (tz-naive dates, non-empty, any order).
    calendar : str
        exchange_calendars code of the run's partitions (``calendar`` of the configuration).

    Returns
    -------
    (pd.Timestamp, pd.Timestamp)
        ``(after, last)``: a bar dated ``d`` belongs to the run when ``after < d <= last``.
        ``after`` is ``run[0] - 1 day`` when no session precedes it within 30 days (the calendar's
        first session).

    Raises
    ------
    ValueError
        ``run`` is empty (a run with no session covers no day).
    """
    if len(run) == 0:
        raise ValueError("run_window: the run has no session")
    first, last = pd.Timestamp(run.min()).normalize(), pd.Timestamp(run.max()).normalize()
    before = sessions(first - pd.Timedelta(days=_LOOKBACK_DAYS), first - pd.Timedelta(days=1), calendar)
    return (before[-1] if len(before) else first - pd.Timedelta(days=1)), last


def non_session_bars(quarantine: pd.DataFrame, run: pd.DatetimeIndex, calendar: str) -> pd.DataFrame:
    """The ``non_session`` rows of ``quarantine`` dated within the days of ``run`` (see :func:`run_window`).

    Parameters
    ----------
    quarantine : pd.DataFrame
        The quarantine of ``pipeline.quality.rules.validate_bars`` (columns ``session``, ``instrument``,
        ``rule``, ``value``, ``detail``, ``source``, ...; one row per bar and rule).
    run : pd.DatetimeIndex
        The run's sessions; an empty run has no such bar.
    calendar : str
        exchange_calendars code of the run's partitions.

    Returns
    -------
    pd.DataFrame
        Those rows, same columns, sorted by session and instrument, index reset.
    """
    if len(run) == 0 or quarantine.empty:
        return quarantine.iloc[0:0].reset_index(drop=True)
    after, last = run_window(run, calendar)
    days = pd.to_datetime(quarantine["session"]).dt.normalize()
    mine = (quarantine["rule"] == NON_SESSION_RULE) & (days > after) & (days <= last)
    return quarantine[mine].sort_values(["session", "instrument"]).reset_index(drop=True)
