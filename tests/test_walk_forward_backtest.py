"""Tests of pipeline.research.walk_forward: in-sample fitting only, one stitched out-of-sample account."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Instrument, PipelineConfig
from pipeline.portfolio.instrument_weights import estimate_instrument_weights
from pipeline.portfolio.sizing import target_positions
from pipeline.research.backtest import BacktestInputError, simulate, simulation_options
from pipeline.research.results import write_results
from pipeline.research.validation import ValidationError
from pipeline.research.walk_forward import fit_fold, walk_forward_backtest
from pipeline.signals.combine import combine_forecasts
from pipeline.signals.forecast_weights import (
    bootstrap_weights,
    family_weights,
    handcraft_weights,
    rule_returns,
)
from pipeline.signals.rules import ewmac
from pipeline.signals.volatility import robust_vol

SYMBOLS = ["AAA", "BBB", "CCC"]
RULES = ["ewmac4_16", "ewmac16_64"]


def config(combination=None, **sections) -> PipelineConfig:
    default = [Instrument(symbol=s, asset_class="equity" if s != "CCC" else "bond") for s in SYMBOLS]
    return PipelineConfig(
        instruments=sections.pop("instruments", default),
        combination={"fdm": "estimate", **(combination or {})},
        portfolio={"weights_min_sessions": 40, **sections.pop("portfolio", {})},
        **sections,
    )


def market(n: int = 700, seed: int = 7):
    rng = np.random.default_rng(seed)
    index = pd.DatetimeIndex(pd.bdate_range("2010-01-04", periods=n), name="session")
    closes = pd.DataFrame(100 + np.cumsum(rng.normal(0.02, 1.0, (n, 3)), axis=0), index, SYMBOLS)
    vol = robust_vol(closes)
    raw = pd.concat({"ewmac4_16": ewmac(closes, vol, 4, 16), "ewmac16_64": ewmac(closes, vol, 16, 64)}, axis=1)
    raw.columns.names = ["rule", "instrument"]
    return closes, vol, raw


# --- fitted parameters: the training slice only ---------------------------------------------


def _by_hand(raw, closes, vol, train, cap=20.0):
    """Scalars, capped forecasts, rule returns, pooled correlation and vol-normalised returns of
    the training slice, with numpy (independently of the pipeline's estimators)."""
    scalars, capped = {}, {}
    for rule in RULES:
        x = np.abs(raw[rule].loc[train].to_numpy())
        x[x == 0] = np.nan
        med = np.nanmedian(x, axis=1)  # cross-sectional median |raw| per session
        scalars[rule] = 10.0 / np.nanmean(med)
        capped[rule] = np.clip(raw[rule].loc[train].to_numpy() * scalars[rule], -cap, cap)
    p, v = closes.loc[train].to_numpy(), vol.loc[train].to_numpy()
    unit = np.full(p.shape, np.nan)
    unit[1:] = (p[1:] - p[:-1]) / v[:-1]
    returns = {}
    for rule in RULES:
        pos = np.full(p.shape, np.nan)
        pos[1:] = capped[rule][:-1] / 10.0
        pnl = pos * unit
        count = (~np.isnan(pnl)).sum(axis=1)
        returns[rule] = np.where(count > 0, np.nansum(pnl, axis=1) / np.maximum(count, 1), np.nan)
    a, b = capped[RULES[0]].ravel(), capped[RULES[1]].ravel()
    both = ~np.isnan(a) & ~np.isnan(b)
    rho = np.corrcoef(a[both], b[both])[0, 1]
    unit_frame = pd.DataFrame(unit, train, SYMBOLS)
    return pd.Series(scalars), pd.DataFrame(returns, index=train), rho, unit_frame


def params_capped(raw, params, train, cap=20.0):
    return (raw.loc[train] * params.scalars.reindex(raw.columns.get_level_values(0)).to_numpy()).clip(-cap, cap)


def test_fold_parameters_equal_a_hand_computation_on_the_training_slice():
    closes, vol, raw = market()
    train = closes.index[100:352]
    scalars, returns, rho, unit = _by_hand(raw, closes, vol, train)
    params = fit_fold(raw, closes, vol, train, config({"forecast_weights_method": "handcraft"}))
    np.testing.assert_allclose(params.scalars[RULES].to_numpy(), scalars[RULES].to_numpy(), rtol=1e-12)
    assert params.forecast_weights_source == "handcraft"
    expected_fw = handcraft_weights(returns.dropna(how="any").corr())
    np.testing.assert_allclose(params.forecast_weights[RULES].to_numpy(), expected_fw[RULES].to_numpy(), rtol=1e-12)
    w = params.forecast_weights[RULES].to_numpy()
    fdm = 1.0 / np.sqrt(w[0] ** 2 + w[1] ** 2 + 2 * w[0] * w[1] * max(rho, 0.0))
    assert params.fdm == pytest.approx(fdm, rel=1e-12)
    est = estimate_instrument_weights(unit, lookback_sessions=len(train), min_sessions=40, idm_cap=2.5)
    np.testing.assert_allclose(params.weights[SYMBOLS].to_numpy(), est.weights.iloc[-1][SYMBOLS].to_numpy(),
                               rtol=1e-12)
    assert params.idm == pytest.approx(float(est.idm.iloc[-1]), rel=1e-12)


def test_bootstrap_forecast_weights_use_the_training_slice_and_short_windows_fall_back():
    closes, vol, raw = market()
    train = closes.index[100:352]
    _, returns, _, _ = _by_hand(raw, closes, vol, train)
    comb = {"forecast_weights_method": "bootstrap", "bootstrap_draws": 20, "bootstrap_block": 20}
    params = fit_fold(raw, closes, vol, train, config(comb))
    # the rule returns of the training slice (the pipeline's) agree with the hand-made ones; the
    # max-Sharpe optimum of a draw can flip between corners on a 1e-16 change, so the weights
    # are compared for the pipeline's returns. No instrument has costs: SR costs are 0.
    slice_returns = rule_returns(params_capped(raw, params, train), closes.loc[train], vol.loc[train])
    np.testing.assert_allclose(slice_returns[RULES].to_numpy(), returns[RULES].to_numpy(), rtol=0, atol=1e-12)
    expected = bootstrap_weights(slice_returns.dropna(how="any"), None, draws=20, block=20, seed=0)
    np.testing.assert_allclose(params.forecast_weights[RULES].to_numpy(), expected[RULES].to_numpy(), rtol=1e-12)
    # 80 training sessions, of which the slow rule has forecasts on the last 19 only: fewer
    # complete sessions of returns than 80 // 2, so the weights fall back
    late = raw.copy()
    late.loc[: closes.index[60], "ewmac16_64"] = np.nan
    short = closes.index[:80]
    assert fit_fold(late, closes, vol, short, config(comb)).forecast_weights_source == "equal fallback"
    hc = fit_fold(late, closes, vol, short, config({"forecast_weights_method": "handcraft"}))
    assert hc.forecast_weights_source == "family fallback"
    pd.testing.assert_series_equal(hc.forecast_weights, family_weights(RULES), check_names=False)


@pytest.mark.parametrize("combination", [
    {"forecast_weights_method": "handcraft"},
    {"forecast_weights_method": "bootstrap", "bootstrap_draws": 10, "bootstrap_block": 20},
    {"apply_speed_limit": True, "speed_limit": 0.13},
])
def test_data_after_the_training_window_cannot_move_the_fitted_parameters(combination):
    closes, vol, raw = market()
    train = closes.index[100:352]
    cfg = config(combination, instruments=[Instrument(symbol=s, costs={"slippage": 0.05}) for s in SYMBOLS])
    before = fit_fold(raw, closes, vol, train, cfg)
    later = closes.index > train[-1]
    closes2, vol2, raw2 = closes.copy(), vol.copy(), raw.copy()
    closes2.loc[later] *= 3.0
    vol2.loc[later] *= 5.0
    raw2.loc[later] = -raw2.loc[later] * 7.0
    after = fit_fold(raw2, closes2, vol2, train, cfg)
    for name in ("scalars", "forecast_weights", "weights"):
        pd.testing.assert_series_equal(getattr(before, name), getattr(after, name))
    assert (before.fdm, before.idm, before.forecast_weights_source) == (after.fdm, after.idm, after.forecast_weights_source)
    if before.excluded is not None:
        pd.testing.assert_series_equal(before.excluded, after.excluded)
        # annual SR costs at the window's end: ewmac4_16 about 0.18-0.20 > 0.13, ewmac16_64 about 0.054
        assert before.excluded.groupby(level=0).sum().to_dict() == {"ewmac4_16": 3, "ewmac16_64": 0}


def test_sr_costs_price_the_configured_trade_size_as_production_does():
    # a USD 1 minimum commission: on a one-unit trade it dwarfs the vol of the position, on an
    # average position (1e6 x 0.25 / 16 / 3 instruments / vol units) it is negligible
    closes, vol, raw = market()
    train = closes.index[100:352]
    fee = [Instrument(symbol=s, costs={"commission_min": 1.0}) for s in SYMBOLS]
    unit = fit_fold(raw, closes, vol, train, config({"apply_speed_limit": True, "sr_cost_trade_size": "one_unit"},
                                                    instruments=fee))
    average = fit_fold(raw, closes, vol, train, config({"apply_speed_limit": True}, instruments=fee))
    assert unit.excluded.all() and not average.excluded.any()


def test_speed_limit_exclusions_apply_to_the_test_window():
    closes, vol, raw = market()
    dear = [Instrument(symbol=s, costs={"slippage": 0.05}) for s in SYMBOLS]
    # everything too expensive: every instrument is closed
    none = walk_forward_backtest(raw, closes, vol, config({"apply_speed_limit": True, "speed_limit": 0.01},
                                                          instruments=dear))
    assert none.result.holdings.abs().to_numpy().sum() == 0 and (none.folds["n_excluded"] == 6).all()
    # only the fast rule excluded: the same account as trading the slow rule alone
    slow = walk_forward_backtest(raw, closes, vol, config({"apply_speed_limit": True}, instruments=dear))
    alone = walk_forward_backtest(raw[["ewmac16_64"]], closes, vol, config(instruments=dear))
    assert (slow.folds["n_excluded"] == 3).all()
    pd.testing.assert_frame_equal(slow.result.holdings, alone.result.holdings)


def test_forecast_scalar_is_ten_over_the_mean_absolute_raw_forecast():
    closes, vol, _ = market(300)
    index = closes.index
    # |raw| = 2 for every instrument and session -> scalar 10 / 2 = 5
    raw = pd.concat({"ewmac4_16": pd.DataFrame(2.0, index, SYMBOLS) * np.where(np.arange(300) % 2, 1, -1)[:, None]},
                    axis=1)
    raw.columns.names = ["rule", "instrument"]
    params = fit_fold(raw, closes, vol, index[:200], config())
    assert params.scalars["ewmac4_16"] == pytest.approx(5.0)
    assert params.fdm == pytest.approx(1.0)  # one rule: no diversification
    assert params.weights.sum() == pytest.approx(1.0)
    assert params.forecast_weights.tolist() == [1.0] and params.forecast_weights_source == "equal"


def test_identical_rules_have_an_fdm_of_one_and_a_fixed_fdm_is_kept():
    closes, vol, raw = market(400)
    twin = pd.concat({"a": raw["ewmac4_16"], "b": raw["ewmac4_16"]}, axis=1)
    twin.columns.names = ["rule", "instrument"]
    assert fit_fold(twin, closes, vol, closes.index[:300], config()).fdm == pytest.approx(1.0)
    assert fit_fold(twin, closes, vol, closes.index[:300], config({"fdm": 1.3})).fdm == 1.3


# --- the stitched out-of-sample account --------------------------------------------------------


def test_walk_forward_stitches_every_test_window_out_of_sample():
    closes, vol, raw = market()
    run = walk_forward_backtest(raw, closes, vol, config(), train_len=252, test_len=63, stride=63)
    # 700 sessions: tests start at 252, 315, ..., 693 -> 8 folds, the last one 7 sessions long
    assert len(run.folds) == 8 and run.folds["n_test"].tolist() == [63] * 7 + [7]
    assert run.result.returns.index.equals(closes.index[252:])
    assert run.sample == "out-of-sample" and "fitted on each training window only" in run.sample_note
    assert (run.folds["sample"] == "out-of-sample").all()
    # each fold's test window starts the session after its training window ends
    nxt = closes.index.get_indexer(run.folds["train_end"]) + 1
    assert (closes.index[nxt] == run.folds["test_start"]).all()


def test_stitched_equity_is_the_concatenation_of_the_folds_test_pnl():
    closes, vol, raw = market()
    # The speed limit is on by default since issue 19; at 0.5 a unit on this synthetic market it drops every rule,
    # nothing trades and no fold has a cost. This test is about the stitching of a costed account, so it is off.
    cfg = config({"apply_speed_limit": False},
                 instruments=[Instrument(symbol=s, costs={"commission_per_unit": 0.5}) for s in SYMBOLS])
    run = walk_forward_backtest(raw, closes, vol, cfg, train_len=252, test_len=63)
    res, folds = run.result, run.folds
    windows = [res.portfolio_pnl.loc[a:b] for a, b in zip(folds["test_start"], folds["test_end"])]
    concatenated = pd.concat(windows)
    assert concatenated.index.equals(res.equity.index)  # the test windows tile the account
    np.testing.assert_allclose(folds["pnl_net"], [w.sum() for w in windows], rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.equity, res.capital + concatenated.cumsum(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.equity.loc[folds["test_end"]], res.capital + folds["pnl_net"].cumsum(),
                               rtol=0, atol=1e-9)
    assert folds["costs"].sum() == pytest.approx(res.costs.to_numpy().sum()) and folds["costs"].gt(0).all()


def test_each_fold_trades_its_own_fit_and_the_account_carries_over_fold_boundaries():
    closes, vol, raw = market()
    cfg = config()
    run = walk_forward_backtest(raw, closes, vol, cfg, train_len=252, test_len=63)
    res, folds = run.result, run.folds
    # fold 1, rebuilt from its own fit: positions from the production functions, the buffer
    # starting from fold 0's last target
    train = closes.index[63:315]
    test = closes.index[315:378]
    params = fit_fold(raw, closes, vol, train, cfg)
    capped = (raw.loc[test] * params.scalars.reindex(raw.columns.get_level_values(0)).to_numpy()).clip(-20, 20)
    combined = combine_forecasts(capped, params.forecast_weights, params.fdm).reindex(columns=SYMBOLS)
    weights = pd.DataFrame([params.weights[SYMBOLS].to_numpy()] * len(test), test, SYMBOLS)
    last_of_fold0 = res.holdings.loc[test[0]]  # h(test[0]) = target of fold 0's last session
    sized = target_positions(closes.loc[test], vol.loc[test], combined, weights, pd.Series(params.idm, index=test),
                             pd.Series(1.0, index=SYMBOLS), cfg.portfolio, initial=last_of_fold0)
    # holdings over session t are the target of t-1: fold 1's targets are held from test[1]
    np.testing.assert_allclose(res.holdings.loc[test[1]:test[-1]].to_numpy(), sized.target.iloc[:-1].to_numpy())
    assert res.holdings.loc[test[0]].abs().sum() > 0  # not restarted from flat
    assert folds.loc[1, "fdm"] == params.fdm and folds.loc[1, "scalar:ewmac4_16"] == params.scalars["ewmac4_16"]
    assert folds.loc[1, "instrument_weight:AAA"] == params.weights["AAA"]


def test_estimated_forecast_weights_phase_in_from_each_folds_first_test_session():
    closes, vol, raw = market()
    comb = {"forecast_weights_method": "bootstrap", "bootstrap_draws": 10, "bootstrap_block": 20}
    step = walk_forward_backtest(raw, closes, vol, config({**comb, "forecast_weight_ewma_span": None}))
    one = walk_forward_backtest(raw, closes, vol, config({**comb, "forecast_weight_ewma_span": 1}))
    smooth = walk_forward_backtest(raw, closes, vol, config(comb))
    assert step.folds["forecast_weight:ewmac4_16"].nunique() > 1  # the estimates differ between folds
    pd.testing.assert_frame_equal(one.result.holdings, step.result.holdings)  # span 1: no smoothing
    # fold 0 trades its own estimate throughout (the EWMA of a constant); later folds blend in
    fold0 = slice(None, step.folds.loc[0, "test_end"])
    pd.testing.assert_frame_equal(smooth.result.holdings.loc[fold0], step.result.holdings.loc[fold0])
    assert not smooth.result.holdings.equals(step.result.holdings)
    pd.testing.assert_series_equal(smooth.folds["fdm"], step.folds["fdm"])  # the fitted values are the same


def test_walk_forward_results_do_not_depend_on_data_after_the_last_test_session():
    closes, vol, raw = market()
    end = closes.index[600]
    a = walk_forward_backtest(raw, closes, vol, config(), end=end)
    later = closes.index > end
    closes2 = closes.copy()
    closes2.loc[later] = closes2.loc[later] * 2.0
    b = walk_forward_backtest(raw, closes2, vol, config(), end=end)
    pd.testing.assert_series_equal(a.result.returns, b.result.returns)


def test_the_backtest_options_of_the_config_are_used():
    closes, vol, raw = market()
    bars = {"opens": closes.shift(1).fillna(closes) + 0.1, "highs": closes + 0.5, "lows": closes - 0.5}
    cfg = config(backtest={"order_type": "limit", "limit_offset": 0.004, "allow_short": False, "pre_trade_gate": True},
                 risk={"max_position": 5000})
    res = walk_forward_backtest(raw, closes, vol, cfg, bars=bars).result
    assert (res.holdings.to_numpy() >= 0).all()
    assert 0 < res.order_summary()["fill_rate"] < 1
    # the backtest options do not change the targets: those of the plain run (h_t = target_{t-1})
    # simulated with the config's options give the same account
    plain = walk_forward_backtest(raw, closes, vol, config()).result
    targets = plain.holdings.shift(-1).fillna(0.0)
    sessions = targets.index
    again = simulate(targets, closes.loc[sessions], pd.Series(1.0, index=SYMBOLS),
                     {i.symbol: i.costs for i in cfg.instruments}, cfg.portfolio.capital,
                     **simulation_options(cfg), **{k: v.loc[sessions] for k, v in bars.items()})
    pd.testing.assert_frame_equal(again.pnl_net, res.pnl_net)
    assert not plain.pnl_net.equals(res.pnl_net)
    with pytest.raises(BacktestInputError, match="highs and lows"):
        walk_forward_backtest(raw, closes, vol, cfg)


def test_the_circuit_breaker_runs_in_the_stitched_account(tmp_path):
    closes, vol, raw = market()
    cfg = config(backtest={"pre_trade_gate": True}, risk={"max_daily_loss": 5_000, "max_order_notional": 1e9})
    run = walk_forward_backtest(raw, closes, vol, cfg)
    trips = run.result.circuit_breaker
    assert len(trips) > 0 and run.folds["breaker_trips"].sum() == len(trips)
    assert (trips["pnl_net"] < -5_000).all()
    assert set(run.result.denials["rule"]) == {"kill_switch"}
    folder = write_results(run, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    assert [t["session"] for t in summary["trades"]["circuit_breaker"]] == [f"{d:%Y-%m-%d}" for d in trips["session"]]
    assert "circuit breaker trips" in (folder / "report.html").read_text()
    free = walk_forward_backtest(raw, closes, vol, config())
    assert free.result.circuit_breaker.empty and not free.result.returns.equals(run.result.returns)


def test_stride_other_than_the_test_length_is_refused():
    closes, vol, raw = market()
    with pytest.raises(ValidationError, match="stride 80 != test_len 63"):
        walk_forward_backtest(raw, closes, vol, config(), test_len=63, stride=80)


def test_results_folder_states_what_each_fold_fitted(tmp_path):
    closes, vol, raw = market()
    run = walk_forward_backtest(raw, closes, vol, config({"forecast_weights_method": "handcraft"}))
    folder = write_results(run, tmp_path)
    folds = pd.read_csv(folder / "folds.csv")
    assert {"fdm", "idm", "scalar:ewmac4_16", "forecast_weight:ewmac16_64", "instrument_weight:CCC",
            "forecast_weights_source", "sample"} <= set(folds.columns)
    summary = json.loads((folder / "summary.json").read_text())
    wf = summary["walk_forward"]
    assert summary["basis"]["in_or_out_of_sample"] == "out-of-sample"
    assert "forecast weights (handcraft, phased in with an EWMA of span 125)" in summary["basis"]["note"]
    assert len(wf["fitted"]) == len(folds) and wf["fitted"][2]["fdm"] == pytest.approx(folds.loc[2, "fdm"])
    assert wf["fitted"][0]["instrument_weights"].keys() == set(SYMBOLS)
    assert sum(f["pnl_net"] for f in wf["folds"]) == pytest.approx(summary["performance"]["values"]["pnl_net"])
