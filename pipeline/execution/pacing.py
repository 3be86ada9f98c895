"""Orders paced, not refused: a run sends its accepted orders evenly spaced, below every rate limit.

Two limits meet here. The pre-trade gate's order-rate throttle (``risk.max_orders_per_window``
within ``risk.order_window_seconds``; 100 in 1 s by default) guards against a runaway loop, and
the broker has a message rate (TWS rejects more than 50 messages a second with error 100;
``reference/ib.md``). A universe of 500 instruments trades 500 orders on a rebalance day: fired
as fast as possible, the throttle would deny 400 of them. So a run paces itself: orders leave at
most ``rate`` a second, ``rate`` being 90% of the throttle's limit when its window is short (a
rate limit, at most :data:`PACING_WINDOW_SECONDS`) and never above the broker's own order rate.
A long window (say 10 orders an hour) is a budget, not a rate: it is enforced by the gate when
the orders are planned, and orders beyond it are denied (``order_rate``), not delayed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from pipeline.config import RiskLimits

#: Throttle windows up to this long are rates the run paces itself under; longer ones are budgets.
PACING_WINDOW_SECONDS = 10.0
#: Share of the throttle's limit a paced run uses (the rest is headroom for clock jitter).
PACING_SHARE = 0.9


def paces(limits: RiskLimits) -> bool:
    """Whether the throttle of ``limits`` is a rate the run paces under (a short window)."""
    return limits.order_window_seconds <= PACING_WINDOW_SECONDS


def paced_rate(limits: RiskLimits, broker_rate: float | None = None) -> float | None:
    """Orders a second a run sends at most, or None for no pacing.

    Parameters
    ----------
    limits : RiskLimits
        The gate's throttle: ``max_orders_per_window`` within ``order_window_seconds``.
    broker_rate : float, optional
        The broker's own order rate (orders a second; ``IBBroker.max_order_rate``), None if it
        has none.

    Returns
    -------
    float or None
        ``min(0.9 x limit / window, broker_rate)`` when the window is a rate (``paces``), else
        ``broker_rate``.
    """
    if not paces(limits):
        return broker_rate or None
    rate = PACING_SHARE * limits.max_orders_per_window / limits.order_window_seconds
    return min(rate, broker_rate) if broker_rate else rate


class OrderPacer:
    """Spaces sends at least ``1 / rate`` seconds apart (``rate`` None: no spacing).

    Evenly spaced sends keep every sliding window of ``w`` seconds at no more than ``rate x w + 1``
    orders, so a rate of 90% of a limit never trips it.
    """

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._clock, self._sleep = clock, sleep
        self._last: float | None = None
        self._sent: deque[float] = deque()
        self.waited = 0.0

    def wait(self) -> None:
        """Block until the next order may leave; call right before each send."""
        if self.interval and self._last is not None:
            delay = self._last + self.interval - self._clock()
            if delay > 0:
                self._sleep(delay)
                self.waited += delay
        self._last = self._clock()

    def sent(self) -> None:
        """Count a send (for :meth:`sent_within`)."""
        self._sent.append(self._clock())

    def sent_within(self, seconds: float) -> int:
        """Orders counted by :meth:`sent` in the last ``seconds``: the gate's order-rate guard at
        send time (under pacing it never reaches the limit; a runaway loop would)."""
        horizon = self._clock() - seconds
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()
        return len(self._sent)
