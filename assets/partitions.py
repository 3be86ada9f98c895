"""Daily session partitions: Monday-Friday, the exchange's holidays and closures excluded.

Keys are session dates (``2022-12-28``). ``end_offset=1`` makes today's session a partition from
midnight, so the post-close schedule can target the session that just closed.
"""


import datetime as dt

import dagster as dg
import pandas as pd

from pipeline.calendar import exchange_timezone, non_session_weekdays
from pipeline.config import load_config

_cfg = load_config()
#: The exchange calendar and time zone of the partitions (the schedule uses the same).
CALENDAR = _cfg.calendar
EXCHANGE_TIMEZONE = exchange_timezone(CALENDAR)

daily_sessions = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 * * 1-5",
    start=_cfg.history_start,
    fmt="%Y-%m-%d",
    timezone=EXCHANGE_TIMEZONE,
    end_offset=1,
    exclusions=non_session_weekdays(_cfg.history_start, _cfg.calendar),
)

#: Time-series assets compute a backfill of any length in one run (DESIGN.md, "Partitions").
single_run = dg.BackfillPolicy.single_run()


def run_sessions(context: dg.AssetExecutionContext) -> pd.DatetimeIndex:
    """The sessions of this run: one partition, or every partition of a single-run backfill."""
    return pd.DatetimeIndex(pd.to_datetime(context.partition_keys), name="session").astype("datetime64[ns]")


#: Daily assets must be materialized for the session by 18:30 exchange time on weekdays, from
#: the close on (a run after 16:00 counts). Exchange holidays have no partition; the policy still
#: expects a materialization on those evenings (a known false "overdue" on holidays).
ready_by_evening = dg.FreshnessPolicy.cron(
    deadline_cron="30 18 * * 1-5",
    lower_bound_delta=dt.timedelta(hours=2, minutes=30),
    timezone=EXCHANGE_TIMEZONE,
)

#: The keyword arguments every daily (session-partitioned) asset shares.
DAILY_ASSET = dict(
    partitions_def=daily_sessions,
    backfill_policy=single_run,
    freshness_policy=ready_by_evening,
    kinds={"python", "parquet"},
    code_version="1",
)
