"""Provenance of orders: which code and which inputs produced an intent (the audit trail of
reliability.md §6: code git SHA, input-data hash, run id)."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def code_version() -> str:
    """``"<package version>+<git sha>"`` (``+<sha>.dirty`` with uncommitted changes), or just the
    package version outside a git checkout. Cached for the process."""
    try:
        version = metadata.version("trading-pipeline")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        sha = subprocess.run(
            ["git", "-C", str(_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+{sha}{'.dirty' if dirty else ''}" if sha else version


def input_hash(*frames: pd.DataFrame | pd.Series) -> str:
    """SHA-256 (hex, first 16 characters) of the values, index and column labels of ``frames``.

    Equal inputs give equal hashes in any process (``pandas.util.hash_pandas_object`` is
    deterministic); any changed value, label or order changes it.
    """
    h = hashlib.sha256()
    for frame in frames:
        h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
        labels = frame.columns if isinstance(frame, pd.DataFrame) else [frame.name]
        h.update(repr(list(labels)).encode())
    return h.hexdigest()[:16]
