"""Benchmark: wall time of a single-run backfill (``trading-pipeline backfill START END``).

    python bench/bench_backfill.py --start 2012-12-28 --end 2022-12-28 --storage postgres sqlite --runs 3

Each run is a fresh process as a user starts it (CLI start-up included) on an empty lake and a new
Dagster instance: ``sqlite`` is the project's default ``dagster.yaml`` (written by the CLI);
``postgres`` is a throw-away PostgreSQL server from Debian's binaries (``tests/pg_server.py``) with
the instance's storage in it (``deploy/dagster.postgres.yaml`` with the credentials filled in).
``--pg-setting synchronous_commit=off`` passes server settings. After each run the run's step
times are read back from the instance, so the time outside the steps (run creation with its
"planned" events, start-up, imports) shows. Prints medians; record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pg_server import postgres_server  # noqa: E402

PG_YAML = ROOT / "deploy" / "dagster.postgres.yaml"


def _pg_env(server) -> dict[str, str]:
    return {"DAGSTER_PG_HOST": server.host, "DAGSTER_PG_PORT": str(server.port), "DAGSTER_PG_USER": server.user,
            "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": server.db}


def _step_times(home: Path, env: dict[str, str], run_id: str) -> dict[str, float]:
    code = ("import sys, dagster as dg; i = dg.DagsterInstance.get(); "
            "[print(s.step_key, s.end_time - s.start_time) for s in i.get_run_step_stats(sys.argv[1]) if s.end_time]")
    out = subprocess.run([sys.executable, "-c", code, run_id], env=env, capture_output=True, text=True, check=True)
    return {k: float(v) for k, v in (line.split() for line in out.stdout.splitlines() if line.strip())}


def one_run(start: str, end: str, storage: str, pg_settings: dict[str, str], config: str | None) -> tuple[float, dict]:
    """One backfill in a fresh folder; returns (wall seconds, details)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    home = workdir / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    try:
        with (postgres_server(pg_settings) if storage == "postgres" else contextlib.nullcontext()) as server:
            if server is not None:
                shutil.copy(PG_YAML, home / "dagster.yaml")
                env.update(_pg_env(server))
            cmd = [sys.executable, "-m", "pipeline.cli", "backfill", start, end, "--lake", str(workdir / "lake")]
            if config:
                cmd += ["--config", config]
            started = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=workdir)
            wall = time.perf_counter() - started
            if done.returncode:
                raise RuntimeError(f"backfill failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            match = re.search(r"one run \(([0-9a-f-]+)\), (\d+) sessions", done.stdout)
            details = {"sessions": int(match.group(2)) if match else None}
            if match:
                steps = _step_times(home, env, match.group(1))
                details["steps"] = sum(steps.values())
                details["slowest"] = sorted(steps.items(), key=lambda kv: -kv[1])[:4]
            return wall, details
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", default="2012-12-28")
    parser.add_argument("--end", default="2022-12-28")
    parser.add_argument("--storage", nargs="+", choices=["sqlite", "postgres"], default=["postgres"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-setting", action="append", default=[], help="postgresql.conf setting, NAME=VALUE")
    parser.add_argument("--config", help="pipeline config (default: the bundled sample)")
    args = parser.parse_args()
    pg_settings = dict(s.split("=", 1) for s in args.pg_setting)
    for storage in args.storage:
        walls = []
        for _ in range(args.runs):
            wall, details = one_run(args.start, args.end, storage, pg_settings, args.config)
            walls.append(wall)
            slow = ", ".join(f"{k} {v:.1f}" for k, v in details.get("slowest", []))
            print(f"  {storage}: {wall:.1f} s, {details.get('sessions')} sessions, steps {details.get('steps', 0):.1f} s "
                  f"(slowest: {slow})", flush=True)
        print(f"{storage} {args.start}..{args.end}: median {statistics.median(walls):.1f} s; "
              f"runs {', '.join(f'{w:.1f}' for w in walls)}", flush=True)


if __name__ == "__main__":
    main()
