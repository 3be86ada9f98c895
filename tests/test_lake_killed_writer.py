"""Promise 18: a writer killed in the middle of a Parquet write leaves the old file whole.

A subprocess replaces a session table's year file with a large table through
``atomic_write_parquet``. The parent waits until the temp file exists and has grown by several row
groups, freezes the writer (SIGSTOP, so the moment is fixed: the write is provably unfinished),
then SIGKILLs it. The old file still reads, equal to the old data; the torn temp file is not
Parquet and no reader of the lake (pandas through the lake, DuckDB over its glob) lists it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.store.lake import Lake

#: 16 million random doubles (128 MB, about 16 row groups that zstd cannot shrink): a write that
#: takes long enough for the parent to see it half done.
ROWS = 16_000_000
GROWN = (
    16 * 2**20
)  # bytes of temp file before the writer is stopped: two row groups or so

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    import pyarrow as pa

    from pipeline.store.lake import atomic_write_parquet

    rows = int(sys.argv[2])
    values = np.random.default_rng(0).random(rows)
    table = pa.table({"session": pa.array(np.full(rows, 19000, dtype="int32"), pa.date32()),
                      "instrument": pa.array(np.full(rows, "KO", dtype=object)), "close": values})
    print("ready", flush=True)
    atomic_write_parquet(table, Path(sys.argv[1]))
    print("done", flush=True)
    """
)


def _temp_files(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


def test_a_writer_killed_mid_write_leaves_the_old_file_whole_and_the_torn_temp_unread(
    tmp_path,
):
    lake = Lake(tmp_path / "lake")
    old = pd.DataFrame(
        {
            "session": pd.to_datetime(["2022-01-03", "2022-01-04", "2022-01-05"]),
            "instrument": ["KO", "KO", "KO"],
            "close": [61.1, 61.85, 62.4],
        }
    )
    lake.write_sessions("clean_bars", old, old["session"])
    (target,) = (tmp_path / "lake" / "clean_bars").glob("year=*/*.parquet")
    old_bytes = target.read_bytes()

    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(ROWS)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        deadline = (
            time.monotonic() + 120
        )  # a guard against a hung writer, not a timing assertion
        while time.monotonic() < deadline and writer.poll() is None:
            temps = _temp_files(target.parent, target.name)
            if temps and temps[0].stat().st_size >= GROWN:
                break
            time.sleep(0.001)
        os.kill(writer.pid, signal.SIGSTOP)
        temps = _temp_files(target.parent, target.name)
        assert writer.poll() is None and len(temps) == 1, (
            "the writer finished before it could be stopped mid-write"
        )
        size = temps[0].stat().st_size
        assert (
            size >= GROWN and target.read_bytes() == old_bytes
        )  # half written; the target untouched
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == -signal.SIGKILL

    # the old file: byte for byte, and it reads back as the old data
    assert target.read_bytes() == old_bytes
    table = pq.read_table(target)
    assert table.num_rows == 3 and table.column("close").to_pylist() == [
        61.1,
        61.85,
        62.4,
    ]
    pd.testing.assert_frame_equal(
        lake.read("clean_bars").reset_index(drop=True), old, check_dtype=False
    )

    # the temp file the kill left is torn (no footer), and nothing that lists the lake sees it
    (leftover,) = _temp_files(target.parent, target.name)
    assert leftover.stat().st_size >= size
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(leftover)
    assert lake.tables() == ["clean_bars"]
    assert len(lake.dataset("clean_bars").files) == 1
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT count(*), sum(close) FROM read_parquet('{lake.glob('clean_bars')}')"
        ).fetchall()
    finally:
        con.close()
    assert rows == [(3, pytest.approx(61.1 + 61.85 + 62.4))]

    # the next write replaces the file as usual; the leftover stays ignored
    new = old.assign(close=[70.0, 71.0, 72.0])
    lake.write_sessions("clean_bars", new, new["session"])
    assert lake.read("clean_bars")["close"].tolist() == [70.0, 71.0, 72.0]
