"""The Dagster code location: every asset, the daily and research jobs, their schedules, the alert sensors.

The validated configuration builds the definitions (:func:`build_definitions`): the session
partitions come from its ``history_start`` and ``calendar``, the resources from its storage and
broker settings. ``dagster dev -w workspace.yaml`` and ``dg dev`` load :func:`defs`, which reads
``$TRADING_PIPELINE_CONFIG`` (or the bundled default) when Dagster loads the code location, never
at import. The ``trading-pipeline`` CLI builds the same definitions from its ``--config`` and runs
them through :func:`execute_daily`, :func:`execute_research` and :func:`execute_backfill`, in-process
against the persistent instance in ``$DAGSTER_HOME``, so CLI runs appear in the UI like scheduled ones.

The daily job holds what a trading day needs (bars, checks, forecasts, weights, positions, orders);
the research assets (``backtest``, the ``regime_model`` and ``vol_forecast`` refits) are the research
job's, which the daily reads from the lake and the model registry without refitting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from assets import execution, futures, ingest, portfolio, quality, signals
from assets.console import console_logger
from assets.ml import regime_model, vol_forecast
from assets.partitions import daily_partitions
from assets.portfolio import instrument_weights
from assets.research import backtest
from assets.resources import default_resources
from assets.signals import forecast_scalars
from pipeline.config import PipelineConfig, load_config
from sensors.alerts import asset_check_alerts, run_failure_alerts
from sensors.schedules import (
    SUBMIT_RUN_CONFIG,
    build_daily_schedule,
    build_research_schedule,
    build_weekly_regime_retrain,
)

DAILY_JOB = "daily_job"
RESEARCH_JOB = "research_job"
#: The daily assets and the research assets in one run: ``trading-pipeline backtest`` (and
#: ``walk-forward``, ``stability``) on an empty lake; not a job of the code location.
FULL_JOB = "daily_and_research_job"


def build_definitions(config: PipelineConfig, *, config_path: str | None = None, lake_root: str | None = None,
                      state_root: str | None = None) -> dg.Definitions:
    """Every asset, check, job, schedule, sensor and resource of the pipeline for ``config``.

    ``config_path`` is the file ``config`` was read from (None: ``$TRADING_PIPELINE_CONFIG`` or the
    bundled default); ``lake_root`` and ``state_root`` override the file's storage (tests).
    """
    daily = daily_partitions(config)
    (raw_bars,) = ingest.build(daily)
    (clean_bars,) = quality.build(daily)
    volatility, forecasts, combined_forecast = signals.build(daily)
    (target_positions,) = portfolio.build(daily)
    # futures with roll parameters only (a stock-only graph is unchanged); orders wait for the expiry guard
    futures_assets = futures.build(daily, config)
    (orders,) = execution.build(daily, deps=(futures.FUTURES_POSITIONS,) if futures_assets else ())
    trading = [raw_bars, clean_bars, volatility, forecast_scalars, forecasts, combined_forecast, instrument_weights,
               target_positions, *futures_assets, orders]
    research = [regime_model, vol_forecast, backtest]
    #: One run computes every daily asset for one session (or a single-run backfill of many). The
    #: in-process executor avoids a subprocess per step (about 1.7 s CPU each on two cores).
    daily_job = dg.define_asset_job(
        DAILY_JOB,
        selection=dg.AssetSelection.assets(*trading),
        partitions_def=daily.partitions_def,
        executor_def=dg.in_process_executor,
        tags={"trading/job": "daily"},
        description="The daily trading run: bars -> checks -> forecasts -> weights -> positions -> orders.",
    )
    #: Unpartitioned: the refits and the backtest read all history in the lake. Never on the order path.
    research_job = dg.define_asset_job(
        RESEARCH_JOB,
        selection=dg.AssetSelection.assets(*research),
        executor_def=dg.in_process_executor,
        tags={"trading/job": "research"},
        description="Research on all history in the lake: regime model and vol forecast refits (new registry "
                    "versions), the backtest. Sends no orders; the daily run reads the stored models.",
    )
    return dg.Definitions(
        assets=[*trading, *research],
        jobs=[daily_job, research_job],
        schedules=[build_daily_schedule(daily_job, daily), build_research_schedule(research_job, daily.timezone),
                   build_weekly_regime_retrain(daily.timezone)],
        sensors=[asset_check_alerts, run_failure_alerts],
        resources=default_resources(config_path, lake_root, state_root, config=config),
        loggers={"console": console_logger},  # one line per event; stack traces at DEBUG (assets/console.py)
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location Dagster loads: the definitions of ``$TRADING_PIPELINE_CONFIG`` (or the
    bundled default), read when Dagster loads the location."""
    return build_definitions(load_config())


DEFAULT_DAGSTER_HOME = ".dagster_home"
_DAGSTER_YAML = """# Dagster instance of this project (SQLite storage under this folder).
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: trading/job       # at most one daily run at a time (queued runs wait)
        value: daily
        limit: 1
  pools:
    default_limit: 1           # for pools you add; the order step and the bar fetch use flocks
                               # (pipeline/store/locks.py), which a killed run cannot keep
retention:
  schedule:
    purge_after_days: 90
  sensor:
    purge_after_days:
      skipped: 7
      failure: 30
      success: -1
"""


#: Appended to :data:`_DAGSTER_YAML` for a new instance folder: Dagster's SQLite event log in its
#: default folder, storing a backfill's batches of materializations in one transaction each
#: (``assets/event_storage.py``); runs and schedules keep Dagster's default SQLite storage.
_EVENT_LOG_YAML = """event_log_storage:          # batched backfill events on SQLite (assets/event_storage.py)
  module: assets.event_storage
  class: BatchedSqliteEventLogStorage
  config:
    base_dir: {base_dir}
"""


def instance_yaml(home: Path) -> str:
    """The ``dagster.yaml`` of a new instance folder ``home`` (SQLite storage under it)."""
    return _DAGSTER_YAML + _EVENT_LOG_YAML.format(base_dir=os.path.join(str(Path(home).resolve()), "history", "runs", ""))


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME``, defaulting to ``./.dagster_home`` (created with a ``dagster.yaml``)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(DEFAULT_DAGSTER_HOME).resolve())))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(instance_yaml(home))
    return home


#: Where research runs (``trading-pipeline backtest``, ``walk-forward``, ``stability``) are recorded:
#: their own Dagster instance, never the production one, so the UI's runs, ``orders`` and
#: ``target_positions`` of production show production only. Default: beside ``$DAGSTER_HOME``,
#: ``<DAGSTER_HOME>-research``; open it with ``DAGSTER_HOME=<that folder> dagster dev``.
RESEARCH_HOME_ENV = "TRADING_PIPELINE_RESEARCH_HOME"


def research_dagster_home() -> Path:
    """The research instance's folder (``$TRADING_PIPELINE_RESEARCH_HOME``, else ``<DAGSTER_HOME>-research``
    beside the production instance), created with the project's ``dagster.yaml``."""
    production = Path(os.environ.get("DAGSTER_HOME", DEFAULT_DAGSTER_HOME)).resolve()
    home = Path(os.environ.get(RESEARCH_HOME_ENV) or production.with_name(production.name + "-research")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(instance_yaml(home))
    return home


def _job(config: PipelineConfig | None, config_path: str | None, lake_root: str | None,
         name: str = DAILY_JOB) -> dg.JobDefinition:
    """Job ``name`` of the definitions of ``config`` (:data:`FULL_JOB`: every asset, the daily's partitions)."""
    config = config if config is not None else load_config(config_path)
    defs = build_definitions(config, config_path=config_path, lake_root=lake_root)
    if name == FULL_JOB:
        full = dg.define_asset_job(FULL_JOB, selection=dg.AssetSelection.all(),
                                   partitions_def=daily_partitions(config).partitions_def,
                                   executor_def=dg.in_process_executor, tags={"trading/job": "backtest"})
        defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[full]))
    return defs.resolve_job_def(name)


#: Level of the console log of the in-process runs (``TRADING_PIPELINE_LOG_LEVEL``; ``--verbose`` sets
#: DEBUG): INFO shows what the steps say (alerts, warnings, the orders decision) without Dagster's
#: per-step DEBUG events (step start, output, materialization: 10 to 20 lines per asset).
LOG_LEVEL_ENV = "TRADING_PIPELINE_LOG_LEVEL"


def _console_logging() -> dict:
    """Run config of Dagster's console logger at the level of :data:`LOG_LEVEL_ENV` (default INFO)."""
    level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def execute_daily(session: str, *, submit: bool = True, config_path: str | None = None,
                  lake_root: str | None = None, instance: dg.DagsterInstance | None = None,
                  tags: dict[str, str] | None = None, config: PipelineConfig | None = None,
                  research: bool = False) -> dg.ExecuteInProcessResult:
    """Run the daily job for ``session`` (``YYYY-MM-DD``) in-process, recorded in the instance.

    ``submit`` lets ``orders`` send to the broker; it is honoured only for the latest session.
    ``config`` is the configuration already read from ``config_path`` (None: read it here).
    ``research`` runs the research assets in the same run (:data:`FULL_JOB`: the refits before
    ``target_positions``, the backtest after it), as ``trading-pipeline backtest`` does on an empty lake.
    """
    instance = instance or dg.DagsterInstance.get()
    config = config if config is not None else load_config(config_path)
    quality.preload_expectations(config)  # GX's import overlaps the run's start and raw_bars
    return _job(config, config_path, lake_root, FULL_JOB if research else DAILY_JOB).execute_in_process(
        instance=instance,
        partition_key=session,
        run_config={**(SUBMIT_RUN_CONFIG if submit else {}), **_console_logging()},
        tags={"trading/trigger": "cli-daily", **(tags or {})},
        raise_on_error=False,
    )


def execute_research(*, config_path: str | None = None, lake_root: str | None = None,
                     instance: dg.DagsterInstance | None = None, tags: dict[str, str] | None = None,
                     config: PipelineConfig | None = None) -> dg.ExecuteInProcessResult:
    """Run the research job in-process on all history in the lake, recorded in the instance.

    Refits ``regime_model`` and ``vol_forecast`` (a new registry version when the data changed) and
    runs ``backtest``; sends no order. The lake must hold the daily assets (a daily run or a backfill).
    """
    instance = instance or dg.DagsterInstance.get()
    return _job(config, config_path, lake_root, RESEARCH_JOB).execute_in_process(
        instance=instance,
        run_config=_console_logging(),
        tags={"trading/trigger": "cli-research", **(tags or {})},
        raise_on_error=False,
    )


#: Dagster settings for single-run backfills (read from the environment when events are written).
#: ``DAGSTER_EVENT_BATCH_SIZE``: the per-partition materializations of one asset are stored in
#: batches of this size (PostgreSQL: one multi-row INSERT per batch; SQLite: one transaction per
#: batch with the project's event log storage, ``assets/event_storage.py``, one commit per event
#: with Dagster's own). ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``: one "materialization
#: planned" event per asset carrying the whole partition range instead of one per partition.
#: Every partition is still recorded as materialized; the trade-off (Dagster's own note) is that
#: the partitions of a range run that fails are not marked "failed" one by one in the UI (the run is).
BACKFILL_EVENT_SETTINGS = {
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
}


@contextmanager
def _environment(settings: dict[str, str]) -> Iterator[None]:
    """Set ``settings`` in ``os.environ`` unless already set by the user; restore on exit."""
    added = {k: v for k, v in settings.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def execute_backfill(start: str, end: str, *, config_path: str | None = None, lake_root: str | None = None,
                     instance: dg.DagsterInstance | None = None,
                     config: PipelineConfig | None = None) -> dg.ExecuteInProcessResult:
    """A single-run backfill of every daily asset over sessions ``start`` .. ``end`` (never submits).

    One run materializes every partition of the range (one materialization event per asset and
    session, as the UI shows them); its events are written with :data:`BACKFILL_EVENT_SETTINGS`
    (values already in the environment win).
    """
    instance = instance or dg.DagsterInstance.get()
    with _environment(BACKFILL_EVENT_SETTINGS):
        return _job(config, config_path, lake_root).execute_in_process(
            instance=instance,
            run_config=_console_logging(),
            tags={
                "dagster/asset_partition_range_start": start,
                "dagster/asset_partition_range_end": end,
                "trading/trigger": "cli-backfill",
            },
            raise_on_error=False,
        )
