"""Futures assets: multiple prices, the roll calendar, Panama-adjusted prices and the expiry guard.

Registered only when the configuration holds instruments with roll parameters
(``instruments[].rolls``; :func:`rolled_futures`), so a stock-only graph is unchanged.

* ``multiple_prices`` (daily partitions, single-run backfills): per futures instrument the
  pysystemtrade multiple prices (``PRICE``, ``CARRY``, ``FORWARD`` and their contracts) up to the
  run's session, seeded from the ``pysystemtrade`` source's folder; the partitioned truth.
* ``roll_calendar`` (one whole table): the planned rolls from the roll parameters and the actual
  rolls of the multiple prices, each beside its planned roll. Unpartitioned: a roll row is keyed
  by its roll date, not by a session, and the planned part depends on the configuration, so the
  table is rebuilt whole (a few hundred rows an instrument).
* ``adjusted_prices`` (one whole table): the Panama stitch of the whole multiple prices, rebuilt
  each run, as a roll shifts every earlier adjusted price (milliseconds an instrument).
* ``futures_positions`` (daily partitions): the ledger's positions per dated contract, the **roll
  policy** of the session (each state change recorded in the ledger's roll-state history, and
  the routes ``orders`` trades by: table ``futures_order_routes``), the **expiry guard**
  (blocking: ERROR stops ``orders`` when a held contract is within ``rolls.expiry_guard_sessions``
  sessions of its close-out; WARN in a backfill) and the **orphan report** (WARN: a position in
  neither the priced nor the forward contract).

The domain code is in :mod:`pipeline.futures` (``tables``, ``adjusted``, ``expiry``).
"""

import time

import dagster as dg
import pandas as pd

from assets.markdown import frame_md
from assets.partitions import (
    DailyPartitions,
    is_backfill,
    no_session_result,
    run_sessions,
)
from assets.resources import BarSourceResource, Settings
from pipeline.adapters.sources import PysystemtradeSource
from pipeline.bars import SourceError
from pipeline.calendar import exchange_calendar, non_session_weekdays
from pipeline.config import Instrument, PipelineConfig
from pipeline.futures import (
    FuturesDataError,
    expiry_guard,
    instrument_close_outs,
    orphan_positions,
    panama_stitch,
    roll_gaps,
    roll_parameters_of,
)
from pipeline.futures.expiry import BREACH_COLUMNS
from pipeline.futures.from_contracts import multiple_prices_from_contracts
from pipeline.futures.roll_calendar import business_days_between
from pipeline.futures.roll_orders import session_roll_states
from pipeline.futures.tables import (
    contract_positions_table,
    contracts_on,
    instrument_multiple_prices,
    multiple_prices_table,
    roll_calendar_table,
)

MULTIPLE_PRICES = "multiple_prices"
ROLL_CALENDAR = "roll_calendar"
ADJUSTED_PRICES = "adjusted_prices"
FUTURES_POSITIONS = "futures_positions"
#: Lake table written by ``futures_positions``: the session's roll state and order routes per instrument.
FUTURES_ORDER_ROUTES = "futures_order_routes"

CHECK_EXPIRY_GUARD = "expiry_guard"
CHECK_ORPHANS = "no_orphan_positions"
CHECK_GAPS = "roll_gaps_measured"

FUTURES_POSITIONS_CHECKS = [
    dg.AssetCheckSpec(CHECK_EXPIRY_GUARD, asset=FUTURES_POSITIONS, blocking=True,
                      description="ERROR (blocks orders) when a held contract is within rolls.expiry_guard_sessions "
                                  "sessions of its close-out date, or its close-out is unknown; WARN in a backfill."),
    dg.AssetCheckSpec(CHECK_ORPHANS, asset=FUTURES_POSITIONS, blocking=False,
                      description="WARN for a position in a contract that is neither the priced nor the forward one."),
]


def rolled_futures(cfg: PipelineConfig) -> list[Instrument]:
    """The instruments of ``cfg`` with roll parameters (``instruments[].rolls``): the futures these assets serve."""
    return [i for i in cfg.instruments if i.rolls is not None]


def _holidays(start: pd.Timestamp, code: str) -> list:
    """Non-session weekdays of calendar ``code`` from ``start`` (not before the calendar's first session)."""
    return non_session_weekdays(max(pd.Timestamp(start), exchange_calendar(code).first_session), code)


def multiple_prices(context: dg.AssetExecutionContext, settings: Settings,
                    bar_source: BarSourceResource) -> dg.MaterializeResult:
    """pysystemtrade multiple prices of every futures instrument up to the run's session.

    One row per (session, instrument): ``PRICE``, ``CARRY``, ``FORWARD`` (price points) and
    ``PRICE_CONTRACT``, ``CARRY_CONTRACT``, ``FORWARD_CONTRACT`` (``YYYYMMDD``), read from the
    ``pysystemtrade`` source's folder (its seeded history, on the business-day grid) and checked
    (``pipeline.futures.multiple_prices``). Writes the run's sessions and any earlier session the
    table lacks. Fails without retry when the source is not a pysystemtrade folder or its multiple
    prices are missing or bad (the message names the file or instrument and row).
    """
    cfg, lake = settings.config(), settings.lake()
    run = run_sessions(context, cfg.calendar)
    if run.empty:
        return no_session_result(context, cfg.calendar)
    symbols = [i.symbol for i in rolled_futures(cfg)]
    source = bar_source.source()
    if not isinstance(source, PysystemtradeSource) and not hasattr(source, "contract_prices"):
        raise dg.Failure(f"multiple_prices: futures {symbols} need their multiple prices from a pysystemtrade data "
                         f"folder (source.kind: pysystemtrade) or contract prices (source.kind: ib), not source.kind "
                         f"{cfg.source.kind!r}", allow_retries=False)
    try:
        if isinstance(source, PysystemtradeSource):
            table = multiple_prices_table(source.multiple_prices(symbols), end=run[-1])
        else:  # contract prices path (rehearsal addition): built from each dated contract's bars
            table = _from_contract_prices(source, rolled_futures(cfg), cfg.history_start, run[-1])
        for symbol in symbols:  # a handful of instruments: each checked, errors name it
            instrument_multiple_prices(table, symbol)
    except (SourceError, FuturesDataError) as exc:
        raise dg.Failure(f"multiple_prices: {exc}", allow_retries=False) from exc
    owned = lake.sessions_to_write(MULTIPLE_PRICES, pd.DatetimeIndex(table["session"].unique()), run)
    rows = lake.write_sessions(MULTIPLE_PRICES, table, owned)
    latest = table.groupby("instrument").tail(1).set_index("instrument")[["session", "PRICE", "PRICE_CONTRACT",
                                                                           "FORWARD_CONTRACT"]]
    return dg.MaterializeResult(metadata={
        "rows_written": rows,
        "sessions_written": len(owned),
        "latest": dg.MetadataValue.md(frame_md(latest.reset_index())),
        "path": dg.MetadataValue.path(str(lake.path(MULTIPLE_PRICES))),
    })


def _from_contract_prices(source, futures: list[Instrument], start: object, end: pd.Timestamp) -> pd.DataFrame:
    """Multiple prices of ``futures`` from the source's contract prices (``IBSource.contract_prices``), on the
    planned roll calendar with the source's last trading days (the configuration's ``rolls.expiries`` win)."""
    prices = source.contract_prices([i.symbol for i in futures], pd.Timestamp(start), end)
    listed = {s: dict(zip(p["contract"], p["last_trade"], strict=True))
              for s, p in prices.drop_duplicates(["instrument", "contract"]).groupby("instrument")}
    return multiple_prices_from_contracts(
        prices, {i.symbol: roll_parameters_of(i) for i in futures},
        expiries={i.symbol: {**listed.get(i.symbol, {}), **i.rolls.expiries} for i in futures},
        holidays={i.symbol: _holidays(pd.Timestamp(start) - pd.Timedelta(days=800), i.calendar) for i in futures},
        end=end)


@dg.asset(deps=[MULTIPLE_PRICES], group_name="futures", kinds={"python", "parquet"}, code_version="1")
def roll_calendar(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """Planned and actual rolls of every futures instrument (whole table, rebuilt each run).

    Planned: from ``instruments[].rolls`` (pysystemtrade ``rollconfig.csv`` fields, exact
    ``expiries`` where given) over the stored multiple prices' history and a year ahead of its
    latest session; actual: where ``PRICE_CONTRACT`` changes, each with its planned roll into the
    same contract and the difference in business days (``pipeline.futures.tables.roll_calendar_table``).
    """
    cfg, lake = settings.config(), settings.lake()
    table = lake.read(MULTIPLE_PRICES)
    frames, summary = [], []
    for inst in rolled_futures(cfg):  # a handful of instruments
        try:
            multiple = instrument_multiple_prices(table, inst.symbol)
            end = multiple.index[-1]
            calendar = roll_calendar_table(inst.symbol, roll_parameters_of(inst), multiple, end,
                                           expiries=inst.rolls.expiries, holidays=_holidays(multiple.index[0], inst.calendar))
        except FuturesDataError as exc:
            raise dg.Failure(f"roll_calendar: {exc}", allow_retries=False) from exc
        frames.append(calendar)
        actual = calendar[calendar["kind"] == "actual"]
        upcoming = calendar[(calendar["kind"] == "planned") & (calendar["roll_date"] > end)]
        summary.append({"instrument": inst.symbol, "actual_rolls": len(actual),
                         "same_contracts": float(actual["same_contracts"].mean()) if len(actual) else float("nan"),
                         "median_abs_days": float(actual["difference_days"].abs().median()),
                         "next_planned_roll": str(upcoming["roll_date"].iloc[0].date()) if len(upcoming) else ""})
    out = pd.concat(frames, ignore_index=True)
    lake.write_table(ROLL_CALENDAR, out)
    return dg.MaterializeResult(metadata={
        "rows": len(out),
        "summary": dg.MetadataValue.md(frame_md(pd.DataFrame(summary))),
        "path": dg.MetadataValue.path(str(lake.path(ROLL_CALENDAR))),
    })


@dg.asset(deps=[MULTIPLE_PRICES], group_name="futures", kinds={"python", "parquet"}, code_version="1",
          check_specs=[dg.AssetCheckSpec(CHECK_GAPS, asset=ADJUSTED_PRICES, blocking=False,
                                         description="WARN for a roll whose gap could not be measured on any row of "
                                                     "the old contract: stitched flat across it.")])
def adjusted_prices(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """Panama-adjusted (back-adjusted) prices of every futures instrument, rebuilt whole each run.

    ``price`` = ``PRICE`` plus the roll gaps (``FORWARD - PRICE`` on the roll's eve) of every later
    roll (``pipeline.futures.adjusted.panama_stitch``; pysystemtrade ``_panama_stitch``), so the
    last level equals the last ``PRICE`` and each daily change is the priced contract's. A roll
    whose gap no row of the old contract measures is stitched flat and reported (WARN check).
    Columns: ``instrument``, ``session``, ``price`` (price points), ``price_contract`` (``YYYYMMDD``).
    """
    cfg, lake = settings.config(), settings.lake()
    table = lake.read(MULTIPLE_PRICES)
    frames, timing, flat = [], [], []
    for inst in rolled_futures(cfg):  # a handful of instruments
        source = f"multiple_prices ({inst.symbol})"
        try:
            multiple = instrument_multiple_prices(table, inst.symbol)
            started = time.perf_counter()
            price = panama_stitch(multiple, missing_gap="flat", source=source)
            elapsed_ms = (time.perf_counter() - started) * 1000
            gaps = roll_gaps(multiple, missing_gap="flat", source=source)
        except FuturesDataError as exc:
            raise dg.Failure(f"adjusted_prices: {exc}", allow_retries=False) from exc
        frames.append(pd.DataFrame({"instrument": inst.symbol, "session": price.index, "price": price.to_numpy(),
                                    "price_contract": multiple["PRICE_CONTRACT"].to_numpy()}).dropna(subset=["price"]))
        timing.append({"instrument": inst.symbol, "rows": len(multiple), "rolls": len(gaps),
                       "stitch_ms": round(elapsed_ms, 2)})
        flat.append(gaps[gaps["method"] == "flat"].reset_index().assign(instrument=inst.symbol))
    out = pd.concat(frames, ignore_index=True)
    out["session"] = pd.DatetimeIndex(out["session"]).as_unit("ns")
    lake.write_table(ADJUSTED_PRICES, out)
    flat_rolls = pd.concat(flat, ignore_index=True)
    context.log.info("adjusted_prices: Panama stitch per instrument: "
                     + ", ".join(f"{t['instrument']} {t['stitch_ms']} ms ({t['rows']} rows)" for t in timing))
    return dg.MaterializeResult(
        metadata={"rows": len(out), "stitch": dg.MetadataValue.md(frame_md(pd.DataFrame(timing))),
                  "path": dg.MetadataValue.path(str(lake.path(ADJUSTED_PRICES)))},
        check_results=[dg.AssetCheckResult(
            check_name=CHECK_GAPS, passed=flat_rolls.empty, severity=dg.AssetCheckSeverity.WARN,
            description=(f"{len(flat_rolls)} roll(s) without a measurable gap, stitched flat" if len(flat_rolls)
                         else "every roll gap measured on a row of the old contract"),
            metadata={"flat_rolls": dg.MetadataValue.md(frame_md(flat_rolls))})],
    )


def _close_outs(held: pd.DataFrame, futures: dict[str, Instrument], holidays: list) -> pd.DataFrame:
    """Close-out date of each held (instrument, contract) of one exchange calendar; NaT without
    ``settlement`` (the guard then fails safe)."""
    rows = []
    for row in held.itertuples(index=False):  # one row per held instrument (a handful)
        inst = futures[row.instrument]
        close = (instrument_close_outs(inst, [row.contract], holidays).iloc[0]
                 if inst.settlement is not None else pd.NaT)
        rows.append({"instrument": row.instrument, "contract": row.contract, "close_out": close})
    return pd.DataFrame(rows, columns=["instrument", "contract", "close_out"])


def _state_priced(multiple: pd.DataFrame, current: pd.DataFrame) -> pd.Series:
    """Index instrument: the multiple prices' priced contract (``YYYYMM``) on the session each current roll
    state was set for (the contract its roll is out of); instruments whose state has no session are absent."""
    dated = current.dropna(subset=["session"]) if len(current) else current
    picked = {row.instrument: contracts_on(multiple, row.session)["priced_contract"].get(row.instrument)
              for row in dated.itertuples(index=False)}  # one row per futures instrument (a handful)
    return pd.Series(picked, dtype=object).dropna()


def futures_positions(context: dg.AssetExecutionContext, settings: Settings):
    """Positions of the futures instruments in their dated contracts on the run's (last) session,
    and the session's roll states.

    The ledger's expected positions per (instrument, contract) at ``broker.mode`` (fills name their
    contract month; a fill without one, from before orders went to dated contracts, is a position
    whose contract is unknown: the guard blocks it until adopted per month). The roll policy
    (``pipeline.futures.roll_orders.session_roll_states``: planned roll date from the roll
    calendar, close-out from ``pipeline.futures.expiry``, current state from the ledger, sessions a
    Force spread has worked) decides each instrument's state; each change is recorded in the
    ledger's roll-state history (``policy: ...``, set by ``roll_policy``), a hand-set Close /
    No_Open is kept, and the routes ``orders`` trades by are written to ``futures_order_routes``.
    Checks: the expiry guard (blocking ERROR, WARN in a backfill) and the orphan report (WARN), on
    the per-contract positions. Writes the session's rows (``instrument, contract,
    forward_contract, position, close_out, sessions_left``); a backfill writes none and applies no
    policy (today's positions and states are not the past's).
    """
    cfg, lake = settings.config(), settings.lake()
    run = run_sessions(context, cfg.calendar)
    if run.empty:
        yield no_session_result(context, cfg.calendar, check_results=[
            dg.AssetCheckResult(check_name=name, passed=True, description="no exchange session in this run")
            for name in (CHECK_EXPIRY_GUARD, CHECK_ORPHANS)])
        return
    session, backfill = run[-1], is_backfill(context)
    futures = {i.symbol: i for i in rolled_futures(cfg)}
    holidays = {code: _holidays(session - pd.Timedelta(days=800), code) for code in {i.calendar for i in futures.values()}}
    multiple = lake.read(MULTIPLE_PRICES, end=session)
    contracts = contracts_on(multiple, session)
    ledger = settings.ledger()
    positions = contract_positions_table(ledger.expected_contract_positions(cfg.broker.mode), list(futures))
    known = positions[positions["contract"].notna()]
    unknown = positions[positions["contract"].isna()]  # a fill without a contract month: where it is held is unknown
    limits = {s: i.rolls.expiry_guard_sessions for s, i in futures.items()}
    parts, breaches = [], []
    try:
        for code, part in known.groupby(known["instrument"].map({s: i.calendar for s, i in futures.items()})):
            part = part.merge(_close_outs(part, futures, holidays[code]), on=["instrument", "contract"], how="left")
            part["sessions_left"] = business_days_between([session] * len(part), part["close_out"], holidays[code])
            breaches.append(expiry_guard(part, part, session, sessions=limits, holidays=holidays[code]))
            parts.append(part)
        orphans = orphan_positions(known, contracts)
        current = ledger.current_roll_states()
        states = (pd.DataFrame() if backfill else
                  session_roll_states(list(futures.values()), contracts, known, current, session, holidays,
                                      state_priced=_state_priced(multiple, current),
                                      prices_roll_on_plan=cfg.source.kind == "ib"))
    except FuturesDataError as exc:
        raise dg.Failure(f"futures_positions: {exc}", allow_retries=False) from exc
    breach = pd.concat([*breaches, pd.DataFrame(columns=list(BREACH_COLUMNS))], ignore_index=True)
    if len(unknown):
        breach = pd.concat([breach, unknown.assign(reason="a position without a contract month (a fill from before "
                                                          "orders went to dated contracts): held contract unknown; "
                                                          "adopt the broker's position per month")], ignore_index=True)
    columns = ["session", "instrument", "contract", "forward_contract", "position", "close_out", "sessions_left"]
    table = (pd.concat(parts, ignore_index=True) if parts else
             pd.DataFrame(columns=["instrument", "contract", "position", "close_out", "sessions_left"]))
    table = table.assign(session=session, forward_contract=table["instrument"].map(contracts["forward_contract"]))[columns]
    rows = 0 if backfill else lake.write_sessions(FUTURES_POSITIONS, table, [session])
    changed = states[states["changed"]] if len(states) else states
    if len(changed):
        ledger.set_roll_states(pd.DataFrame({"instrument": changed.index, "state": changed["state"].to_numpy(),
                                             "reason": ("policy: " + changed["reason"].astype(str)).to_numpy()}),
                               set_by="roll_policy", session=session)
    if len(states):
        routes = states.reset_index()[["instrument", *ROUTE_TABLE_COLUMNS]].assign(session=session)
        lake.write_sessions(FUTURES_ORDER_ROUTES, routes, [session])
    severity = dg.AssetCheckSeverity.WARN if backfill else dg.AssetCheckSeverity.ERROR
    named = ", ".join(f"{r.instrument} {r.contract if isinstance(r.contract, str) else '(contract unknown)'}"
                      for r in breach.itertuples(index=False))
    shown = states[["previous_state", "state", "reason"]].reset_index() if len(states) else pd.DataFrame()
    yield dg.MaterializeResult(metadata={
        "session": str(session.date()),
        "rows_written": rows,
        "positions": dg.MetadataValue.md(frame_md(table)),
        "roll_states": dg.MetadataValue.md(frame_md(shown)),
        "roll_state_changes": len(changed),
    })
    yield dg.AssetCheckResult(
        check_name=CHECK_EXPIRY_GUARD, passed=breach.empty, severity=severity,
        description=(f"{len(breach)} contract(s) held within the guard's sessions of the close-out on "
                     f"{session.date()} ({named}): " + ("a backfill only reports it" if backfill else
                                                         "orders are blocked until the position is rolled or closed")
                     if len(breach) else f"no held contract near its close-out on {session.date()}"),
        metadata={"breaches": dg.MetadataValue.md(frame_md(breach))},
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_ORPHANS, passed=orphans.empty, severity=dg.AssetCheckSeverity.WARN,
        description=(f"{len(orphans)} position(s) in neither the priced nor the forward contract" if len(orphans)
                     else "every position is in its priced or forward contract"),
        metadata={"orphans": dg.MetadataValue.md(frame_md(orphans))},
    )


#: Columns of ``futures_order_routes`` besides ``instrument`` and ``session``.
ROUTE_TABLE_COLUMNS = (
    "state", "previous_state", "changed", "reason", "priced_contract", "forward_contract", "priced_position",
    "forward_position", "roll_date", "close_out", "sessions_to_roll", "sessions_to_close_out",
    "order_priced_contract", "order_forward_contract", "order_priced_price", "order_forward_price",
)


def futures_routes(lake, cfg: PipelineConfig, session: pd.Timestamp) -> pd.DataFrame | None:
    """The order routes of ``session`` (``futures_order_routes``, written by ``futures_positions``) as
    ``execute_orders`` takes them (index instrument, ``pipeline.futures.roll_orders.ROUTE_COLUMNS``);
    None when the configuration has no futures with roll parameters.

    Raises dg.Failure (no retry) when a futures instrument has no route for the session: its
    contract month is unknown, and an order is never sent to a guessed month (fail closed).
    """
    symbols = [i.symbol for i in rolled_futures(cfg)]
    if not symbols:
        return None
    rows = lake.read(FUTURES_ORDER_ROUTES, start=session, end=session)
    rows = rows if "instrument" in rows.columns else pd.DataFrame(columns=["instrument"])
    missing = sorted(set(symbols) - set(rows["instrument"]))
    if missing:
        raise dg.Failure(f"orders: no roll state or contract months for {missing} on {session.date()} "
                         "(materialize futures_positions for the session; an order never goes to a guessed month)",
                         allow_retries=False)
    out = rows.set_index("instrument")[["state", "order_priced_contract", "order_forward_contract",
                                         "order_priced_price", "order_forward_price"]]
    return out.rename(columns=lambda c: c.removeprefix("order_"))


def build(daily: DailyPartitions, cfg: PipelineConfig) -> list[dg.AssetsDefinition]:
    """The futures assets (none when ``cfg`` has no instrument with ``rolls``)."""
    if not rolled_futures(cfg):
        return []
    return [
        daily.asset(multiple_prices, group_name="futures"),
        roll_calendar,
        adjusted_prices,
        daily.asset(futures_positions, group_name="futures", deps=[MULTIPLE_PRICES],
                    check_specs=FUTURES_POSITIONS_CHECKS, kinds=("python", "parquet", "duckdb")),
    ]
