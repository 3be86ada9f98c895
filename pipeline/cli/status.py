"""``status``: the cockpit's first screen (trading state, positions, orders, P&L, risk, alerts, rolls, runs)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli import common
from pipeline.cli.options import Config, Lake, date_option

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.execution.status import Section, Status

__all__ = ["commands", "last_runs", "status", "status_json"]

commands = typer.Typer(rich_markup_mode="markdown")
PANEL = "Trading controls"


def last_runs(job_names: list[str]) -> pd.DataFrame:
    """The last run of each job in the Dagster instance of ``$DAGSTER_HOME``.

    Returns
    -------
    pd.DataFrame
        Index ``job``; columns ``status`` (Dagster's run status, ``never run`` if none), ``run_id``
        (8 characters), ``partition``, ``started`` (UTC), ``duration_s`` (seconds, NaN while running).
    """
    import dagster as dg
    import pandas as pd

    from pipeline.definitions import ensure_dagster_home

    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    rows = []
    for job in job_names:  # one query per job (a handful), newest run first
        records = instance.get_run_records(filters=dg.RunsFilter(job_name=job), limit=1)
        if not records:
            rows.append({"job": job, "status": "never run", "run_id": "", "partition": "", "started": "",
                         "duration_s": float("nan")})
            continue
        record = records[0]
        run = record.dagster_run
        start, end = record.start_time, record.end_time
        rows.append({
            "job": job, "status": run.status.value, "run_id": run.run_id[:8],
            "partition": run.tags.get("dagster/partition", run.tags.get("dagster/asset_partition_range_end", "")),
            "started": pd.Timestamp(start, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC") if start else "",
            "duration_s": round(end - start, 1) if start and end else float("nan"),
        })
    return pd.DataFrame(rows).set_index("job")


def _runs_section() -> Section:
    """The last run of each job of the pipeline, or the section unavailable with the reason in one line."""
    from pipeline.definitions import DAILY_JOB
    from pipeline.execution.status import Section
    from sensors.schedules import regime_retrain_job

    title = "Last run of each job (Dagster)"
    try:
        return Section("runs", title, last_runs([DAILY_JOB, regime_retrain_job.name]))
    except Exception as exc:  # noqa: BLE001  an instance that cannot be opened must not hide the other sections
        return Section("runs", title, error=f"unavailable: {common.one_line(exc)}")


def status_json(status: Status) -> str:
    """``status`` as one JSON object: session, broker, base currency, book, and per section its
    title and ``rows`` (records, index included) or ``unavailable`` (the one-line reason)."""
    sections = {}
    for s in status.sections:
        if s.frame is None:
            sections[s.name] = {"title": s.title, "unavailable": s.error}
        else:
            records = s.frame.reset_index().to_json(orient="records", date_format="iso")
            sections[s.name] = {"title": s.title, "rows": json.loads(records)}
    return json.dumps({"session": str(status.session.date()), "broker": status.broker,
                       "base_currency": status.base_currency, "book": status.book, "sections": sections}, indent=1)


@commands.command(
    "status", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline status (or: trading-pipeline status --session 2022-12-28 --json)")
def status(
    session: Annotated[str | None, date_option(
        "--session", "the session to report (default: the latest session of target_positions)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (for scripts)")] = False,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """The first screen: is trading on, what do we hold, what did we trade, make and risk, what broke.

    In this order: trading state (kill switch, since when, why); open position breaks; per
    instrument the ledger's position, the target and the difference; the session's orders with
    their pre-trade verdicts, fills and slippage; P&L of the day, month and year in base currency
    and % of capital (the ledger's positions at each session end times the close-to-close price
    changes x point size x FX); risk now (gross exposure / capital, annualised risk against the
    vol target); alerts of the last days; roll states (futures); the last run of each job. Nothing
    is sent to the broker. A section whose data cannot be read says "unavailable" and why.
    """
    from pipeline.execution.status import gather_status

    cfg = common.load_config(config, lake)
    ledger = common.ledger(cfg, lake)
    broker = "ib" if cfg.broker.mode == "ib" else "paper"
    result = gather_status(cfg, ledger, common.lake_root(cfg, lake), str(common.state_root(cfg, lake)), broker,
                           session=session)
    result.sections.append(_runs_section())
    if as_json:
        print(status_json(result))
        return 0
    print(f"Status for session {result.session.date()} (broker {result.broker}, {result.base_currency}; "
          f"P&L and risk of {result.book})")
    for s in result.sections:
        if s.frame is None:
            print(f"\n{s.title}\n  {s.error}")
        else:
            common.print_frame(s.frame, s.title)
    return 0
