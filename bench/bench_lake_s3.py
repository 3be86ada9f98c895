"""Benchmark: the main job and ``trading-pipeline query`` with the lake on a local folder vs in S3.

    python bench/bench_lake_s3.py --runs 3

The S3 lake is a bucket of moto's S3 server on 127.0.0.1 (``pip install -e '.[test]'``), so the
numbers show the cost of going through ``pyarrow.fs`` and HTTP (one PUT per file, a LIST per
table read), not a real object store's network latency. For each lake, per run (a fresh process,
CLI start-up included, as in ``bench_daily.py``):
  cold  - the first daily run on an empty lake (fills the bundled sample's 33 years of history);
  warm  - the same session again on the filled lake;
  query - ``pipeline.store.warehouse.query`` of the documented "positions and P&L by asset class"
          example, in-process (connection set-up, table listing, scan), median of 5 calls.
Prints the median and every run; record results in docs/benchmarks.md with the machine noted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import yaml

ROOT = Path(__file__).resolve().parents[1]
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
SQL = """
select i.asset_class, count(*) as instruments, sum(abs(p.target * p.price)) as gross_exposure
from target_positions p join instruments i using (instrument)
where p.session = date '2022-12-28' group by i.asset_class order by i.asset_class
"""


def _config(workdir: Path, lake: str, state: Path) -> Path:
    raw = yaml.safe_load((ROOT / "pipeline" / "data" / "default_config.yaml").read_text())
    raw.update(lake_root=lake, state_root=str(state))
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _daily(workdir: Path, config: Path) -> float:
    env = {**os.environ, **AWS_ENV, "DAGSTER_HOME": str(workdir / "dagster_home"), "TRADING_PIPELINE_CONFIG": str(config)}
    env.pop("TRADING_PIPELINE_LAKE", None)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", "daily", "--session", "2022-12-28", "--no-submit"],
                   env=env, check=True, capture_output=True, cwd=workdir)
    return time.perf_counter() - started


def _query(lake: str, config: Path) -> float:
    from pipeline.config import load_config
    from pipeline.store.paths import state_path
    from pipeline.store.warehouse import query

    cfg = load_config(config)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        query(lake, SQL, cfg, state_root=state_path(cfg, lake))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ENV)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    pafs.FileSystem.from_uri(f"s3://bench?{options}&allow_bucket_creation=true")[0].create_dir("bench")
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for i in range(args.runs):
            for kind in ("local", "s3"):
                workdir = Path(tempfile.mkdtemp(prefix=f"bench-lake-{kind}-"))
                try:
                    lake = str(workdir / "lake") if kind == "local" else f"s3://bench/run{i}?{options}"
                    config = _config(workdir, lake, workdir / "state")
                    r = results.setdefault(kind, {"cold": [], "warm": [], "query": []})
                    r["cold"].append(_daily(workdir, config))
                    r["warm"].append(_daily(workdir, config))
                    r["query"].append(_query(lake, config))
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
    finally:
        server.stop()
    for kind, r in results.items():
        for name, xs in r.items():
            print(f"{kind:5s} {name:5s}: median {statistics.median(xs):.2f} s; runs {', '.join(f'{x:.2f}' for x in xs)}")


if __name__ == "__main__":
    main()
