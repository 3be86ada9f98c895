"""The daily schedule: after the close, in the exchange's time zone, on sessions only."""


import dagster as dg
import pandas as pd

from assets.partitions import CALENDAR, EXCHANGE_TIMEZONE as TIMEZONE
from pipeline.calendar import is_session

#: Run config that lets ``orders`` submit: only the schedule and the ``daily`` CLI pass it.
SUBMIT_RUN_CONFIG = {"ops": {"orders": {"config": {"submit": True}}}}


def build_daily_schedule(job) -> dg.ScheduleDefinition:
    """Weekdays at 17:00 exchange time (an hour after the NYSE close, before the 18:30 freshness
    deadline); a holiday is skipped (no run, no orders)."""

    @dg.schedule(
        name="daily_after_close",
        cron_schedule="0 17 * * 1-5",
        execution_timezone=TIMEZONE,
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="The daily trading run for the session that just closed (17:00 exchange time, sessions only).",
    )
    def daily_after_close(context: dg.ScheduleEvaluationContext):
        session = pd.Timestamp(context.scheduled_execution_time).tz_convert(TIMEZONE).tz_localize(None).normalize()
        if not is_session(session, CALENDAR):
            return dg.SkipReason(f"{session.date()} is not a {CALENDAR} session (holiday or closure): no run, no orders")
        key = session.strftime("%Y-%m-%d")
        return dg.RunRequest(
            run_key=f"daily-{key}",
            partition_key=key,
            run_config=SUBMIT_RUN_CONFIG,
            tags={"trading/trigger": "schedule", "trading/session": key},
        )

    return daily_after_close
