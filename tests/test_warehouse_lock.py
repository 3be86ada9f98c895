"""Readers and the ledger's writer: DuckDB admits readers or one writer, so a query waits it out."""

from __future__ import annotations

import subprocess
import sys
import time

import duckdb
import pytest

from pipeline.store import warehouse
from pipeline.store.warehouse import query


def _ledger(tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    path = lake / warehouse.WAREHOUSE_FILE
    con = duckdb.connect(str(path))
    con.execute("create table alerts as select 7 as n")
    con.close()
    return lake, path


def _hold(path, seconds: float) -> subprocess.Popen:
    """Another process that opens the ledger read-write (as a run's order step does) for ``seconds``."""
    code = (f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('held', flush=True); "
            f"time.sleep({seconds}); c.close()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_reader_waits_for_the_writer_and_then_reads(tmp_path):
    lake, path = _ledger(tmp_path)
    holder = _hold(path, 1.0)
    try:
        started = time.monotonic()
        assert query(lake, "select n from alerts")["n"].tolist() == [7]
        assert time.monotonic() - started > 0.2  # it had to wait for at least one back-off step
    finally:
        holder.wait(timeout=30)


def test_a_reader_gives_up_with_a_clear_error_when_the_writer_stays(tmp_path, monkeypatch):
    monkeypatch.setattr(warehouse, "ATTACH_BACKOFF", (0.1, 0.1))
    lake, path = _ledger(tmp_path)
    holder = _hold(path, 60)
    try:
        with pytest.raises(duckdb.IOException, match="holds its write lock: retry when it has finished"):
            query(lake, "select n from alerts")
    finally:
        holder.kill()
        holder.wait(timeout=30)
