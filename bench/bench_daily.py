"""Benchmark: the warm ``trading-pipeline daily`` against Dagster's own floor, in the same run.

    python bench/bench_daily.py --runs 3

Measures, as a user sees it (a fresh process each time, start-up included):
  cold  - the first daily run on an empty lake and a new Dagster instance (fills the history), once;
  warm  - a daily run on a lake that already holds history (the everyday case);
  floor - a Python process that calls ``dagster.materialize`` on two trivial assets with a persistent
          SQLite instance (``DAGSTER_HOME``): what any Dagster run costs on this machine.
Warm and floor runs alternate (warm, floor, warm, floor, ...) so both see the same machine load;
prints the medians, every run, the median step times of the warm runs (from the run's events) and the
ratio warm / floor, in wall time and in CPU time (user + system
of the child process, which a busy shared machine stretches much less). ``--tree DIR`` runs the daily of another
checkout of the project (e.g. an older version copied aside) with this interpreter. Record results
in docs/benchmarks.md ("Daily run") with the machine noted.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The floor: two trivial assets materialized into a persistent SQLite instance, timed as a process.
FLOOR = """
import dagster as dg

@dg.asset
def first() -> int:
    return 1

@dg.asset
def second(first: int) -> int:
    return first + 1

assert dg.materialize([first, second], instance=dg.DagsterInstance.get()).success
"""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one child process."""
    cpu, started = _cpu(), time.perf_counter()
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, cwd=cwd, text=True)
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return elapsed, cpu


def _daily(workdir: Path, tree: Path | None) -> tuple[float, float]:
    env = {**os.environ, "DAGSTER_HOME": str(workdir / "dagster_home")}
    cwd = workdir
    if tree is not None:  # the other checkout's packages first on sys.path
        env["PYTHONPATH"] = str(tree)
        cwd = tree
    return _timed([sys.executable, "-m", "pipeline.cli", "daily", "--lake", str(workdir / "lake")], env, cwd)


def _floor(workdir: Path) -> tuple[float, float]:
    home = workdir / "floor_home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    return _timed([sys.executable, "-c", FLOOR], env, workdir)


def _step_medians(home: Path, runs: int) -> dict[str, float]:
    """Median duration of each step over the last ``runs`` runs recorded in the instance at ``home``."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        steps: dict[str, list[float]] = {}
        for run in instance.get_runs(limit=runs):
            for stat in instance.get_run_step_stats(run.run_id):
                if stat.end_time and stat.start_time:
                    steps.setdefault(stat.step_key, []).append(stat.end_time - stat.start_time)
    return {k: statistics.median(v) for k, v in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="warm runs and floor runs (each)")
    parser.add_argument("--tree", type=Path, default=None, help="checkout of the project to run the daily of")
    args = parser.parse_args()
    tree = args.tree.resolve() if args.tree else None
    workdir = Path(tempfile.mkdtemp(prefix="bench-daily-"))
    try:
        cold = _daily(workdir, tree)  # fills the history; also writes the instance's dagster.yaml
        _floor(workdir)  # the floor's instance exists before its timed runs, as the daily's does
        warm, floor = [], []
        for _ in range(args.runs):
            warm.append(_daily(workdir, tree))
            floor.append(_floor(workdir))
        steps = _step_medians(workdir / "dagster_home", args.runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"cold (empty lake, history filled): wall {cold[0]:.1f} s, CPU {cold[1]:.1f} s")
    for name, runs in (("warm daily", warm), ("floor (2 trivial assets)", floor)):
        for i, kind in enumerate(("wall", "CPU")):
            xs = [r[i] for r in runs]
            print(f"{name}, {kind}: median {statistics.median(xs):.2f} s; runs {', '.join(f'{x:.2f}' for x in xs)}")
    print("warm daily, median step times: " + ", ".join(f"{k} {v:.2f} s" for k, v in
                                                         sorted(steps.items(), key=lambda kv: -kv[1])))
    for i, kind in enumerate(("wall", "CPU")):
        ratio = statistics.median(r[i] for r in warm) / statistics.median(r[i] for r in floor)
        print(f"ratio warm / floor ({kind}): {ratio:.2f}")
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
