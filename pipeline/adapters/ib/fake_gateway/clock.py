"""The fake gateway's clocks: a manual clock for pacing, and the current trading session.

:class:`FakeClock` gives monotonic seconds that advance only when ``sleep`` is called (pacing
tests). :class:`SessionClock` is the fake's current session (an exchange session of an
exchange_calendars calendar): a test advances it to rehearse rolls and expiries. :class:`SessionTime`
is the monotonic time of a rehearsal that plays sessions in fast forward: real seconds plus a day for
every calendar day the session clock has moved, so what paces by the day (IB's historical-data
limits) sees the sessions a day apart, as they would be.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd

from pipeline.calendar import exchange_calendar


class FakeClock:
    """Monotonic seconds that only advance when ``sleep`` is called; records the sleeps."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class SessionClock:
    """The current session of exchange ``calendar`` (default ``CMES``, CME Globex); moves only forward.

    Parameters
    ----------
    session : date-like
        The first current session; a date that is no session moves forward to the next one.
    calendar : str
        An exchange_calendars code.

    Raises
    ------
    ValueError
        ``session`` outside the calendar's range.
    """

    def __init__(self, session: object, calendar: str = "CMES") -> None:
        self.calendar = calendar
        self.session = self._on_or_after(pd.Timestamp(session))

    def _on_or_after(self, day: pd.Timestamp) -> pd.Timestamp:
        cal = exchange_calendar(self.calendar)
        day = day.tz_localize(None) if day.tz is not None else day
        day = day.normalize()
        if not cal.first_session <= day <= cal.last_session:
            raise ValueError(f"session {day.date()} is outside the {self.calendar} calendar "
                             f"({cal.first_session.date()} .. {cal.last_session.date()})")
        return pd.Timestamp(cal.date_to_session(day, direction="next")).tz_localize(None)

    def advance(self, sessions: int = 1) -> pd.Timestamp:
        """Move ``sessions`` (>= 0) sessions forward; returns the new current session."""
        if sessions < 0:
            raise ValueError(f"the session clock only moves forward, not by {sessions}")
        cal = exchange_calendar(self.calendar)
        self.session = pd.Timestamp(cal.session_offset(self.session, sessions)).tz_localize(None)
        return self.session

    def advance_to(self, day: object) -> pd.Timestamp:
        """Move to the session on or after ``day`` (never back); returns the new current session."""
        target = self._on_or_after(pd.Timestamp(day))
        if target < self.session:
            raise ValueError(f"the session clock is at {self.session.date()}; it cannot go back to {target.date()}")
        self.session = target
        return self.session


class SessionTime:
    """Monotonic seconds of a rehearsal: ``clock()`` plus 86 400 s per calendar day ``sessions`` has
    moved since this object was made (a clock for :class:`~pipeline.adapters.ib.pacing.PacingBudget`)."""

    DAY = 86_400.0

    def __init__(self, sessions: SessionClock, clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions = sessions
        self.start = sessions.session
        self._clock = clock

    def __call__(self) -> float:
        return self._clock() + (self.sessions.session - self.start).days * self.DAY
