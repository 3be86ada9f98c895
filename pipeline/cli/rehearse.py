"""``rehearse``: the daily job session by session against a fake IB gateway, through rolls and expiries.

One process, one Dagster instance (SQLite under ``DIR/dagster_home``), one fake gateway on a free
port of 127.0.0.1 in a thread of this process. The gateway lists the futures' dated months (the
exchange's rules, or a compressed calendar whose months expire every few sessions) with seeded
generated bars, serves bars up to its session clock and fills orders at that session's prices. For
each session the daily job runs once (``execute_daily``, orders submitted, the ``ib`` source and the
``ib`` broker in ``paper`` execution against the gateway); then the gateway's positions per contract
and the orders it received are recorded and its clock moves one session on (months expire, cash
positions settle). ``DIR/rehearsal.json`` holds what it found; see docs/futures.md "Rehearsal".

The configuration is a pipeline configuration plus a ``rehearsal:`` section (:class:`Rehearsal`,
taken out before the rest is validated); the command's switches override it. The rehearsal writes
the configuration it runs (``DIR/config.yaml``): ``source`` and ``broker`` pointed at the gateway,
``lake_root`` under DIR, and each future's exact ``rolls.expiries`` and ``rolls.close_outs`` from the
gateway's listing where the file gives none.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.cli import common
from pipeline.cli.options import date_option

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.adapters.ib.fake_gateway import FakeTWS
    from pipeline.config import PipelineConfig

__all__ = ["Rehearsal", "commands", "rehearse", "run_rehearsal"]

commands = typer.Typer(rich_markup_mode="markdown")
PANEL = "Rehearsal"
#: IB client ids of the rehearsal's bar source and broker sessions.
SOURCE_CLIENT_ID, BROKER_CLIENT_ID = 31, 32
#: Historical requests the rehearsal's pacing budget admits in IB's 10-minute window (IB: 60).
REHEARSAL_GLOBAL_MAX = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Compressed(_Strict):
    """A compressed calendar: from the first session, each next month of a future's cycle expires
    ``every`` sessions after the one before; a physically delivered one closes out ``close_out_lead``
    sessions before its last trading day. The roll offset and the roll-state thresholds, set in
    sessions for months that live one to three months, are replaced by these for every future."""

    every: int = Field(6, ge=2, description="sessions between two expiries")
    close_out_lead: int = Field(1, ge=1, description="physical delivery: sessions from close-out to last trade")
    roll_offset_days: int = Field(-4, description="every future's rolls.roll_offset_days on this calendar")
    force_sessions: int = Field(3, ge=1, description="every future's rolls.force_sessions on this calendar")
    outright_after: int = Field(1, ge=1, description="every future's rolls.outright_after on this calendar")
    expiry_guard_sessions: int = Field(1, ge=0, description="every future's rolls.expiry_guard_sessions")


class PositionBreak(_Strict):
    """A position the ledger does not know: ``quantity`` contracts added at the broker to
    ``instrument``'s held month (its front month when flat) before the daily run of ``session``."""

    session: dt.date
    instrument: str
    quantity: float = 1.0


class Rehearsal(_Strict):
    """The ``rehearsal:`` section of the configuration (the command's switches override it)."""

    start: dt.date = Field(description="first session played (a CMES session on or after it)")
    sessions: int = Field(40, ge=1, description="sessions played")
    compressed: Compressed | None = Field(None, description="null: each future's months on the exchange's rules")
    spread_never_fills: bool = Field(False, description="calendar spreads (BAG) rest unfilled at the gateway")
    skip_sessions: list[str] = Field(default_factory=list, description="START:N, no daily run on N sessions from START")
    position_break: PositionBreak | None = None
    account: str = "DU1234567"

    @field_validator("skip_sessions")
    @classmethod
    def _skips(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_skip(item)
        return value


def parse_skip(text: str) -> tuple[dt.date, int]:
    """``START:N`` (``2023-03-10:3``) as (start date, sessions); ValueError naming the text otherwise."""
    try:
        start, n = text.split(":")
        day, count = dt.date.fromisoformat(start.strip()), int(n)
    except ValueError:
        raise ValueError(f"skip {text!r} is not START:N (e.g. 2023-03-10:3)") from None
    if count < 1:
        raise ValueError(f"skip {text!r}: N must be at least 1")
    return day, count


def _read(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's pipeline configuration and its ``rehearsal:`` section (ConfigError if unreadable)."""
    from pipeline.config import ConfigError, read_config_file

    raw = read_config_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} is not a mapping")
    return raw, raw.pop("rehearsal", None) or {}


def _specs(raw: dict[str, Any], path: str) -> dict[str, Any]:
    """The gateway's FutureSpec of each future of the file (instruments with ``rolls``), by symbol."""
    from pipeline.adapters.ib.fake_gateway import BUILTIN_FUTURES
    from pipeline.config import ConfigError

    futures = [i for i in raw.get("instruments") or [] if isinstance(i, dict) and i.get("rolls")]
    if not futures:
        raise ConfigError(f"config file {path}: a rehearsal needs futures (instruments with rolls)")
    unknown = [i.get("symbol") for i in futures if i.get("symbol") not in BUILTIN_FUTURES]
    if unknown:
        raise ConfigError(f"config file {path}: the fake gateway lists {sorted(BUILTIN_FUTURES)} (IB symbols), "
                          f"not {unknown}")
    return {i["symbol"]: BUILTIN_FUTURES[i["symbol"]] for i in futures}


def _gateway(specs: dict[str, Any], plan: Rehearsal, history_start: str, end: pd.Timestamp) -> tuple[FakeTWS, Any]:
    """The fake gateway (not started) listing each future's months with generated bars, and the months."""
    import pandas as pd

    from pipeline.adapters.ib.fake_gateway import (
        FakeTWS,
        generated_bars,
        rehearsal_months,
    )

    fake = FakeTWS(account=plan.account, session=plan.start, lifetime=None, idle_timeout=3600.0)
    fake.spreads_fill = not plan.spread_never_fills
    every = plan.compressed.every if plan.compressed else None
    lead = plan.compressed.close_out_lead if plan.compressed else 2
    tables = []
    for symbol, spec in specs.items():  # a handful of futures
        table = rehearsal_months(spec, history_start, fake.session, end, every=every, close_out_lead=lead)
        bars = dict(tuple(generated_bars(spec, table).groupby("con_id")))
        for month in fake.futures.add(spec, table):
            fake.add(month.fake_contract(), bars.get(month.con_id))
        tables.append(table.assign(instrument=symbol))
    return fake, pd.concat(tables, ignore_index=True)


def _pipeline_config(raw: dict[str, Any], months: pd.DataFrame, port: int, out: Path,
                     compressed: Compressed | None) -> dict[str, Any]:
    """The configuration the rehearsal runs: source and broker at the gateway, the lake under ``out``,
    the listing's exact expiries and close-outs (the file's own win; on a compressed calendar the
    listing's), the compressed calendar's roll offset and thresholds."""
    cfg = dict(raw)
    cfg["lake_root"] = str(out / "lake")
    cfg.pop("state_root", None)
    cfg["source"] = {"kind": "ib", "ib": {"port": port, "client_id": SOURCE_CLIENT_ID, "timeout": 15.0}}
    broker = dict(cfg.get("broker") or {})
    broker.update(mode="ib", execution="paper", paper_ports=[port],
                  ib={"port": port, "client_id": BROKER_CLIENT_ID, "timeout": 15.0})
    broker.setdefault("fill_wait", 1.0)
    cfg["broker"] = broker
    instruments = []
    for inst in cfg.get("instruments") or []:
        mine = months[months["instrument"] == inst.get("symbol")]
        if inst.get("rolls") and len(mine):
            rolls = dict(inst["rolls"])
            own = {} if compressed is not None else rolls
            rolls["expiries"] = {**dict(zip(mine["contract"], mine["last_trade"].dt.date, strict=True)),
                                 **(own.get("expiries") or {})}
            rolls["close_outs"] = {**dict(zip(mine["contract"], mine["close_out"].dt.date, strict=True)),
                                   **(own.get("close_outs") or {})}
            if compressed is not None:
                rolls.update(compressed.model_dump(exclude={"every", "close_out_lead"}))
            inst = {**inst, "rolls": rolls}
        instruments.append(inst)
    cfg["instruments"] = instruments
    return cfg


def _inject_break(fake: FakeTWS, brk: PositionBreak) -> str:
    """Add ``brk.quantity`` at the broker to the instrument's held month (front month when flat)."""
    held = {c: q for c, q in fake.positions_by_contract().items()
            if (m := fake.futures.get(c)) is not None and m.spec.symbol == brk.instrument}
    con_id = max(held, key=lambda c: abs(held[c])) if held else fake.futures.front(brk.instrument, fake.session).con_id
    month = fake.futures.get(con_id)
    c = month.fake_contract()
    fields = [str(c.con_id), c.symbol, "FUT", c.last_trade, "0", "", c.multiplier, c.exchange, "", c.currency,
              c.local_symbol, c.trading_class]
    with fake.book.lock:
        contract = fake.book.positions[con_id].contract if con_id in fake.book.positions else fields
        fake.book.move_position(con_id, contract, brk.quantity, 0.0)
    return f"position break: {brk.quantity:+g} {month.local_symbol} added at the broker, unknown to the ledger"


def _session_record(fake: FakeTWS, day: pd.Timestamp, result, seen: set[int], events: list[str]) -> dict[str, Any]:
    """What one session left: the run's outcome, the orders the gateway got, the positions per contract."""
    orders = []
    for o in fake.orders():  # tens of orders over a rehearsal
        if o.perm_id in seen:
            continue
        seen.add(o.perm_id)
        month = fake.futures.get(o.con_id)
        legs = [{"contract": (m.contract if (m := fake.futures.get(leg.con_id)) else str(leg.con_id)),
                 "action": leg.action, "ratio": leg.ratio} for leg in o.legs]
        orders.append({"order_ref": o.order_ref, "perm_id": o.perm_id, "sec_type": o.contract[2],
                       "instrument": o.contract[1], "contract": month.contract if month else None,
                       "action": o.action, "quantity": o.quantity, "order_type": o.order_type,
                       "filled": o.filled, "status": o.status, "legs": legs})
    positions = []
    for con_id, quantity in sorted(fake.positions_by_contract().items()):
        month = fake.futures.get(con_id)
        if month is not None:
            positions.append({"instrument": month.spec.symbol, "contract": month.contract, "position": quantity})
    record: dict[str, Any] = {"session": str(day.date()), "ran": result is not None, "events": events,
                              "orders": orders, "positions": positions}
    if result is not None:
        checks = [e for e in result.get_asset_check_evaluations() if not e.passed]
        record.update(run_id=result.run_id, success=result.success,
                      failed_steps=sorted({e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"}),
                      failed_checks=sorted({f"{e.asset_key.to_user_string()}:{e.check_name}" for e in checks}),
                      orders_materialized=any(e.asset_key.to_user_string() == "orders"
                                              for e in result.get_asset_materialization_events()))
    return record


def _skipped(plan: Rehearsal, days: pd.DatetimeIndex) -> set[pd.Timestamp]:
    """The sessions of ``days`` whose daily run the plan skips."""
    out: set = set()
    for item in plan.skip_sessions:
        start, n = parse_skip(item)
        out |= set(days[days >= start.isoformat()][:n])
    return out


def run_rehearsal(config: str, out: Path, overrides: dict[str, Any] | None = None, log=print) -> dict[str, Any]:
    """Play the rehearsal of ``config`` into ``out``; returns (and writes to ``out/rehearsal.json``) its report.

    Raises
    ------
    ConfigError
        The file is missing or invalid, has no ``rehearsal:`` start, or lists futures the gateway
        does not know.
    common.CliError
        The fake gateway cannot start.
    """
    import dagster as dg
    import pandas as pd
    import yaml

    from pipeline.adapters.ib.pacing import PacingBudget
    from pipeline.adapters.sources.ib import gateway_pacing
    from pipeline.calendar import sessions
    from pipeline.config import ConfigError, load_config
    from pipeline.definitions import execute_daily, instance_yaml

    raw, section = _read(config)
    try:
        plan = Rehearsal.model_validate({**section, **{k: v for k, v in (overrides or {}).items() if v is not None}})
    except Exception as exc:
        raise ConfigError(f"config file {config}: rehearsal section invalid: {common.one_line(exc)}") from exc
    specs = _specs(raw, config)
    calendar = next(iter(specs.values())).calendar
    days = sessions(plan.start, pd.Timestamp(plan.start) + pd.Timedelta(days=7 * plan.sessions + 14), calendar)[:plan.sessions]
    history_start = str(raw.get("history_start") or (pd.Timestamp(plan.start) - pd.DateOffset(years=1)).date())
    fake, months = _gateway(specs, plan, history_start, days[-1])
    out.mkdir(parents=True, exist_ok=True)
    try:
        port = fake.start()
    except RuntimeError as exc:
        raise common.CliError(f"error: the fake gateway cannot start: {common.one_line(exc)}") from exc
    try:
        path = out / "config.yaml"
        path.write_text(yaml.safe_dump(_pipeline_config(raw, months, port, out, plan.compressed), sort_keys=False))
        cfg = load_config(path)
        home = out / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text(instance_yaml(home))
        skipped = _skipped(plan, days)
        records, seen = [], set()
        from pipeline.adapters.ib.fake_gateway import SessionTime

        # IB's rules on the rehearsal's clock (a day per session); the 60-a-window cap is lifted: the fake
        # enforces no pacing, and a first session asks for every month of the history at once
        budget = PacingBudget(clock=SessionTime(fake.sessions), global_max=REHEARSAL_GLOBAL_MAX)
        with dg.DagsterInstance.from_config(str(home)) as instance, gateway_pacing("127.0.0.1", port, budget):
            for i, day in enumerate(days):  # one daily run per session: the loop is the rehearsal
                if day > fake.session:
                    fake.advance(to=day)
                events, result = [], None
                if plan.position_break is not None and pd.Timestamp(plan.position_break.session) == day:
                    events.append(_inject_break(fake, plan.position_break))
                if day in skipped:
                    events.append("no daily run (skipped)")
                else:
                    result = execute_daily(str(day.date()), submit=True, config_path=str(path), instance=instance,
                                           config=cfg, tags={"trading/trigger": "rehearsal"})
                records.append(_session_record(fake, day, result, seen, events))
                log(f"  {day.date()} ({i + 1}/{len(days)}): " + ("skipped" if result is None else
                    "ok" if result.success else "FAILED") + f", {len(records[-1]['orders'])} order(s)")
            fake.advance()  # the day after the last session: what expires then settles
        settlements = fake.settlements()
    finally:
        fake.stop()
    report = rehearsal_report(cfg, records, months, settlements, fake)
    (out / "rehearsal.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def rehearsal_report(cfg: PipelineConfig, records: list[dict[str, Any]], months: pd.DataFrame, settlements: list,
                     fake: FakeTWS) -> dict[str, Any]:
    """The rehearsal's report (``rehearsal.json``) from its session records and the lake and ledger."""
    import pandas as pd

    from pipeline.futures import rehearsal
    from pipeline.store.lake import Lake
    from pipeline.store.ledger import Ledger

    positions = pd.DataFrame([{"session": pd.Timestamp(r["session"]), **p} for r in records for p in r["positions"]],
                             columns=["session", "instrument", "contract", "position"])
    ledger = Ledger.at_lake(cfg.lake_path)
    states = ledger.roll_state_history()
    by_con = months.set_index("con_id")
    settled = pd.DataFrame([{"instrument": by_con.loc[s.con_id, "instrument"], "contract": by_con.loc[s.con_id, "contract"],
                             "session": by_con.loc[s.con_id, "last_trade"], "position": s.quantity}
                            for s in settlements if s.con_id in by_con.index],
                           columns=["instrument", "contract", "session", "position"])
    # no multiple prices (no futures run succeeded): every position is an orphan
    multiple = Lake(cfg.lake_path).read("multiple_prices", columns=["session", "instrument", "PRICE_CONTRACT",
                                                                    "FORWARD_CONTRACT"])
    contracts = pd.DataFrame({
        "session": pd.to_datetime(multiple["session"]), "instrument": multiple["instrument"].astype(str),
        "priced_contract": (multiple["PRICE_CONTRACT"].astype("Int64") // 100).astype(str),
        "forward_contract": (multiple["FORWARD_CONTRACT"].astype("Int64") // 100).astype("string").fillna("").astype(str),
    })  # fmt: skip
    orders = pd.DataFrame([o for r in records for o in r["orders"]], columns=["order_ref", "filled"])
    intents = ledger.intents()
    rolls = rehearsal.rehearsal_rolls(positions, states, settled)
    orphans = rehearsal.rehearsal_orphans(positions, contracts)
    breaches = rehearsal.expiry_breaches(positions, months, settled)
    duplicates = rehearsal.duplicate_orders(orders, intents[["order_ref", "quantity"]])
    runs = [r for r in records if r["ran"]]
    counts = {"sessions": len(records), "runs": len(runs), "failed_runs": sum(not r["success"] for r in runs),
              "orders": len(orders), "rolls": len(rolls), "orphans": len(orphans),
              "duplicate_orders": len(duplicates), "expiry_breaches": len(breaches)}

    def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
        return json.loads(frame.to_json(orient="records", date_format="iso", date_unit="s"))

    return {
        "sessions": records,
        "rolls": rows(rolls),
        "orphans": rows(orphans),
        "duplicate_orders": rows(duplicates),
        "expiry_breaches": rows(breaches),
        "positions": rows(positions),
        "roll_states": rows(states),
        "position_breaks": rows(ledger.position_breaks()),
        "months": rows(months[["instrument", "contract", "con_id", "local_symbol", "last_trade", "close_out"]]),
        "counts": counts,
        "rolls_per_instrument": rolls.groupby("instrument").size().reindex(
            sorted(months["instrument"].unique()), fill_value=0).astype(int).to_dict(),
    }


def summary_line(report: dict[str, Any], elapsed: float) -> str:
    """One line: sessions, runs, orders, rolls per instrument and the three faults counted."""
    c = report["counts"]
    per = ", ".join(f"{k} {v}" for k, v in report["rolls_per_instrument"].items())
    return (f"Rehearsal: {c['sessions']} sessions ({c['runs']} runs, {c['failed_runs']} failed) in {elapsed:.0f} s, "
            f"{c['orders']} orders, {c['rolls']} rolls ({per}), {c['orphans']} orphans, "
            f"{c['duplicate_orders']} duplicate orders, {c['expiry_breaches']} expiry breaches")


@commands.command(
    "rehearse", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline rehearse --config examples/futures_roll_rehearsal.yaml --out rehearsal")
def rehearse(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="folder of rehearsal.json, the lake and the "
                                      "Dagster instance of the rehearsal")],
    sessions: Annotated[int | None, typer.Option("--sessions", min=1, show_default=False,
                                                 help="sessions played (default: rehearsal.sessions)")] = None,
    start: Annotated[str | None, date_option("--start", "first session (default: rehearsal.start)")] = None,
    compressed: Annotated[int | None, typer.Option(
        "--compressed", metavar="N", min=2, show_default=False,
        help="compressed calendar: each next month expires N sessions after the one before")] = None,
    spread_never_fills: Annotated[bool, typer.Option(
        "--spread-never-fills", help="calendar spreads rest unfilled at the gateway (Force -> Force_Outright)")] = False,
    skip_sessions: Annotated[list[str] | None, typer.Option(
        "--skip-sessions", metavar="START:N", show_default=False,
        help="no daily run on N sessions from START (repeatable)")] = None,
    position_break_at: Annotated[str | None, typer.Option(
        "--position-break-at", metavar="DATE:SYMBOL", show_default=False,
        help="add one contract of SYMBOL at the broker before DATE's run (a position break)")] = None,
    config: Annotated[str, typer.Option("--config", metavar="PATH", help="pipeline configuration with a "
                                        "rehearsal: section")] = "examples/futures_roll_rehearsal.yaml",
) -> int:
    """Rehearse the daily job session by session against a fake IB gateway, through rolls and expiries.

    One process and one Dagster instance: a fake gateway on a free port of 127.0.0.1 lists the
    futures' dated months with generated bars and fills orders at each session's price; the daily
    job runs once per session (orders submitted to the gateway in paper execution), then the
    gateway's clock moves on. Writes DIR/rehearsal.json (sessions, rolls, orphans, duplicate orders,
    expiry breaches, positions per contract per session) and prints one line. Exits 1 when the
    rehearsal found an orphan, a duplicate order or an expiry breach.
    """
    overrides: dict[str, Any] = {"sessions": sessions, "start": start,
                                 "spread_never_fills": True if spread_never_fills else None,
                                 "skip_sessions": skip_sessions or None}
    if compressed is not None:
        overrides["compressed"] = {"every": compressed}
    if position_break_at is not None:
        day, _, symbol = position_break_at.partition(":")
        if not symbol:
            raise common.CliError(f"error: --position-break-at {position_break_at!r} is not DATE:SYMBOL "
                                  "(e.g. 2023-03-10:MCL)", 2)
        overrides["position_break"] = {"session": day, "instrument": symbol}
    started = time.perf_counter()
    print(f"Rehearsal of {config} into {out}")
    report = run_rehearsal(config, out, overrides)
    print(summary_line(report, time.perf_counter() - started))
    c = report["counts"]
    faults = c["orphans"] + c["duplicate_orders"] + c["expiry_breaches"]
    if faults:
        print(f"see {out / 'rehearsal.json'}", file=sys.stderr)
    return 1 if faults else 0
