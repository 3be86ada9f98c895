"""The order-run lock: one order run per strategy at a time.

An exclusive ``flock`` on ``<ledger folder>/locks/orders-<strategy>.lock``
(:func:`pipeline.store.locks.exclusive_lock`) covers the daily schedule, ``execute_job``, the CLI
and a second process on the same lake (reliability.md §5 scenario 10), and, unlike a Dagster
pool slot, is released by the operating system when its process dies. A submitting
:func:`pipeline.execution.submit.execute_orders` run holds it for its whole length.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pipeline.store.ledger import Ledger
from pipeline.store.locks import LockBusy, exclusive_lock
from pipeline.trading import OrderError


class OrderRunLocked(OrderError):
    """Another order run of the same strategy holds the lock; this one sent nothing."""


@contextmanager
def order_run_lock(ledger: Ledger, strategy: str) -> Iterator[Path]:
    """Hold the one-order-run-at-a-time lock of ``strategy`` (an exclusive ``flock``).

    The file is ``<ledger folder>/locks/orders-<strategy>.lock``; a run killed without cleanup
    releases it with its process.

    Raises
    ------
    OrderRunLocked
        At once (no waiting) when another run, in this or another process, holds it.
    """
    path = ledger.path.parent / "locks" / f"orders-{strategy}.lock"
    with ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(path))
        except LockBusy as exc:
            raise OrderRunLocked(
                f"order run locked: another order run of strategy {strategy!r} holds {path}; "
                "nothing was sent by this one (re-run once it has finished: it sends only what is missing)"
            ) from exc
        yield path
