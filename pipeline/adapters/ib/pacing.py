"""A shared budget for IB historical-data requests, so the pipeline never triggers a pacing violation.

IB counts a pacing violation when (IB API docs, "Historical Data Limitations"):

1. an identical request is repeated within 15 seconds;
2. six or more requests for the same contract, exchange and bar type are made within 2 seconds;
3. more than 60 historical requests are made in any 10 minutes.

The limits apply to the whole TWS / Gateway login, so one :class:`PacingBudget` is shared by every
IB source of the process (:func:`shared_budget`). Time comes from an injectable monotonic clock, so
tests advance a fake clock instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from pipeline.adapters.ib.errors import IBPacingViolation

#: IB's rules, in seconds and counts (see the module docstring).
IDENTICAL_WINDOW = 15.0
PER_CONTRACT_WINDOW = 2.0
PER_CONTRACT_MAX = 5
GLOBAL_WINDOW = 600.0
GLOBAL_MAX = 60


@dataclass(frozen=True)
class HistoricalRequest:
    """What IB compares to decide that two historical requests are identical or related.

    ``contract`` is a stable id of the contract (conId, or the symbol before qualification);
    ``exchange`` and ``what_to_show`` complete the "same contract, exchange and tick type" key;
    ``detail`` holds the rest (end, duration, bar size, RTH) that makes requests identical.
    """

    contract: Hashable
    exchange: str
    what_to_show: str
    detail: tuple = ()

    @property
    def series(self) -> tuple:
        return (self.contract, self.exchange, self.what_to_show)


class PacingBudget:
    """Thread-safe counter of recent historical requests that says how long to wait before the next.

    Parameters
    ----------
    clock : callable, default ``time.monotonic``
        Seconds, monotonic; tests pass a fake.
    identical_window, per_contract_window, per_contract_max, global_window, global_max
        The three IB rules (defaults: 15 s; 5 per 2 s; 60 per 600 s).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        identical_window: float = IDENTICAL_WINDOW,
        per_contract_window: float = PER_CONTRACT_WINDOW,
        per_contract_max: int = PER_CONTRACT_MAX,
        global_window: float = GLOBAL_WINDOW,
        global_max: int = GLOBAL_MAX,
    ):
        if per_contract_max < 1 or global_max < 1:
            raise ValueError("pacing limits must allow at least one request per window")
        self._clock = clock
        self.identical_window = identical_window
        self.per_contract_window = per_contract_window
        self.per_contract_max = per_contract_max
        self.global_window = global_window
        self.global_max = global_max
        self._lock = threading.Lock()
        self._last_identical: dict[HistoricalRequest, float] = {}
        self._per_series: dict[tuple, deque[float]] = {}
        self._all: deque[float] = deque()

    def _forget(self, now: float) -> None:
        # Drop what no rule can see any more, so memory stays bounded by the windows.
        while self._all and now - self._all[0] >= self.global_window:
            self._all.popleft()
        for key in [k for k, t in self._last_identical.items() if now - t >= self.identical_window]:
            del self._last_identical[key]
        for key in list(self._per_series):
            q = self._per_series[key]
            while q and now - q[0] >= self.per_contract_window:
                q.popleft()
            if not q:
                del self._per_series[key]

    def _wait_locked(self, request: HistoricalRequest, now: float) -> float:
        self._forget(now)
        wait = 0.0
        last = self._last_identical.get(request)
        if last is not None:
            wait = max(wait, last + self.identical_window - now)
        q = self._per_series.get(request.series)
        if q is not None and len(q) >= self.per_contract_max:
            wait = max(wait, q[len(q) - self.per_contract_max] + self.per_contract_window - now)
        if len(self._all) >= self.global_max:
            wait = max(wait, self._all[len(self._all) - self.global_max] + self.global_window - now)
        return wait

    def wait_time(self, request: HistoricalRequest) -> float:
        """Seconds to wait before ``request`` may be sent (0.0 if it may go now)."""
        with self._lock:
            return self._wait_locked(request, self._clock())

    def record(self, request: HistoricalRequest) -> None:
        """Count ``request`` as sent now (whether or not the wait was respected)."""
        with self._lock:
            now = self._clock()
            self._forget(now)
            self._last_identical[request] = now
            self._per_series.setdefault(request.series, deque()).append(now)
            self._all.append(now)

    def acquire(
        self,
        request: HistoricalRequest,
        sleep: Callable[[float], object] = time.sleep,
        max_wait: float = GLOBAL_WINDOW + 60.0,
    ) -> float:
        """Wait until ``request`` is within budget, then record it; return the seconds waited.

        The check-and-record is atomic, so two threads cannot both take the last slot. Waiting
        happens outside the lock (``sleep`` may run an event loop).

        Raises
        ------
        PacingBudgetExceeded
            The total wait would exceed ``max_wait`` seconds (a budget shared with too many
            concurrent users); the step should fail and be retried later.
        """
        waited = 0.0
        for _ in range(10_000):  # bounded: each pass either records or sleeps a positive time
            with self._lock:
                now = self._clock()
                wait = self._wait_locked(request, now)
                if wait <= 0:
                    self._last_identical[request] = now
                    self._per_series.setdefault(request.series, deque()).append(now)
                    self._all.append(now)
                    return waited
            if waited + wait > max_wait:
                raise PacingBudgetExceeded(
                    f"IB pacing budget: request for {request.contract} ({request.what_to_show}) "
                    f"would wait {waited + wait:.0f} s, more than the {max_wait:.0f} s allowed; too "
                    "many historical requests on this login - run fewer IB steps at once"
                )
            sleep(wait)
            waited += wait
        raise PacingBudgetExceeded("IB pacing budget: the clock does not advance while sleeping")


class PacingBudgetExceeded(IBPacingViolation):
    """The pacing budget cannot admit a request within the allowed wait (nothing was sent)."""


_SHARED: PacingBudget | None = None
_SHARED_LOCK = threading.Lock()


def shared_budget() -> PacingBudget:
    """The process-wide budget every IB source uses unless given its own."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = PacingBudget()
        return _SHARED
