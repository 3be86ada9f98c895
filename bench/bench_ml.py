"""Benchmark and report: training + walk-forward evaluation of the ML models on the bundled sample.

    python bench/bench_ml.py --runs 3            # median of 3 runs, each a fresh process
    python bench/bench_ml.py --report            # one run, printing every out-of-sample table

Inputs are the pipeline's own ``volatility`` and ``combined_forecast`` tables for the default
configuration (15 instruments, 1990-01-02 .. 2022-12-28). They are read from ``--lake``; if that
lake lacks them, one untimed daily run of the main job fills it first. Timed stages (each the
pipeline's own functions; one thread for BLAS/OpenMP, as in the assets):

  inputs      market features, vol and trend labels, simple-rule returns (regime_inputs)
  vol_label   compare_models on the vol label: persistence, majority, logistic, random forest,
              gradient boosting, Gaussian mixture; 30 yearly purged walk-forward refits each
  trend_label the same comparison on the trend-vs-range label
  importance  permutation importance over 5 purged folds (logistic)
  gmm_states  walk-forward Gaussian-mixture states (3 states, yearly)
  overlay     OOS Sharpe difference of the regime-scaled system vs the simple rule, bootstrap CI,
              and the point-in-time gate at every refit
  vol         vol_forecast_panel + walk-forward HAR, HAR + sizing vol, gradient boosting

Each stage's wall time and CPU time (``time.process_time``) are printed: on a shared machine the
wall time grows with the load while the CPU time does not. Budget (issue 6): the whole pass under
2 minutes (wall) on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_LAKE = Path(tempfile.gettempdir()) / "trading-pipeline-bench-ml" / "lake"
STAGES = ["inputs", "vol_label", "trend_label", "importance", "gmm_states", "overlay", "vol"]


def ensure_lake(lake_root: Path) -> None:
    """Fill ``lake_root`` with one daily run of the main job if it lacks the input tables."""
    from pipeline.store.lake import Lake

    lake = Lake(lake_root)
    if {"volatility", "combined_forecast"} <= set(lake.tables()):
        return
    env = {**os.environ, "DAGSTER_HOME": str(lake_root.parent / "dagster_home")}
    subprocess.run([sys.executable, "-m", "pipeline.cli", "daily", "--lake", str(lake_root), "--no-submit"],
                   env=env, check=True, capture_output=True, cwd=lake_root.parent)


def ml_pass(lake_root: Path, report: bool = False) -> dict:
    """Run every stage once; return ``{"stages": {name: seconds}, "results": {...}}``."""
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from pipeline.config import load_config
    from pipeline.ml.regime_evidence import (
        calibration_table,
        fit_sessions,
        regime_inputs,
    )
    from pipeline.ml.regime_models import (
        compare_models,
        feature_importance_stability,
        gaussian_mixture_states,
        overlay_evidence,
        overlay_gate,
    )
    from pipeline.ml.vol_forecast import vol_forecast_panel, walk_forward_vol_forecast
    from pipeline.store.lake import Lake

    cfg = load_config(None)
    rc, vc = cfg.regime, cfg.vol_forecast
    lake = Lake(lake_root)
    closes = lake.read_wide("volatility", "close", cfg.symbols)
    vol = lake.read_wide("volatility", "vol_price", cfg.symbols)
    combined = lake.read_wide("combined_forecast", "combined", cfg.symbols).reindex(closes.index)
    stages: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    results: dict = {}

    def timed(name, fn):
        start, cpu = time.perf_counter(), time.process_time()
        with threadpool_limits(limits=1):
            out = fn()
        stages[name] = time.perf_counter() - start
        cpu_seconds[name] = time.process_time() - cpu
        return out

    inputs = timed("inputs", lambda: regime_inputs(closes, vol, combined, rc.horizon))
    f = inputs.features
    sched = {"horizon": rc.horizon, "retrain_every": rc.retrain_every, "min_train": rc.min_train}
    vol_cmp = timed("vol_label", lambda: compare_models(f, inputs.vol_labels, **sched, baseline=inputs.vol_state))
    trend_cmp = timed("trend_label", lambda: compare_models(f, inputs.trend_labels, **sched, baseline=inputs.trend_state))
    stability = timed("importance", lambda: feature_importance_stability(f, inputs.vol_labels, rc.horizon, 5))
    states = timed("gmm_states", lambda: gaussian_mixture_states(f, 3, rc.retrain_every, rc.min_train, "port_vol21"))
    p = vol_cmp.results["logistic"].probability

    def overlay():
        decisions = fit_sessions(closes.index, rc.min_train, rc.retrain_every)
        gate = overlay_gate(inputs.simple_returns, p, rc.high_vol_scale, decisions,
                            min_sessions=rc.min_oos_sessions, n_boot=500, ci=rc.evidence_ci)
        by_model = {name: overlay_evidence(inputs.simple_returns, r.probability, rc.high_vol_scale, n_boot=1000,
                                           ci=rc.evidence_ci) for name, r in vol_cmp.results.items() if name != "majority"}
        return gate, by_model

    gate, by_model = timed("overlay", overlay)

    def vol_stage():
        panel = vol_forecast_panel(closes, vol, vc.horizon)
        return walk_forward_vol_forecast(panel, vc.horizon, vc.retrain_every, vc.min_train, train_stride=vc.train_stride)

    vol_result = timed("vol", vol_stage)
    results["sessions"] = [str(closes.index[0].date()), str(closes.index[-1].date())]
    results["gate_on_share"] = float(gate["on"].mean())
    if report:
        pd.set_option("display.width", 200)
        pd.set_option("display.max_columns", 20)
        cols = ["n_scored", "accuracy", "balanced_accuracy", "log_loss", "brier", "mcnemar_p_holm", "beats_baseline"]
        print("== vol label (high vol over the next 21 sessions): walk-forward, out of sample ==")
        print(vol_cmp.table[cols].round(3).to_string())
        print("\n== trend label (simple rule profitable over the next 21 sessions) ==")
        print(trend_cmp.table[cols].round(3).to_string())
        print("\n== calibration of the logistic model (vol label) ==")
        print(calibration_table(p, inputs.vol_labels).round(3).to_string())
        print(f"\n== permutation importance, mean Spearman of consecutive folds: {stability.mean_rank_correlation:.3f} ==")
        print(stability.importances.mean().sort_values(ascending=False).round(4).to_string())
        print("\n== Gaussian-mixture states (out of sample): share, next-21-session high-vol rate, simple-rule Sharpe ==")
        frame = pd.DataFrame({"state": states["state"], "high": inputs.vol_labels,
                              "next_r": inputs.simple_returns.shift(-1)}).dropna()
        summary = frame.groupby("state").agg(share=("high", "size"), high_vol_rate=("high", "mean"),
                                             mean=("next_r", "mean"), std=("next_r", "std"))
        summary["share"] = summary["share"] / summary["share"].sum()
        summary["sharpe"] = summary["mean"] / summary["std"] * 16
        print(summary[["share", "high_vol_rate", "sharpe"]].round(3).to_string())
        print("\n== regime risk scale vs the simple rule (OOS Sharpe, 90% paired block-bootstrap interval) ==")
        for name, ev in by_model.items():
            print(f"{name:18s} simple {ev.sharpe_simple:+.3f} scaled {ev.sharpe_scaled:+.3f} diff {ev.difference:+.3f} "
                  f"[{ev.ci_lower:+.3f}, {ev.ci_upper:+.3f}] n={ev.n_sessions}")
        print(f"point-in-time gate on at {int(gate['on'].sum())} of {len(gate)} refits")
        print("\n== next-21-session vol forecasts vs the sizing vol (out of sample) ==")
        print(vol_result.scores.round(4).to_string())
    return {"stages": stages, "cpu": cpu_seconds, "results": results}


def _child(lake: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", "--lake", str(lake)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lake", type=Path, default=DEFAULT_LAKE)
    parser.add_argument("--report", action="store_true", help="one in-process run printing the OOS tables")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.lake.parent.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(ml_pass(args.lake)))
        return
    ensure_lake(args.lake)
    if args.report:
        out = ml_pass(args.lake, report=True)
        print("\nstages (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in out["stages"].items())
              + f"; total {sum(out['stages'].values()):.1f} (CPU {sum(out['cpu'].values()):.1f})")
        return
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs = [_child(args.lake) for _ in range(args.runs)]
    totals = [sum(r["stages"].values()) for r in runs]
    cpu_totals = [sum(r["cpu"].values()) for r in runs]
    for stage in STAGES:
        xs, cs = [r["stages"][stage] for r in runs], [r["cpu"][stage] for r in runs]
        print(f"{stage:12s} wall median {statistics.median(xs):6.1f} s  runs {', '.join(f'{x:.1f}' for x in xs)}"
              f"  | CPU median {statistics.median(cs):6.1f} s")
    print(f"{'total':12s} wall median {statistics.median(totals):6.1f} s  runs {', '.join(f'{x:.1f}' for x in totals)}"
          f"  | CPU median {statistics.median(cpu_totals):6.1f} s  (budget 120 s wall)")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
