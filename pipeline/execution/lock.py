"""The order-run lock: one order run per strategy at a time.

Dagster's run queue and the ``broker`` pool only limit *launched* runs; an exclusive ``flock``
on ``<ledger folder>/locks/orders-<strategy>.lock`` also covers ``execute_job``, the CLI and a
second process on the same lake (reliability.md §5 scenario 10). A submitting
:func:`pipeline.execution.submit.execute_orders` run holds it for its whole length.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.store.ledger import Ledger
from pipeline.trading import OrderError


class OrderRunLocked(OrderError):
    """Another order run of the same strategy holds the lock; this one sent nothing."""


@contextmanager
def order_run_lock(ledger: Ledger, strategy: str) -> Iterator[Path]:
    """Hold the one-order-run-at-a-time lock of ``strategy`` (an exclusive ``flock``).

    The file is ``<ledger folder>/locks/orders-<strategy>.lock``. Dagster's run queue and the
    ``broker`` pool only limit *launched* runs; this lock also covers ``execute_job``, the CLI
    and a second machine process on the same lake (reliability.md §5 scenario 10).

    Raises
    ------
    OrderRunLocked
        At once (no waiting) when another run, in this or another process, holds it.
    """
    folder = ledger.path.parent / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"orders-{strategy}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OrderRunLocked(
                f"order run locked: another order run of strategy {strategy!r} holds {path}; "
                "nothing was sent by this one (re-run once it has finished: it sends only what is missing)"
            ) from exc
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
