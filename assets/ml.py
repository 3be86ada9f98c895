"""Machine-learning research assets: ``regime_model`` and ``vol_forecast`` (scikit-learn), and
what the daily run reads of them.

Both assets are unpartitioned and read the history up to the session of the run (the partition of a
daily run, the last partition of a backfill), so a re-run of a past session never sees later
data. Their evidence is walk-forward and out of sample; see ``docs/ml.md``. They belong to the
research job, not to the daily run: ``target_positions`` reads their tables and, for the sessions
after the research job's latest run, scores them with the latest stored model version
(:func:`regime_scale_for_daily`, :func:`vol_for_sizing_for_daily`) without refitting; it fails
closed when the configuration asks for a model that was never trained. scikit-learn is imported
inside the functions that use it, not when the code location loads.
"""


import importlib.metadata

import dagster as dg
import numpy as np
import pandas as pd

from assets.markdown import frame_md
from assets.resources import Settings
from assets.signals import COMBINED, VOLATILITY
from pipeline.ml.model_registry import (
    data_hash,
    list_versions,
    load_model,
    log_experiment,
    save_model,
    select_version,
    version_changes,
)
from pipeline.store.lake import LakeError

#: Lake tables (and asset keys) of the two research assets; ``target_positions`` reads them.
REGIME = "regime_model"
VOL_FORECAST = "vol_forecast"
REGIME_MODEL_NAME = "vol_regime"
#: Code versions of the two assets, recorded with every stored model (bump with the model code).
REGIME_CODE_VERSION = "2"
VOL_CODE_VERSION = "1"
CLEAN_BARS = "clean_bars"
#: Share of sessions that must report some volume for ``volume_ratio`` to be a feature.
VOLUME_COVERAGE = 0.99


def _as_of(context: dg.AssetExecutionContext) -> pd.Timestamp | None:
    """The session of the run: its partition, or the end of a backfill range; None = all data."""
    tags = context.run.tags
    key = tags.get("dagster/partition") or tags.get("dagster/asset_partition_range_end")
    return pd.Timestamp(key) if key else None


def _volume(lake, symbols: list[str], index: pd.DatetimeIndex, end: pd.Timestamp | None) -> pd.DataFrame | None:
    try:
        volume = lake.read_wide(CLEAN_BARS, "volume", symbols, end=end).reindex(index)
    except (FileNotFoundError, KeyError):
        return None
    return volume if volume.notna().any(axis=1).mean() >= VOLUME_COVERAGE else None


def _code_version(asset_version: str) -> str:
    try:
        package = importlib.metadata.version("trading-pipeline")
    except importlib.metadata.PackageNotFoundError:
        package = "unknown"
    return f"trading-pipeline {package}, asset code_version {asset_version}"


def _records_frame(records: list[dict], index: str) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    return frame.set_index(index) if index in frame.columns else frame


def _gate_of(meta: dict) -> pd.DataFrame:
    """The evidence gate stored with a regime model version (index ``decided_at``, bool ``on``)."""
    gate = _records_frame(meta["gate"], "decided_at")
    gate.index = pd.DatetimeIndex(pd.to_datetime(gate.index), name="decided_at")
    gate["on"] = gate["on"].astype(bool)
    return gate


@dg.asset(deps=[VOLATILITY, COMBINED], group_name="research", kinds={"python", "parquet", "scikitlearn"},
          code_version=REGIME_CODE_VERSION)
def regime_model(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """A volatility-regime classifier (scikit-learn), trained walk-forward with purged, embargoed
    refits: P(the next ``horizon`` sessions are a high-volatility regime) from market features
    known at each close, out of sample only, compared with persistence, majority, random forest,
    gradient boosting and Gaussian-mixture candidates. The risk scale on target positions is
    applied only if ``regime.use_as_risk_scale`` is set and (unless ``require_oos_evidence`` is
    off) while the walk-forward Sharpe gain over the simple rule is significant. Each refit is a
    registry version; the latest session uses the pinned or latest approved version."""
    from threadpoolctl import threadpool_limits

    from pipeline.ml.regime import walk_forward_classifier
    from pipeline.ml.regime_evidence import (
        applied_risk_scale,
        evaluation_key,
        fit_sessions,
        frame_records,
        regime_evidence,
        regime_inputs,
    )

    cfg, lake = settings.config(), settings.lake()
    registry = settings.state_path()  # the model registry lives in the local state folder
    rc = cfg.regime
    as_of = _as_of(context)
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols, end=as_of)
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols, end=as_of)
    combined = lake.read_wide(COMBINED, "combined", cfg.symbols, end=as_of).reindex(closes.index)
    volume = _volume(lake, cfg.symbols, closes.index, as_of)
    inputs = regime_inputs(closes, vol, combined, rc.horizon, volume)
    session = closes.index[-1]
    fits = fit_sessions(closes.index, rc.min_train, rc.retrain_every)
    params = {"horizon": rc.horizon, "retrain_every": rc.retrain_every, "min_train": rc.min_train,
              "high_vol_scale": rc.high_vol_scale, "evidence_ci": rc.evidence_ci,
              "min_oos_sessions": rc.min_oos_sessions, "model": "logistic", "features": list(inputs.features.columns)}

    version, meta, reused = None, None, False
    gate = pd.DataFrame(columns=["n_sessions", "difference", "ci_lower", "ci_upper", "on"],
                        index=pd.DatetimeIndex([], name="decided_at"))
    if len(fits):
        fit_at = fits[-1]
        key = evaluation_key(inputs, fit_at, rc.horizon, params)
        versions = list_versions(registry, REGIME_MODEL_NAME)
        previous = versions[versions["evaluation_key"] != key]
        hit = versions[versions["evaluation_key"] == key]
        if len(hit):
            version, reused = str(hit["version"].iloc[-1]), True
            meta = load_model(registry, REGIME_MODEL_NAME, version).metadata
        else:
            ev = regime_evidence(inputs, fit_at, horizon=rc.horizon, retrain_every=rc.retrain_every,
                                 min_train=rc.min_train, high_vol_scale=rc.high_vol_scale,
                                 evidence_ci=rc.evidence_ci, min_oos_sessions=rc.min_oos_sessions)
            if ev.model is not None:
                logistic, persistence = ev.comparison.loc["logistic"], ev.comparison.loc["persistence"]
                metrics = {"oos_accuracy": float(logistic["accuracy"]), "baseline_accuracy": float(persistence["accuracy"]),
                           "oos_log_loss": float(logistic["log_loss"]), "oos_brier": float(logistic["brier"]),
                           "balanced_accuracy": float(logistic["balanced_accuracy"]),
                           "sharpe_difference": ev.overlay["difference"], "sharpe_difference_ci_lower": ev.overlay["ci_lower"],
                           "importance_rank_correlation": float(ev.importance_rank_correlation)}
                meta = {
                    "training_window": ev.training_window, "features": list(inputs.features.columns), "params": params,
                    "oos_metrics": metrics, "data_hash": key, "evaluation_key": key,
                    "data_end": str(fit_at.date()), "approved": ev.approved, "overlay": ev.overlay,
                    "code_version": _code_version(REGIME_CODE_VERSION),
                    "comparison": frame_records(ev.comparison), "trend_comparison": frame_records(ev.trend_comparison),
                    "calibration": frame_records(ev.calibration), "importance": frame_records(ev.importance),
                    "gate": frame_records(ev.gate),
                }
                version = save_model(registry, REGIME_MODEL_NAME, ev.model, meta)
                log_experiment(registry, REGIME_MODEL_NAME, params, metrics, version=version,
                               extra={"data_end": meta["data_end"], "approved": ev.approved})
        if meta is not None:
            gate = _gate_of(meta)

    # Out-of-sample probabilities for every session (cheap: one logistic fit per refit).
    with threadpool_limits(limits=1):  # BLAS threads on a busy 2-core machine cost ~5x
        wf = walk_forward_classifier(inputs.features, inputs.vol_labels, horizon=rc.horizon,
                                     retrain_every=rc.retrain_every, min_train=rc.min_train, baseline=inputs.vol_state)
    p = wf.probability.copy()
    used = select_version(registry, REGIME_MODEL_NAME, session, rc.pinned_version)
    if used is not None and inputs.features.loc[session].notna().all():
        model = load_model(registry, REGIME_MODEL_NAME, used).model
        p.loc[session] = float(model.predict_proba(inputs.features.loc[[session]])[:, list(model.classes_).index(1)][0])
    scale = applied_risk_scale(p, gate, rc.high_vol_scale, rc.require_oos_evidence)
    if rc.require_oos_evidence and used is None:
        scale.loc[session, "gate_on"] = False
        scale.loc[session, "risk_scale"] = 1.0
    table = pd.DataFrame({"p_high_vol": p, "predicted": (p > 0.5).astype(float).where(p.notna()),
                          "label": inputs.vol_labels, **scale}).rename_axis("session").reset_index()
    lake.write_table(REGIME, table)

    on_now = bool(scale["gate_on"].iloc[-1])
    if not rc.use_as_risk_scale:
        why = "regime.use_as_risk_scale is off: positions follow the simple rules"
    elif not rc.require_oos_evidence:
        why = "applied without the evidence gate (regime.require_oos_evidence is off)"
    elif on_now:
        why = "applied: the walk-forward Sharpe gain over the simple rule is significant"
    else:
        ov = (meta or {}).get("overlay", {})
        why = (f"not applied: the out-of-sample Sharpe difference vs the simple rule is {ov.get('difference', float('nan')):+.3f} "
               f"with {rc.evidence_ci:.0%} interval [{ov.get('ci_lower', float('nan')):+.3f}, {ov.get('ci_upper', float('nan')):+.3f}] "
               "(needs the interval above 0); positions follow the simple rules")
    md: dict = {
        "session": str(session.date()),
        "model_version": version or "none (too little history to fit)",
        "model_used_for_session": used or "none (no approved version trained on data up to the session)",
        "evaluation": "reused from the registry (no refit since)" if reused else "computed at this refit",
        "used_as_risk_scale": bool(rc.use_as_risk_scale and (on_now or not rc.require_oos_evidence)),
        "risk_scale_decision": why,
        "latest_p_high_vol": float(p.iloc[-1]) if pd.notna(p.iloc[-1]) else float("nan"),
        "n_folds": int(wf.n_folds),
        "folds": dg.MetadataValue.md(frame_md(wf.folds, limit=60)),
    }
    if meta is not None:
        m = meta["oos_metrics"]
        md.update({
            "evidence_as_of": meta["data_end"],
            "oos_accuracy": float(m["oos_accuracy"]), "baseline_accuracy": float(m["baseline_accuracy"]),
            "sharpe_difference": float(m["sharpe_difference"]),
            "importance_rank_correlation": float(m["importance_rank_correlation"]),
            "approved": bool(meta["approved"]),
            "comparison_vol_label": dg.MetadataValue.md(frame_md(_records_frame(meta["comparison"], "model"), index=True)),
            "comparison_trend_label": dg.MetadataValue.md(frame_md(_records_frame(meta["trend_comparison"], "model"), index=True)),
            "calibration": dg.MetadataValue.md(frame_md(_records_frame(meta["calibration"], "bin"), index=True)),
            "importance_by_fold": dg.MetadataValue.md(frame_md(_records_frame(meta["importance"], "fold"), index=True)),
            "evidence_gate": dg.MetadataValue.md(frame_md(gate, index=True)),
        })
        prev_meta = None
        if len(fits) and not reused and len(previous):
            prev_meta = load_model(registry, REGIME_MODEL_NAME, str(previous["version"].iloc[-1])).metadata
        elif reused:
            older = list_versions(registry, REGIME_MODEL_NAME)
            older = older[older["version"] < version]
            prev_meta = load_model(registry, REGIME_MODEL_NAME, str(older["version"].iloc[-1])).metadata if len(older) else None
        md["vs_previous_version"] = dg.MetadataValue.md(frame_md(version_changes(prev_meta, meta), index=True))
        md["registry"] = dg.MetadataValue.md(frame_md(list_versions(registry, REGIME_MODEL_NAME)[
            ["version", "data_end", "approved", "model_class"]], limit=30))
    return dg.MaterializeResult(metadata=md)


@dg.asset(deps=[VOLATILITY], group_name="research", kinds={"python", "parquet", "scikitlearn"},
          code_version=VOL_CODE_VERSION)
def vol_forecast(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """Next-month (``vol_forecast.horizon`` sessions) realised vol forecasts, walk-forward: a HAR
    regression (Corsi 2009), HAR plus the sizing vol, and gradient boosting, pooled over
    instruments and scored out of sample by QLIKE and MSE against the EWMA/robust vol used for
    sizing. Sizing uses a model only if ``vol_forecast.use_for_sizing`` is on and, at the refit
    before each session, its out-of-sample QLIKE beat the sizing vol's by ``margin``. A
    back-adjusted instrument with a price <= 0 up to the session is left out (percentage returns
    are undefined there): listed in ``left_out_nonpositive``, its sizing keeps the sizing vol.
    Every stored version records ``sizing_model``, the model the decision at its refit chose (None:
    the sizing vol), which the daily run reads (:func:`vol_for_sizing_for_daily`)."""
    from pipeline.ml.vol_forecast import (
        BASELINE,
        nonpositive_instruments,
        score_vol_forecasts,
        sizing_gate,
        vol_for_sizing,
        vol_forecast_panel,
        walk_forward_vol_forecast,
    )

    cfg, lake = settings.config(), settings.lake()
    registry = settings.state_path()  # the model registry lives in the local state folder
    vc = cfg.vol_forecast
    as_of = _as_of(context)
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols, end=as_of)
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols, end=as_of)
    back_adjusted = [i.symbol for i in cfg.instruments if i.back_adjusted]
    left_out = nonpositive_instruments(closes, back_adjusted)
    if left_out:
        context.log.warning(f"vol_forecast: {len(left_out)} back-adjusted instrument(s) with a price <= 0 left out of "
                            f"the percentage-return models (sizing keeps their sizing vol): {', '.join(left_out)}")
    panel = vol_forecast_panel(closes, vol, vc.horizon, back_adjusted=back_adjusted)
    result = walk_forward_vol_forecast(panel, vc.horizon, vc.retrain_every, vc.min_train, train_stride=vc.train_stride)
    gate = sizing_gate(result.forecasts, pd.DatetimeIndex(result.folds["fit_session"]), vc.horizon, vc.margin,
                       vc.use_for_sizing)
    sized = vol_for_sizing(result.forecasts, gate, closes)
    out = result.forecasts.copy()
    out["vol_for_sizing"] = sized.stack(future_stack=True).reindex(out.index)
    out = out.reset_index()
    lake.write_table(VOL_FORECAST, out)

    scores = result.scores
    latest = gate.iloc[-1] if len(gate) else None
    reason = latest["reason"] if latest is not None else "no refit yet (too little history); sizing keeps the EWMA/robust vol"
    best = scores.drop(index=BASELINE).dropna(subset=["qlike"])
    versions = {}
    if len(result.folds) and len(best):
        fit_at = pd.Timestamp(result.folds["fit_session"].iloc[-1])
        sessions = result.forecasts.index.get_level_values("session")
        cut = closes.index[max(closes.index.searchsorted(fit_at) - vc.horizon, 0)]
        known = score_vol_forecasts(result.forecasts[sessions <= cut])  # targets known at the refit
        metrics = {f"{m}_{c}": float(known.loc[m, c]) for m in known.index for c in ("qlike", "mse")}
        params = {"horizon": vc.horizon, "retrain_every": vc.retrain_every, "min_train": vc.min_train,
                  "train_stride": vc.train_stride, "margin": vc.margin}
        panel_known = panel[panel.index.get_level_values("session") <= fit_at].copy()
        panel_known.loc[panel_known.index.get_level_values("session") > cut, "target_var"] = np.nan
        key = data_hash(panel_known)
        meta = {"training_window": [str(result.folds["train_start"].iloc[-1].date()), str(result.folds["train_end"].iloc[-1].date())],
                "features": list(panel.columns), "params": params, "oos_metrics": metrics,
                "data_hash": key, "evaluation_key": key, "data_end": str(fit_at.date()),
                "code_version": _code_version(VOL_CODE_VERSION),
                "approved": latest is not None and isinstance(latest["model"], str), "decision": reason,
                "sizing_model": latest["model"] if latest is not None and isinstance(latest["model"], str) else None}
        for name, model in result.last_models.items():
            stored = list_versions(registry, f"vol_{name}")
            hit = stored[stored["evaluation_key"] == key]
            if len(hit):  # no refit since the stored version: same inputs, same model
                versions[name] = str(hit["version"].iloc[-1])
                continue
            versions[name] = save_model(registry, f"vol_{name}", model, meta)
            log_experiment(registry, f"vol_{name}", params, metrics, version=versions[name])
    last = closes.index[-1]
    now = out[out["session"] == last].set_index("instrument")
    annual = np.sqrt(now[[c for c in now.columns if c not in ("session", "vol_for_sizing")]] * 256) * 100
    return dg.MaterializeResult(metadata={
        "session": str(last.date()),
        "used_for_sizing": bool(vc.use_for_sizing and latest is not None and isinstance(latest["model"], str)),
        "sizing_decision": reason,
        "scores": dg.MetadataValue.md(frame_md(scores, index=True)),
        "qlike_improvement_best": float(best["qlike_improvement"].max()) if len(best) else float("nan"),
        "n_folds": len(result.folds),
        "left_out_nonpositive": dg.MetadataValue.json(left_out),
        "model_versions": dg.MetadataValue.json(versions),
        "decisions": dg.MetadataValue.md(frame_md(gate.reset_index(), limit=40)),
        "latest_forecasts_annualised_pct": dg.MetadataValue.md(frame_md(annual, index=True, floatfmt="{:.1f}")),
    })



# -- what the daily run reads: the research job's tables, the stored models past them ------------


def _not_trained(what: str, setting: str, registry) -> dg.Failure:
    return dg.Failure(
        description=f"{setting} is on but {what} has never been trained (no stored version under {registry}/models "
                    "and no research output in the lake): run the research job first (research_job in the UI, or "
                    "trading-pipeline research), or switch the setting off")


def _read_research_table(lake, table: str) -> pd.DataFrame | None:
    try:
        return lake.read_table(table)
    except LakeError:  # the research asset never ran on this lake
        return None


def regime_scale_for_daily(settings: Settings, closes: pd.DataFrame, vol: pd.DataFrame,
                           combined: pd.DataFrame) -> pd.Series:
    """The regime risk scale of every session of ``closes.index`` for ``target_positions``, without refitting.

    Sessions up to the research job's latest ``regime_model`` run take the scale stored in its table
    (walk-forward, out of sample); later sessions are scored with the stored model version the
    regime asset would use (``regime.pinned_version``, else the latest approved version trained on
    data up to the first of them; with ``require_oos_evidence`` off, the latest version so trained),
    with the evidence gate stored beside it: ``1 - (1 - high_vol_scale) * P(high vol)`` where the
    gate is on, 1 where it is off or a feature is missing (``pipeline.ml.regime.risk_scale``).

    Parameters
    ----------
    settings : Settings
        The run's configuration, lake and state folder (the model registry).
    closes, vol, combined : DataFrame
        Close prices, daily price vol and combined forecasts, index ``session`` (up to the run's
        session), columns instruments.

    Returns
    -------
    Series
        Multipliers in ``[high_vol_scale, 1]``, index ``closes.index``, named ``risk_scale``.

    Raises
    ------
    dagster.Failure
        The research output is missing (never trained), or sessions past it have no stored
        version trained on data up to them (fail closed: no silent scale of 1).
    """
    from pipeline.ml.regime_evidence import applied_risk_scale
    from pipeline.ml.regime_features import market_features

    cfg, lake, registry = settings.config(), settings.lake(), settings.state_path()
    rc = cfg.regime
    table = _read_research_table(lake, REGIME)
    if table is None:
        raise _not_trained("the regime model", "regime.use_as_risk_scale", registry)
    stored = table.set_index("session")["risk_scale"]
    stored = stored[stored.index <= closes.index[-1]]
    scale = stored.reindex(closes.index)
    tail = closes.index[closes.index > stored.index.max()] if len(stored) else closes.index
    if len(tail):
        versions = list_versions(registry, REGIME_MODEL_NAME)
        if versions.empty:
            raise _not_trained("the regime model", "regime.use_as_risk_scale", registry)
        used = select_version(registry, REGIME_MODEL_NAME, tail[0], rc.pinned_version)
        if used is None and not rc.require_oos_evidence:  # any version trained on data up to the session
            usable = versions[versions["data_end"].notna() & (versions["data_end"] <= tail[0])]
            used = str(usable.sort_values(["data_end", "created_at"])["version"].iloc[-1]) if len(usable) else None
            if used is None:
                raise dg.Failure(description=(
                    f"regime.use_as_risk_scale is on but no stored regime model was trained on data up to "
                    f"{tail[0].date()} (stored: {', '.join(versions['version'])}): run the research job"))
        if used is None:  # no approved version: the evidence gate is off, as regime_model decides
            scale.loc[tail] = 1.0
        else:
            model = load_model(registry, REGIME_MODEL_NAME, used)
            volume = _volume(lake, cfg.symbols, closes.index, closes.index[-1])
            features = market_features(closes, vol, combined, volume).reindex(
                index=tail, columns=model.metadata["features"])
            known = features.notna().all(axis=1).to_numpy()
            p = pd.Series(np.nan, index=tail)
            if known.any():
                classes = list(model.model.classes_)
                p[known] = model.model.predict_proba(features[known])[:, classes.index(1)]
            scale.loc[tail] = applied_risk_scale(p, _gate_of(model.metadata), rc.high_vol_scale,
                                                 rc.require_oos_evidence)["risk_scale"]
    return scale.fillna(1.0).rename("risk_scale")


def vol_for_sizing_for_daily(settings: Settings, closes: pd.DataFrame, vol: pd.DataFrame) -> pd.DataFrame:
    """The vol model's daily price vol for ``target_positions`` where one is in force, without refitting.

    Sessions up to the research job's latest ``vol_forecast`` run take its ``vol_for_sizing``; later
    sessions take the model its latest refit on data up to the first of them chose
    (``sizing_model`` of the stored version; none: the sizing vol), predicting from the session's
    features (``pipeline.ml.vol_forecast.vol_forecast_panel``): ``sqrt(forecast variance) x price``.

    Parameters
    ----------
    settings : Settings
        The run's configuration, lake and state folder (the model registry).
    closes, vol : DataFrame
        Close prices and the daily price sizing vol, index ``session``, columns instruments.

    Returns
    -------
    DataFrame
        Index ``closes.index``, columns ``closes.columns``: price points per day where a model is in
        force and has a forecast, NaN elsewhere (the caller keeps its sizing vol there).

    Raises
    ------
    dagster.Failure
        The research output or the stored models are missing (never trained), or were stored
        before the sizing decision was recorded with them.
    """
    from pipeline.ml.vol_forecast import default_vol_models, vol_forecast_panel

    cfg, lake, registry = settings.config(), settings.lake(), settings.state_path()
    vc = cfg.vol_forecast
    table = _read_research_table(lake, VOL_FORECAST)
    if table is None:
        raise _not_trained("the vol forecast", "vol_forecast.use_for_sizing", registry)
    table = table[table["session"] <= closes.index[-1]]
    out = table.pivot(index="session", columns="instrument", values="vol_for_sizing").reindex(
        index=closes.index, columns=closes.columns)
    tail = closes.index[closes.index > table["session"].max()] if len(table) else closes.index
    if not len(tail):
        return out
    names = list(default_vol_models())  # every refit stores every candidate with the decision
    versions = list_versions(registry, f"vol_{names[0]}")
    usable = versions[versions["data_end"].notna() & (versions["data_end"] <= tail[0])]
    if usable.empty:
        raise _not_trained("the vol forecast", "vol_forecast.use_for_sizing", registry)
    meta = load_model(registry, f"vol_{names[0]}", str(usable.sort_values(["data_end", "created_at"])["version"].iloc[-1])).metadata
    if "sizing_model" not in meta:
        raise dg.Failure(description=(
            f"vol_forecast.use_for_sizing is on but the stored vol models (version {meta['version']}) predate the "
            "record of the sizing decision: run the research job once to store them again"))
    chosen = meta["sizing_model"]
    if chosen is None:  # the sizing vol won at the refit: no model in force
        return out
    stored = list_versions(registry, f"vol_{chosen}")
    same = stored[stored["evaluation_key"] == meta["evaluation_key"]]
    model = load_model(registry, f"vol_{chosen}", str(same["version"].iloc[-1])).model
    back_adjusted = [i.symbol for i in cfg.instruments if i.back_adjusted]
    panel = vol_forecast_panel(closes, vol.reindex(closes.index), vc.horizon, back_adjusted=back_adjusted)
    rows = panel[panel.index.get_level_values("session").isin(tail)]
    rows = rows[rows[list(model.columns)].notna().all(axis=1)]
    if len(rows):
        frac = pd.Series(np.sqrt(model.predict_var(rows)), index=rows.index).unstack("instrument")
        frac = frac.reindex(index=tail, columns=closes.columns)
        out.loc[tail] = (frac * closes.loc[tail]).to_numpy()
    return out
