"""Exchange sessions from the ``exchange_calendars`` library.

A session is a calendar date on which the exchange trades (weekends, holidays and ad-hoc closures
such as 2001-09-11..14 or 2012-10-29/30 excluded). Daily partitions, the schedule and the
completeness checks all take their sessions from here, so they agree.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd

#: exchange_calendars only builds 20 years back by default; the sample starts in 1990.
CALENDAR_START = "1985-01-01"


@lru_cache(maxsize=8)
def exchange_calendar(code: str = "XNYS") -> xcals.ExchangeCalendar:
    """The exchange calendar ``code`` (e.g. ``XNYS``, ``XCME``), built from 1985 to a year ahead."""
    return xcals.get_calendar(code, start=CALENDAR_START)


def sessions(start: str | pd.Timestamp, end: str | pd.Timestamp, code: str = "XNYS") -> pd.DatetimeIndex:
    """Sessions of exchange ``code`` between ``start`` and ``end`` inclusive (tz-naive dates)."""
    cal = exchange_calendar(code)
    start = max(pd.Timestamp(start).normalize(), cal.first_session)
    end = min(pd.Timestamp(end).normalize(), cal.last_session)
    return pd.DatetimeIndex(cal.sessions_in_range(start, end), name="session").astype("datetime64[ns]")


def is_session(day: str | pd.Timestamp | dt.date, code: str = "XNYS") -> bool:
    """True when ``day`` is a trading session of exchange ``code``."""
    return bool(exchange_calendar(code).is_session(pd.Timestamp(day).normalize()))


def non_session_weekdays(start: str | pd.Timestamp, code: str = "XNYS") -> list[dt.datetime]:
    """Weekdays from ``start`` to the calendar's end that are not sessions (holidays, closures).

    These are the exclusions of the Monday-to-Friday daily partitions.
    """
    cal = exchange_calendar(code)
    weekdays = pd.bdate_range(pd.Timestamp(start), cal.last_session)
    closed = weekdays.difference(cal.sessions_in_range(weekdays[0], weekdays[-1]))
    return [dt.datetime(d.year, d.month, d.day) for d in closed]


def exchange_timezone(code: str = "XNYS") -> str:
    """IANA time zone of exchange ``code`` (``America/New_York`` for XNYS)."""
    return str(exchange_calendar(code).tz)
