"""A manual clock for pacing: time advances only when ``sleep`` is called."""

from __future__ import annotations


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
