"""Benchmark: wall time of the main job (``trading-pipeline daily``) on the bundled sample.

    python bench/bench_daily.py --runs 5

Measures, as a user sees it (a fresh process each time, CLI start-up included):
  cold  - the first daily run on an empty lake and a new Dagster instance (fills 33 years of history);
  warm  - a daily run on a lake that already holds history (the everyday case).
Prints the median and every run; record results in docs/benchmarks.md with the machine noted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _daily(workdir: Path, extra: list[str]) -> float:
    env = {**os.environ, "DAGSTER_HOME": str(workdir / "dagster_home")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", "daily", "--lake", str(workdir / "lake"), *extra],
                   env=env, check=True, capture_output=True, cwd=workdir)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.runs):
        workdir = Path(tempfile.mkdtemp(prefix="bench-daily-"))
        try:
            cold.append(_daily(workdir, []))
            warm.append(_daily(workdir, []))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    for name, xs in (("cold (empty lake, history filled)", cold), ("warm (history present)", warm)):
        print(f"{name}: median {statistics.median(xs):.1f} s; runs {', '.join(f'{x:.1f}' for x in xs)}")


if __name__ == "__main__":
    main()
