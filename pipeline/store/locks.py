"""Exclusive locks the operating system releases when their process dies (``flock``).

One order run per strategy, one bar fetch at a time: these rest on a lock file in the local state
folder (``<state>/locks/<name>.lock``) rather than on a Dagster pool slot, which a run killed
without cleanup (SIGKILL, power loss) would keep claimed until a daemon frees it, blocking every
later run (reliability.md §7 promise 20). The kernel drops an ``flock`` with the last descriptor
of its file, so a dead holder never blocks anyone.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockBusy(RuntimeError):
    """Another live process holds the lock (and waiting was not allowed, or timed out)."""


@contextmanager
def exclusive_lock(path: Path, *, wait: float = 0.0, poll: float = 0.05) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` (created with its folder if missing).

    Parameters
    ----------
    path : Path
        The lock file.
    wait : float
        Seconds to wait for a holder to finish; 0 fails at once.
    poll : float
        Seconds between attempts while waiting.

    Raises
    ------
    LockBusy
        Another process holds the lock after ``wait`` seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"{path} is held by another process") from None
                time.sleep(poll)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
