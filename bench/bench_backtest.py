"""Benchmark: backtest accounting speed and exactness, full backtest and walk-forward on real data.

    python bench/bench_backtest.py                  # every case, 5 timed runs each
    python bench/bench_backtest.py --case panel     # panel | carver | walkforward
    python bench/bench_backtest.py --runs 3 --data FOLDER   # default: ../shared/data/futures_carver_2023

Cases (issue "Backtests that researchers trust", budgets in brackets):

``panel``
    P&L and costs of 500 instruments x 10,000 sessions of random integer target positions
    (random-walk prices, 5 bp commission on traded notional), with
    :func:`pipeline.research.backtest.simulate`, beside vectorbt's ``Portfolio.from_orders`` with
    ``size_type="targetamount"`` on the same positions (each target filled at the next close, as
    ``simulate`` does) in the same process. The daily P&L of every instrument must agree to 1e-9
    (vectorbt's per-instrument value minus its initial cash, differenced), and ``simulate`` must be
    at least 10x faster [>= 10x]. vectorbt is not a project dependency: ``pip install vectorbt``
    to run the comparison; without it only ``simulate`` is timed. The first vectorbt call compiles
    its numba kernels and is not timed.
``carver``
    A full backtest with analytics over pysystemtrade's 238-instrument daily set: the production
    forecasts, combination, weights and sizing on the whole history (the research pass of
    ``bench/bench_research.py``, not timed here), then timed: ``simulate`` with the instruments'
    point sizes and costs, and :func:`pipeline.research.results.summarise` (performance, VaR/CVaR,
    stress, round-trip trades and their statistics, attribution) [< 10 s].
``walkforward``
    :func:`pipeline.research.walk_forward.walk_forward_backtest` of the same set with 20 folds
    (train 1024, test 256 sessions over the last 6,144 sessions) [< 3 min], every estimated
    parameter refitted on each training window: forecast scalars, bootstrapped forecast weights
    (net of SR costs, 100 draws), speed-limit exclusions, FDM, instrument weights and IDM.

Wall times are medians of ``--runs`` consecutive timed runs in one process after a warm-up run;
process CPU time is printed beside them, since other work on the machine inflates wall times. Exits 0 with
a message when the Carver data is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.config import CostModel
from pipeline.instruments import point_sizes
from pipeline.research.backtest import simulate

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "futures_carver_2023"
PANEL_SHAPE = (10_000, 500)
FEE = 0.0005


def timed(fn, runs: int) -> tuple[float, float, list[float], object]:
    """(median wall s, median CPU s, wall times, last result) of ``runs`` calls after one warm-up."""
    out = fn()
    walls, cpus = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), walls, out


def panel(runs: int) -> None:
    n_sessions, n_instruments = PANEL_SHAPE
    rng = np.random.default_rng(0)
    index = pd.DatetimeIndex(pd.bdate_range("1985-01-01", periods=n_sessions), name="session")
    cols = pd.Index([f"I{i:03d}" for i in range(n_instruments)], name="instrument")
    prices = pd.DataFrame(100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, PANEL_SHAPE), axis=0)), index, cols)
    targets = pd.DataFrame(rng.integers(-100, 101, PANEL_SHAPE).astype(float), index, cols)
    point_size = pd.Series(1.0, index=cols)
    costs = {c: CostModel(commission_pct=FEE) for c in cols}

    def run_ours():
        return simulate(targets, prices, point_size, costs, 1e7)

    try:
        import vectorbt as vbt
    except ImportError:
        wall, cpu, _, _ = timed(run_ours, runs)
        print(f"panel {n_sessions} x {n_instruments}: simulate median {wall * 1e3:.0f} ms wall, {cpu * 1e3:.0f} ms CPU")
        print("  vectorbt is not installed (pip install vectorbt): comparison skipped")
        return

    def run_vbt():
        pf = vbt.Portfolio.from_orders(prices, size=targets.shift(1).fillna(0.0), size_type="targetamount",
                                       price=prices, fees=FEE, init_cash="auto", direction="both", freq="1D")
        return pf.value(), pf.init_cash, pf.assets()

    # Each tool is warmed up (vectorbt compiles its numba kernels) and then timed over consecutive runs:
    # alternating them makes each call pay for re-faulting the memory the other one just released.
    run_vbt()
    times: dict[str, list[tuple[float, float]]] = {}
    for name, fn in (("simulate", run_ours), ("vectorbt", run_vbt)):
        fn()
        times[name] = []
        for _ in range(runs):
            w, c = time.perf_counter(), time.process_time()
            out = fn()
            times[name].append((time.perf_counter() - w, time.process_time() - c))
        if name == "simulate":
            res = out
        else:
            value, init_cash, assets = out
    med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}
    for name, (wall, cpu) in med.items():
        runs_ms = ", ".join(f"{t[0] * 1e3:.0f}" for t in times[name])
        print(f"panel {n_sessions} x {n_instruments}: {name} median {wall * 1e3:.0f} ms wall, {cpu * 1e3:.0f} ms CPU "
              f"(runs {runs_ms} ms)")
    held = float((res.holdings - assets).abs().to_numpy().max())
    theirs = value.diff()
    theirs.iloc[0] = value.iloc[0] - init_cash
    diff = float((res.pnl_net - theirs).abs().to_numpy().max())
    scale = float(res.pnl_net.abs().to_numpy().max())
    print(f"  speed-up {med['vectorbt'][0] / med['simulate'][0]:.1f}x wall, {med['vectorbt'][1] / med['simulate'][1]:.1f}x "
          "CPU (budget >= 10x)")
    print(f"  holdings identical: {held == 0.0}; max |daily P&L difference| {diff:.2e}, {diff / scale:.1e} of the "
          f"largest |daily P&L| ({scale:,.0f}; budget 1e-9 relative: vectorbt books P&L through a cash balance "
          "whose float rounding alone is ~1e-9 absolute at these sizes)")


def _carver_inputs(folder: Path):
    """Production positions over the Carver set (untimed): closes, vol, raw forecasts, config, targets."""
    from pipeline.adapters.pysystemtrade import read_instrument_config, to_instruments
    from pipeline.config import PipelineConfig
    from pipeline.portfolio.instrument_weights import estimate_instrument_weights
    from pipeline.portfolio.sizing import target_positions
    from pipeline.signals.combine import (
        combine_forecasts,
        estimate_fdm,
        forecast_weights,
    )
    from pipeline.signals.forecasts import (
        compute_forecasts,
        estimate_forecast_scalars,
        rescale,
    )
    from pipeline.signals.volatility import robust_vol, vol_normalised_returns
    from scripts.carver_fidelity import load_carver_2023

    data = load_carver_2023(folder)
    closes = data.prices
    instruments = [i for i in to_instruments(read_instrument_config(
        folder / "csvconfig" / "instrumentconfig.csv", folder / "csvconfig" / "spreadcosts.csv"))
        if i.symbol in closes.columns]
    closes = closes[[i.symbol for i in instruments]]
    cfg = PipelineConfig(instruments=instruments, portfolio={"capital": 50_000_000})
    vol = robust_vol(closes)
    fset = compute_forecasts(closes, vol, cfg.rules)
    fset = rescale(fset, estimate_forecast_scalars(fset), cfg.rules.forecast_cap, fallback=cfg.rules.forecast_scalars)
    weights = forecast_weights(cfg.rules.rule_names, None)
    combined = combine_forecasts(fset.capped, weights, estimate_fdm(fset.capped, weights), cap=20.0)
    est = estimate_instrument_weights(vol_normalised_returns(closes, vol), 1280, 126, 2.5)
    w, idm = est.daily(closes.index)
    point_size = point_sizes(instruments)
    targets = target_positions(closes, vol, combined.reindex(columns=closes.columns), w.reindex(columns=closes.columns),
                               idm, point_size, cfg.portfolio).target
    return closes, vol, fset.raw, cfg, targets


def carver(folder: Path, runs: int) -> None:
    from pipeline.research.results import BacktestRun, summarise

    started = time.perf_counter()
    closes, vol, raw, cfg, targets = _carver_inputs(folder)
    print(f"carver: {closes.shape[1]} instruments x {closes.shape[0]} sessions; positions built in "
          f"{time.perf_counter() - started:.1f} s (not timed)")
    point_size = point_sizes(cfg.instruments)
    costs = {i.symbol: i.costs for i in cfg.instruments}
    classes = {i.symbol: i.asset_class for i in cfg.instruments}

    def backtest():
        res = simulate(targets.fillna(0.0), closes, point_size, costs, cfg.portfolio.capital)
        return summarise(BacktestRun("carver", res, classes, point_size, {}, vol_target=cfg.portfolio.vol_target), "bench")

    wall, cpu, walls, summary = timed(backtest, runs)
    perf = summary["performance"]["values"]
    print(f"  simulate + summarise: median {wall:.2f} s wall, {cpu:.2f} s CPU (runs {', '.join(f'{w:.2f}' for w in walls)}"
          f" s; budget < 10 s); {summary['trades']['values']['n_trades']:.0f} round trips; Sharpe {perf['gross_sharpe']:.2f}"
          f" gross, {perf['sharpe']:.2f} net (every market of the set, none excluded for cost, no FX)")
    return closes, vol, raw, cfg


def walkforward(folder: Path, runs: int, inputs=None) -> None:
    from pipeline.research.walk_forward import walk_forward_backtest

    closes, vol, raw, cfg = inputs or _carver_inputs(folder)[:4]
    start = closes.index[-(1024 + 20 * 256)]
    comb = cfg.combination.model_copy(update={"forecast_weights_method": "bootstrap", "apply_speed_limit": True})
    cfg = cfg.model_copy(update={"combination": comb})

    def run():
        return walk_forward_backtest(raw, closes, vol, cfg, train_len=1024, test_len=256, start=start)

    wall, cpu, walls, wf = timed(run, runs)
    print(f"walk-forward: {len(wf.folds)} folds (train 1024, test 256; refitted: "
          f"{', '.join(wf.parameters['walk_forward']['fitted_in_sample'])}) median {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(runs {', '.join(f'{w:.1f}' for w in walls)} s; budget < 180 s); "
          f"OOS Sharpe {summary_sharpe(wf):.2f}; forecast weights {wf.folds['forecast_weights_source'].value_counts().to_dict()}")


def summary_sharpe(run) -> float:
    from pipeline.research.metrics import performance_metrics

    return performance_metrics(run.result.returns.loc[run.window_start():])["sharpe"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["panel", "carver", "walkforward", "all"], default="all")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.case in ("panel", "all"):
        panel(args.runs)
    if args.case in ("carver", "walkforward", "all"):
        if not (args.data / "adjusted_prices_daily.parquet").exists():
            print(f"{args.data} not found: Carver cases skipped")
            return 0
        inputs = carver(args.data, args.runs) if args.case in ("carver", "all") else None
        if args.case in ("walkforward", "all"):
            walkforward(args.data, args.runs, inputs)
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
