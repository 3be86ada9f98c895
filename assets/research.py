"""Research assets: ``regime_model`` (scikit-learn, walk-forward) and ``backtest``.

The backtest is the production code run over history: it reads the ``target_positions`` that the
daily runs (or a backfill) wrote, so research and production never diverge.
"""


import base64

import dagster as dg
import pandas as pd

from assets.markdown import frame_md
from assets.portfolio import REGIME, TARGET_POSITIONS
from assets.resources import Settings
from assets.signals import COMBINED, VOLATILITY
from pipeline.analytics import STRESS_WINDOWS, attribution, reconstruct_trades, stress_test, trade_statistics, var_cvar
from pipeline.backtest import simulate
from pipeline.metrics import performance_metrics
from pipeline.model_registry import data_hash, log_experiment, save_model
from pipeline.regime import regime_features, risk_scale, vol_regime_labels, vol_regime_state, walk_forward_classifier
from pipeline.report import equity_drawdown_png

BACKTEST = "backtest"
BACKTEST_DAILY = "backtest_daily"
BACKTEST_METRICS = "backtest_metrics"
BACKTEST_TRADES = "backtest_trades"


@dg.asset(deps=[VOLATILITY, COMBINED], group_name="research", kinds={"python", "parquet", "scikitlearn"}, code_version="1")
def regime_model(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """A volatility-regime classifier (scikit-learn), trained walk-forward with purged,
    time-ordered refits: P(the next ``horizon`` sessions are a high-volatility regime) from
    features known at each close, out of sample only, judged against the persistence baseline.
    Used as a risk scale on target positions only when ``regime.use_as_risk_scale`` is set."""
    cfg, lake = settings.config(), settings.lake()
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols)
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols)
    combined = lake.read_wide(COMBINED, "combined", cfg.symbols).reindex(closes.index)
    features = regime_features(closes, vol, combined)
    labels = vol_regime_labels(closes, vol, cfg.regime.horizon)
    result = walk_forward_classifier(features, labels, horizon=cfg.regime.horizon,
                                     retrain_every=cfg.regime.retrain_every, min_train=cfg.regime.min_train,
                                     baseline=vol_regime_state(closes, vol, cfg.regime.horizon))
    table = pd.DataFrame({
        "p_high_vol": result.probability,
        "predicted": result.predicted,
        "label": labels.reindex(result.probability.index),
        "risk_scale": risk_scale(result.probability, cfg.regime.high_vol_scale),
    }).rename_axis("session").reset_index()
    lake.write_table(REGIME, table)
    version = None
    if result.last_model is not None:
        scored = result.probability.dropna().index
        metrics = {"oos_accuracy": float(result.oos_accuracy), "baseline_accuracy": float(result.baseline_accuracy)}
        params = {"horizon": cfg.regime.horizon, "retrain_every": cfg.regime.retrain_every, "min_train": cfg.regime.min_train}
        version = save_model(lake.root, "vol_regime", result.last_model, {
            "training_window": [str(features.index[0].date()), str(scored[-1].date())],
            "features": list(features.columns), "params": params, "oos_metrics": metrics,
            "data_hash": data_hash(features),
        })
        log_experiment(lake.root, "vol_regime", params, metrics, version=version)
    return dg.MaterializeResult(metadata={
        "model_version": version or "none (too little history to fit)",
        "oos_accuracy": float(result.oos_accuracy),
        "baseline_accuracy": float(result.baseline_accuracy),
        "n_folds": int(result.n_folds),
        "used_as_risk_scale": cfg.regime.use_as_risk_scale,
        "latest_p_high_vol": float(result.probability.dropna().iloc[-1]) if result.probability.notna().any() else float("nan"),
        "folds": dg.MetadataValue.md(frame_md(result.folds, limit=60)),
    })


@dg.asset(deps=[TARGET_POSITIONS], group_name="research", kinds={"python", "parquet", "matplotlib"}, code_version="1")
def backtest(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """Daily P&L of the target positions traded at the next session's close, net of commission and
    spread costs from the instrument config; equity curve, drawdown and the usual statistics
    (Sharpe, Sortino, max drawdown, CAGR, Calmar, win rate, profit factor, realised vol against the
    vol target, 256-day annualisation), round-trip trades and their statistics, P&L by asset class,
    VaR/CVaR and 2008/2020 stress replays on the current positions, with an equity/drawdown plot."""
    cfg, lake = settings.config(), settings.lake()
    positions = lake.read_wide(TARGET_POSITIONS, "target", cfg.symbols)
    prices = lake.read_wide(TARGET_POSITIONS, "price", cfg.symbols)
    point_size = pd.Series({i.symbol: i.point_size for i in cfg.instruments})
    result = simulate(positions.fillna(0.0), prices, point_size=point_size,
                      costs={i.symbol: i.costs for i in cfg.instruments}, capital=cfg.portfolio.capital)
    # Statistics from the first session with a position: the warm-up has no trading by design.
    active = result.holdings.abs().sum(axis=1) > 0
    start = active.idxmax() if active.any() else result.returns.index[0]
    returns = result.returns.loc[start:]
    metrics = performance_metrics(returns, vol_target=cfg.portfolio.vol_target)
    trades = reconstruct_trades(result.holdings, prices, point_size)
    trade_stats = trade_statistics(trades)
    risk = var_cvar(returns)
    by_class = attribution(result, {i.symbol: i.asset_class for i in cfg.instruments})["by_asset_class"]
    # Replay only the stress windows the price history covers (a short history has no 2008).
    windows = {k: w for k, w in STRESS_WINDOWS.items() if pd.Timestamp(w[0]) >= prices.index[0]}
    stress = stress_test(result.holdings.iloc[-1], prices, point_size, windows=windows).summary if windows else pd.DataFrame()
    per_instrument, portfolio = result.to_long()
    lake.write_table(BACKTEST_DAILY, per_instrument)
    lake.write_table(BACKTEST, portfolio)
    lake.write_table(BACKTEST_TRADES, trades)
    lake.write_table(BACKTEST_METRICS, pd.DataFrame({
        "metric": list(metrics) + [f"trades_{k}" for k in trade_stats],
        "value": [float(v) for v in metrics.values()] + [float(v) for v in trade_stats.values()],
    }))
    png = equity_drawdown_png(result.equity.loc[start:], result.drawdown.loc[start:],
                              title=f"{cfg.broker.strategy}: equity and drawdown, {start.date()} .. {returns.index[-1].date()}")
    by_instrument = result.pnl_net.loc[start:].sum().rename("pnl_net").to_frame()
    by_instrument["costs"] = result.costs.loc[start:].sum()
    return dg.MaterializeResult(metadata={
        "metrics": dg.TableMetadataValue(
            records=[dg.TableRecord({"metric": k, "value": float(v)}) for k, v in metrics.items()],
            schema=dg.TableSchema(columns=[dg.TableColumn("metric", "string"), dg.TableColumn("value", "float")]),
        ),
        "sharpe": float(metrics["sharpe"]),
        "max_drawdown": float(metrics["max_drawdown"]),
        "realised_vol_vs_target": float(metrics["realised_vol_vs_target"]),
        "period": f"{start.date()} .. {returns.index[-1].date()}",
        "equity_curve": dg.MetadataValue.md(f"![equity and drawdown](data:image/png;base64,{base64.b64encode(png).decode()})"),
        "pnl_by_instrument": dg.MetadataValue.md(frame_md(by_instrument, index=True, floatfmt="{:,.0f}")),
        "pnl_by_asset_class": dg.MetadataValue.md(frame_md(by_class, index=True, floatfmt="{:,.0f}")),
        "trades": dg.MetadataValue.md(frame_md(pd.Series(trade_stats, name="value").rename_axis("statistic").to_frame(), index=True)),
        "var_cvar": dg.MetadataValue.md(frame_md(risk, index=True)),
        "stress_on_current_positions": dg.MetadataValue.md(frame_md(stress, index=True, floatfmt="{:,.0f}")),
    })
