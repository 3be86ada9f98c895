"""Daily partitions: one per weekday (Monday-Friday); only exchange sessions carry data.

Keys are dates (``2022-12-28``). ``end_offset=1`` makes today's weekday a partition from midnight,
so the post-close schedule can target the session that just closed. Exchange holidays and
closures are partitions too, on which every daily asset is a successful no-op (no rows, no
orders): :func:`run_sessions` keeps only the sessions of the exchange calendar, and a run whose
partitions hold no session returns :func:`no_session_result`.

Why holidays are not excluded from the partitions definition: Dagster 1.13 stores one "asset
check planned" row per check and partition of a run, each holding the serialized partitions
definition; a list of every holiday since ``history_start`` made each row 35 kB (0.43 GB and
about 30 s of serialization for a 10-year backfill), without it each row is 1.3 kB.
"""


import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from pipeline.calendar import exchange_timezone, sessions
from pipeline.config import PipelineConfig

#: Time-series assets compute a backfill of any length in one run (DESIGN.md, "Partitions").
single_run = dg.BackfillPolicy.single_run()


@dataclass(frozen=True)
class DailyPartitions:
    """The session partitions of one configuration and the settings every daily asset shares.

    Built from the validated configuration by :func:`daily_partitions` (``history_start`` and
    ``calendar``), so a ``--config`` file moves the partitions, and nothing is read at import.
    """

    calendar: str
    timezone: str
    partitions_def: dg.TimeWindowPartitionsDefinition
    #: Daily assets must be materialized for the session by 18:30 exchange time on weekdays, from
    #: the close on (a run after 16:00 counts). On a holiday the schedule's no-op run materializes
    #: the holiday's partition, so the policy holds on holidays too.
    freshness: dg.FreshnessPolicy = field(repr=False, default=None)

    def asset(self, fn: Callable, *, kinds: Sequence[str] = ("python", "parquet"), **kwargs) -> dg.AssetsDefinition:
        """``fn`` as a daily asset: partitioned by session, single-run backfills, the freshness
        policy; ``kwargs`` (``deps``, ``group_name``, ``check_specs``, ``pool``) go to :func:`dagster.asset`."""
        return dg.asset(
            partitions_def=self.partitions_def,
            backfill_policy=single_run,
            freshness_policy=self.freshness,
            kinds=set(kinds),
            code_version="1",
            **kwargs,
        )(fn)


def daily_partitions(cfg: PipelineConfig) -> DailyPartitions:
    """One partition per weekday from ``cfg.history_start``, in the time zone of ``cfg.calendar``."""
    timezone = exchange_timezone(cfg.calendar)
    return DailyPartitions(
        calendar=cfg.calendar,
        timezone=timezone,
        partitions_def=dg.TimeWindowPartitionsDefinition(
            cron_schedule="0 0 * * 1-5",
            start=cfg.history_start,
            fmt="%Y-%m-%d",
            timezone=timezone,
            end_offset=1,
        ),
        freshness=dg.FreshnessPolicy.cron(
            deadline_cron="30 18 * * 1-5",
            lower_bound_delta=dt.timedelta(hours=2, minutes=30),
            timezone=timezone,
        ),
    )


def partition_sessions(keys: list[str] | pd.Index, calendar: str = "XNYS") -> pd.DatetimeIndex:
    """The exchange sessions among partition keys (holidays and closures dropped).

    Parameters
    ----------
    keys : partition keys ``YYYY-MM-DD`` (weekdays), in any order.
    calendar : exchange_calendars code (``calendar`` of the config; default NYSE, as the config's).

    Returns
    -------
    pd.DatetimeIndex
        Sorted tz-naive session dates (``datetime64[ns]``, name ``session``); empty when no key is
        a session.
    """
    days = pd.DatetimeIndex(pd.to_datetime(pd.Index(keys, dtype=object)), name="session").astype("datetime64[ns]")
    if days.empty:
        return days
    days = days.sort_values()
    return days[days.isin(sessions(days[0], days[-1], calendar))]


def run_sessions(context: dg.AssetExecutionContext, calendar: str) -> pd.DatetimeIndex:
    """The exchange sessions of this run: its partition, or every partition of a single-run
    backfill, holidays and closures left out (empty for a run of holidays only)."""
    return partition_sessions(context.partition_keys, calendar)


def is_backfill(context: dg.AssetExecutionContext) -> bool:
    """True in a run over more than one partition (a single-run backfill): it never sends orders, so its
    data checks report and leave bad bars out instead of blocking (DESIGN.md rule 7). Read from the run's
    partition-range tags, so it also answers for the unpartitioned assets of such a run."""
    tags = context.run.tags
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return start is not None and end is not None and start != end


def no_session_result(context: dg.AssetExecutionContext, calendar: str, **kwargs) -> dg.MaterializeResult:
    """The result of a daily asset in a run whose partitions hold no exchange session.

    A holiday or closure partition is materialized with no rows: a successful no-op that sends
    and records no order. ``kwargs`` go to :class:`dagster.MaterializeResult` (``check_results``).
    """
    keys = ", ".join(context.partition_keys)
    return dg.MaterializeResult(
        metadata={"rows_written": 0, "sessions_in_run": 0,
                  "note": f"{keys}: not a {calendar} session (holiday or closure); nothing to compute, no orders"},
        **kwargs,
    )
