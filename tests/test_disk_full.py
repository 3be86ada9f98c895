"""Disk full fails closed (reliability.md §7 promise 22): a daily run whose writes hit the file-size
limit (``RLIMIT_FSIZE``, the way a full disk refuses a write: ``EFBIG``) fails before its order
step, and every lake file it could not write is the file it was before (atomic writes: temp file,
fsync, ``os.replace``)."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.config import load_config
from pipeline.store.ledger import Ledger
from tests.conftest import write_config

ROOT = Path(__file__).resolve().parents[1]


def _daily(session: str, config: Path, home: Path, file_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit_file_size() -> None:  # in the child: writes beyond the limit fail with EFBIG, not SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "pipeline.cli", "daily", "--session", session, "--config", str(config)],
                          cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True,
                          timeout=900, preexec_fn=limit_file_size if file_limit else None)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_write_that_hits_the_file_size_limit_fails_the_run_before_the_order_step_with_old_data_intact(tmp_path):
    # the bundled universe: its year of forecasts, which the second run rewrites, outgrows Dagster's files
    config = write_config(tmp_path, symbols=load_config().symbols)
    home, lake = tmp_path / "dagster_home", tmp_path / "lake"
    first = _daily("2022-12-27", config, home)
    assert first.returncode == 0, first.stderr[-3000:]
    ledger = Ledger.at_lake(lake).init()
    intents = ledger.intents()
    assert len(intents) and set(intents["session"].astype(str).str[:10]) == {"2022-12-27"}

    # a limit above every file Dagster writes, below the lake's largest year files (the ledger is
    # only read before the order step)
    limit = int(2 * max(p.stat().st_size for p in home.rglob("*") if p.is_file()))
    lake_files = {p: _sha(p) for p in lake.rglob("*.parquet")}
    too_big = [p for p in lake_files if p.stat().st_size > limit]
    assert any("forecasts/year=2022" in str(p) for p in too_big), (limit, sorted(p.stat().st_size for p in lake_files))

    second = _daily("2022-12-28", config, home, file_limit=limit)
    assert second.returncode == 1, second.stdout[-2000:] + second.stderr[-2000:]
    assert "FAILED" in second.stderr and "File too large" in second.stderr
    for path in too_big:  # what could not be written is what it was, and still reads
        assert _sha(path) == lake_files[path]
        assert pq.read_table(path).num_rows > 0
    assert not list(lake.rglob("*.tmp"))  # no torn temp file left behind
    after = Ledger.at_lake(lake).init().intents()
    assert len(after) == len(intents)  # the order step never ran: nothing planned, nothing sent
    assert "2022-12-28" not in set(after["session"].astype(str).str[:10])
