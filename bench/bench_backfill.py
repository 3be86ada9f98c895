"""Benchmark: wall time of a single-run backfill (``trading-pipeline backfill START END``).

    python bench/bench_backfill.py --start 2012-12-28 --end 2022-12-28 --storage postgres sqlite --runs 3
    python bench/bench_backfill.py --carver --storage postgres --runs 3     # 238 futures, 2013-09-03 .. 2023-08-31

``--carver [FOLDER]`` runs on pysystemtrade's 238-instrument futures set (default
``../shared/data/futures_carver_2023``; exits 0 with a message when it is absent), prepared once in
a temporary folder by ``scripts/carver_pipeline.py`` (bars on NYSE sessions from 2010-01-04,
config from its instrument config); its default range is the last 10 years of the data.

Each run is a fresh process as a user starts it (CLI start-up included) on an empty lake and a new
Dagster instance: ``sqlite`` is the project's default ``dagster.yaml`` (written by the CLI);
``postgres`` is a throw-away PostgreSQL server from Debian's binaries (``tests/pg_server.py``) with
the instance's storage in it (``deploy/dagster.postgres.yaml`` with the credentials filled in).
``--pg-setting synchronous_commit=off`` passes server settings. After each run the run's step
times are read back from the instance, so the time outside the steps (run creation with its
"planned" events, start-up, imports) shows. The 1-minute load average before and after each run
is printed beside it (other work on the machine stretches the times). Prints medians; record them
in docs/benchmarks.md.
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
CARVER_DATA = ROOT.parent / "shared" / "data" / "futures_carver_2023"


def _pg_env(server) -> dict[str, str]:
    return {"DAGSTER_PG_HOST": server.host, "DAGSTER_PG_PORT": str(server.port), "DAGSTER_PG_USER": server.user,
            "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": server.db}


def _step_times(home: Path, env: dict[str, str], run_id: str) -> dict[str, float]:
    """Seconds per step of the run, and ``run_creation``: from the run record's creation to the
    run's start, which is where Dagster stores the run's "planned" events."""
    code = ("import sys, dagster as dg; i = dg.DagsterInstance.get(); r = i.get_run_record_by_id(sys.argv[1]); "
            "print('run_creation', r.start_time - r.create_timestamp.timestamp()); "
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
                details["creation"] = steps.pop("run_creation")
                details["steps"] = sum(steps.values())
                details["slowest"] = sorted(steps.items(), key=lambda kv: -kv[1])[:5]
            return wall, details
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


CARVER_RANGE = ("2013-09-03", "2023-08-31")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", help="first session (default 2012-12-28; --carver: 2013-09-03)")
    parser.add_argument("--end", help="last session (default 2022-12-28; --carver: 2023-08-31)")
    parser.add_argument("--storage", nargs="+", choices=["sqlite", "postgres"], default=["postgres"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-setting", action="append", default=[], help="postgresql.conf setting, NAME=VALUE")
    parser.add_argument("--config", help="pipeline config (default: the bundled sample)")
    parser.add_argument("--carver", nargs="?", const=str(CARVER_DATA), type=Path,
                        help="run on pysystemtrade's 238-instrument set (default folder: %(const)s)")
    args = parser.parse_args()
    pg_settings = dict(s.split("=", 1) for s in args.pg_setting)
    start, end = args.start or "2012-12-28", args.end or "2022-12-28"
    with contextlib.ExitStack() as stack:
        config = args.config
        if args.carver is not None:
            if not (args.carver / "adjusted_prices_daily.parquet").exists():
                print(f"no pysystemtrade 2023 set at {args.carver}: nothing to run")
                return
            from scripts.carver_pipeline import prepare

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-carver-")))
            config = str(prepare(folder, args.carver))
            start, end = args.start or CARVER_RANGE[0], args.end or CARVER_RANGE[1]
        for storage in args.storage:
            walls = []
            for _ in range(args.runs):
                load_before = os.getloadavg()[0]
                wall, details = one_run(start, end, storage, pg_settings, config)
                walls.append(wall)
                slow = ", ".join(f"{k} {v:.1f}" for k, v in details.get("slowest", []))
                print(f"  {storage}: {wall:.1f} s, {details.get('sessions')} sessions, run creation "
                      f"{details.get('creation', float('nan')):.1f} s, steps {details.get('steps', 0):.1f} s "
                      f"(slowest: {slow}); load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
                      flush=True)
            print(f"{storage} {start}..{end}: median {statistics.median(walls):.1f} s; "
                  f"runs {', '.join(f'{w:.1f}' for w in walls)}", flush=True)


if __name__ == "__main__":
    main()
