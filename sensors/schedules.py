"""Schedules: the daily run after the close, the research run after it, the weekly regime-model retraining.

All tick in the exchange's time zone (``America/New_York`` for XNYS), so they stay at the same
local hour across daylight-saving changes. On an exchange holiday the daily schedule launches a
no-op run of the daily (partitioned) assets only: the holiday's partition is materialized with no
rows and no orders (so the freshness policy holds), nothing is submitted and nothing else is
recomputed.
"""


import dagster as dg
import pandas as pd

from assets.partitions import DailyPartitions
from pipeline.calendar import is_session

#: Run config that lets ``orders`` submit: only the schedule and the ``daily`` CLI pass it.
SUBMIT_RUN_CONFIG = {"ops": {"orders": {"config": {"submit": True}}}}


def daily_asset_keys(repository_def: dg.RepositoryDefinition, daily: DailyPartitions) -> list[dg.AssetKey]:
    """Keys of the assets partitioned by the session partitions ``daily``, sorted."""
    return sorted((n.key for n in repository_def.asset_graph.asset_nodes if n.partitions_def == daily.partitions_def),
                  key=lambda k: k.to_user_string())


def build_daily_schedule(job, daily: DailyPartitions) -> dg.ScheduleDefinition:
    """Weekdays at 17:00 exchange time (an hour after the NYSE close, before the 18:30 freshness
    deadline). On a holiday or closure the run is a no-op: only the daily assets, for the
    holiday's partition, without the config that lets ``orders`` submit (no rows, no orders)."""

    @dg.schedule(
        name="daily_after_close",
        cron_schedule="0 17 * * 1-5",
        execution_timezone=daily.timezone,
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="The daily trading run for the session that just closed (17:00 exchange time; a holiday is a no-op run).",
    )
    def daily_after_close(context: dg.ScheduleEvaluationContext):
        session = pd.Timestamp(context.scheduled_execution_time).tz_convert(daily.timezone).tz_localize(None).normalize()
        key = session.strftime("%Y-%m-%d")
        if session.dayofweek >= 5:  # the cron never ticks on weekends; a weekend is no partition
            return dg.SkipReason(f"{key} is a weekend: no partition, no run")
        if not is_session(session, daily.calendar):
            return dg.RunRequest(
                run_key=f"daily-{key}",
                partition_key=key,
                asset_selection=daily_asset_keys(context.repository_def, daily),
                tags={"trading/trigger": "schedule", "trading/session": key, "trading/no_session": "true"},
            )
        return dg.RunRequest(
            run_key=f"daily-{key}",
            partition_key=key,
            run_config=SUBMIT_RUN_CONFIG,
            tags={"trading/trigger": "schedule", "trading/session": key},
        )

    return daily_after_close


def build_research_schedule(job, timezone: str) -> dg.ScheduleDefinition:
    """Weekdays at 19:00 exchange time (``timezone``), after the daily run's 18:30 freshness deadline:
    the research job (regime and vol-forecast refits, backtest) on the history the daily run just
    extended, so the next daily run reads models trained on it. One run per day, keyed by its date."""

    @dg.schedule(
        name="research_after_close",
        cron_schedule="0 19 * * 1-5",
        execution_timezone=timezone,
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="The research job after the daily run (19:00 exchange time, weekdays): model refits and the "
                    "backtest. Sends no orders.",
    )
    def research_after_close(context: dg.ScheduleEvaluationContext):
        day = pd.Timestamp(context.scheduled_execution_time).tz_convert(timezone).strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"research-{day}", tags={"trading/trigger": "schedule"})

    return research_after_close


#: The regime model's asset key (the asset is defined with the research assets; selecting it by key
#: keeps this module independent of where it lives).
REGIME_MODEL = dg.AssetKey("regime_model")

#: Retrains the regime model alone; it reads the volatility and combined forecasts already in the lake.
regime_retrain_job = dg.define_asset_job(
    "regime_retrain_job",
    selection=dg.AssetSelection.assets(REGIME_MODEL),
    executor_def=dg.in_process_executor,
    tags={"trading/job": "regime_retrain"},
    description="Retrain the volatility-regime model (walk-forward) on all history in the lake. Sends no orders.",
)


def build_weekly_regime_retrain(timezone: str) -> dg.ScheduleDefinition:
    """Retrain the regime model every Saturday at 06:00 exchange time (``timezone``), after the
    week's last session: one run per Saturday, keyed by its date (a re-evaluated tick never
    launches a second run)."""

    @dg.schedule(
        name="weekly_regime_retrain",
        cron_schedule="0 6 * * 6",
        execution_timezone=timezone,
        job=regime_retrain_job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Retrain the regime model every Saturday at 06:00 exchange time, after the week's last session.",
    )
    def weekly_regime_retrain(context: dg.ScheduleEvaluationContext):
        day = pd.Timestamp(context.scheduled_execution_time).tz_convert(timezone).strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"regime-retrain-{day}", tags={"trading/trigger": "schedule"})

    return weekly_regime_retrain
