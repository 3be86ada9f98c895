"""``raw_bars``: daily bars exactly as the bar source returned them (append-only)."""


import dagster as dg
import pandas as pd

from assets.partitions import DailyPartitions, no_session_result, run_sessions
from assets.resources import BarSourceResource, Settings
from pipeline.store.locks import exclusive_lock

RAW_BARS = "raw_bars"
#: Seconds a fetch waits for another process's fetch to finish (a long IB history can take minutes).
BAR_SOURCE_LOCK_WAIT = 1800.0


def raw_bars(context: dg.AssetExecutionContext, settings: Settings, bar_source: BarSourceResource) -> dg.MaterializeResult:
    """Daily bars of every configured instrument as the bar source returned them.

    Append-only: each fetch is a new batch of files with its ``source`` and ``fetched_at``; nothing
    is ever rewritten. A run fetches its own sessions plus any sessions between the last stored
    bar and its end (on an empty lake, the whole history from ``history_start``).

    Fails (nothing written) when the source has no bar at all for a session of the run: an empty
    answer is never taken as "no bars".
    """
    cfg, lake, source = settings.config(), settings.lake(), bar_source.source()
    run = run_sessions(context, cfg.calendar)
    if run.empty:  # a holiday or closure: a successful no-op (assets/partitions.py)
        return no_session_result(context, cfg.calendar)
    stored = lake.sessions(RAW_BARS)
    start = pd.Timestamp(cfg.history_start) if stored.empty else min(run[0], stored[-1] + pd.Timedelta(days=1))
    # one fetch at a time (IB pacing is per connection): a lock a killed run cannot keep
    with exclusive_lock(settings.state_path() / "locks" / "bar_source.lock", wait=BAR_SOURCE_LOCK_WAIT):
        bars = source.fetch(cfg.symbols, start, run[-1])
    got = pd.DatetimeIndex(bars["session"].unique())
    missing = run.difference(got)
    if len(missing):
        latest = source.last_session(cfg.symbols)
        raise dg.Failure(
            f"raw_bars: source {source.name!r} has no bars for {len(missing)} session(s) of this run "
            f"({', '.join(d.strftime('%Y-%m-%d') for d in missing[:5])}{' ...' if len(missing) > 5 else ''}); "
            f"its latest session is {latest.date() if latest is not None else 'none'}. Nothing was written."
        )
    fetched_at = pd.Timestamp(bars["fetched_at"].iloc[0])
    batch = f"{fetched_at.strftime('%Y%m%dT%H%M%S%f')}-{context.run.run_id[:8]}"
    lake.append(RAW_BARS, bars, batch=batch)
    in_run = bars[bars["session"].isin(run)]
    per_instrument = in_run.groupby("instrument").size().reindex(cfg.symbols, fill_value=0)
    return dg.MaterializeResult(
        metadata={
            "source": source.name,
            "rows_fetched": len(bars),
            "rows_in_run_sessions": len(in_run),
            "fetched_range": f"{bars['session'].min().date()} .. {bars['session'].max().date()}",
            "instruments_without_bars": dg.MetadataValue.json(per_instrument[per_instrument == 0].index.tolist()),
            "batch": batch,
            "path": dg.MetadataValue.path(str(lake.path(RAW_BARS))),
        }
    )


def build(daily: DailyPartitions) -> list[dg.AssetsDefinition]:
    """The session-partitioned assets of this module, on the partitions of the configuration."""
    return [
        daily.asset(
            raw_bars,
            group_name="ingest",
            retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
        ),
    ]
