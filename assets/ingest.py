"""``raw_bars``: daily bars exactly as the bar source returned them (append-only).

Inputs the source cannot read (a files source's empty, binary, headerless or non-UTF-8 file) do not
stop the run: each is recorded once in the ledger's ``source_errors`` table with one alert, the
universe instruments no readable input holds are named there too, and the run goes on with the
bars of the readable inputs. Only when no instrument of the universe is readable does the step
fail, without retries (reading the same files again gives the same answer); errors of the
source's connection (IB) keep the retry policy.
"""


import dagster as dg
import pandas as pd

from assets.partitions import DailyPartitions, no_session_result, run_sessions
from assets.resources import BarSourceResource, Settings
from pipeline.adapters.alerts import notify
from pipeline.bars import SourceDataError, SourceReport, fetch_report
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
    answer is never taken as "no bars". Unreadable inputs and the universe instruments no readable
    input holds are recorded in ``source_errors`` and alerted once each (module docstring); the
    step fails without retry when they leave no instrument of the universe, or when the source
    answers with a deterministic :class:`~pipeline.bars.SourceDataError`.
    """
    cfg, lake, source = settings.config(), settings.lake(), bar_source.source()
    run = run_sessions(context, cfg.calendar)
    if run.empty:  # a holiday or closure: a successful no-op (assets/partitions.py)
        return no_session_result(context, cfg.calendar)
    stored = lake.sessions(RAW_BARS)
    start = pd.Timestamp(cfg.history_start) if stored.empty else min(run[0], stored[-1] + pd.Timedelta(days=1))
    # one fetch at a time (IB pacing is per connection): a lock a killed run cannot keep
    with exclusive_lock(settings.state_path() / "locks" / "bar_source.lock", wait=BAR_SOURCE_LOCK_WAIT):
        try:
            report = fetch_report(source, cfg.symbols, start, run[-1])
        except SourceDataError as exc:  # the source's data, not its connection: asking again cannot help
            raise dg.Failure(f"raw_bars: {exc}", allow_retries=False) from exc
    problems = _report_source_errors(context, settings, source.name, report, start, run[-1])
    if len(report.missing) == len(cfg.symbols):
        raise dg.Failure(
            f"raw_bars: source {source.name!r} has no readable input for any instrument of the universe "
            f"({problems}); nothing was written. See trading-pipeline query \"select * from source_errors\"",
            allow_retries=False,
        )
    bars = report.bars
    got = pd.DatetimeIndex(bars["session"].unique())
    missing = run.difference(got)
    if len(missing):
        latest = source.last_session(cfg.symbols)
        # Sessions after the source's latest may still arrive (a vendor publishes late): retried.
        # Sessions inside its history that it does not hold never will: asking again cannot help.
        arriving = latest is None or bool((missing > latest).any())
        raise dg.Failure(
            f"raw_bars: source {source.name!r} has no bars for {len(missing)} session(s) of this run "
            f"({', '.join(d.strftime('%Y-%m-%d') for d in missing[:5])}{' ...' if len(missing) > 5 else ''}); "
            f"its latest session is {latest.date() if latest is not None else 'none'}. Nothing was written."
            + ("" if arriving else " These sessions lie inside the source's history and it holds no bar for them "
                                   "(asking again cannot help): backfill from the source's first session, or set "
                                   "history_start to it."),
            allow_retries=arriving,
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
            "unreadable_inputs": dg.MetadataValue.json(report.unreadable["file"].tolist()),
            "instruments_not_in_source": dg.MetadataValue.json(report.missing),
            "batch": batch,
            "path": dg.MetadataValue.path(str(lake.path(RAW_BARS))),
        }
    )


def _report_source_errors(context: dg.AssetExecutionContext, settings: Settings, source: str, report: SourceReport,
                          start: pd.Timestamp, end: pd.Timestamp) -> str:
    """Record the report's unreadable inputs and missing instruments in ``source_errors`` and raise
    one alert per problem not seen before; returns a one-line count for messages.

    An instrument whose own file (``KO.csv``) is unreadable is named on that file's row; only the
    instruments no file at all could hold get a row of their own. The names are not logged here:
    the command prints them once from the table, the UI shows them in the metadata.
    """
    files = report.unreadable
    alone = [i for i in report.missing if i not in set(files["instrument"])]
    new = settings.ledger().record_source_errors(source, files, alone, run_id=context.run.run_id, start=start, end=end)
    ledger = settings.ledger()
    for row in new.itertuples(index=False):  # one alert per unreadable file / missing instrument, once
        notify(ledger, kind="source_error", severity="ERROR", subject=row.file or row.instrument, message=row.reason,
               dedupe_key=f"source_error:{row.error_id}")
    if files.empty and not report.missing:
        return "no unreadable input"
    summary = f"{len(files)} unreadable input(s), {len(report.missing)} instrument(s) of the universe not readable"
    context.log.warning(f"raw_bars: {summary}; see trading-pipeline query \"select * from source_errors\"")
    return summary


def build(daily: DailyPartitions) -> list[dg.AssetsDefinition]:
    """The session-partitioned assets of this module, on the partitions of the configuration."""
    return [
        daily.asset(
            raw_bars,
            group_name="ingest",
            retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
        ),
    ]
