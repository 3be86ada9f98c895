"""The cockpit's first screen (``trading-pipeline status``): what a trader needs to know, from the ledger and the lake.

The sections follow pysystemtrade's daily reports (``sysproduction/reporting/report_configs.py``:
status, reconcile, trades, P&L, risk and roll reports) in the order the first screen answers them:
trading state (kill switch, since when, why); positions against the targets and the open position
breaks; the session's orders with verdicts, fills and slippage; P&L of the day, month and year;
risk now against the target; recent alerts; roll states (futures). The last run of each Dagster
job is added by the command (this module imports no Dagster).

A section whose source cannot be read (a broken lake file, :class:`pipeline.store.warehouse.BrokenLakeFileError`)
is returned as unavailable with that one-line reason; the other sections still answer.

P&L is the held book's close-to-close mark-to-market (pysystemtrade ``systems/accounts/pandl_calculators``:
position at the previous close x price change x point size x FX): the held book is the ledger's
position at each session end (fills of the configured broker, paper or IB, by the fills' session,
plus adopted adjustments from the session of their adoption), so an order the gate denied is not
held and earns nothing. Commissions are not deducted (they are in the orders section).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from pipeline.adapters.pysystemtrade import CarverDataError, universe_fx
from pipeline.config import PipelineConfig
from pipeline.instruments import FXError, point_sizes
from pipeline.portfolio.capital import capital_series
from pipeline.store.lake import LakeError
from pipeline.store.ledger import Ledger
from pipeline.store.ledger.roll_states import DEFAULT_ROLL_STATE
from pipeline.store.warehouse import query

__all__ = ["ALERT_DAYS", "RISK_WINDOW", "Section", "Status", "annualised_risk", "daily_pnl", "gather_status",
           "held_positions", "pnl_periods"]

#: Alerts raised within this many days are shown (the ledger's alerts have no acknowledgement).
ALERT_DAYS = 3
#: Sessions of daily returns behind the covariance of the risk estimate (about one year).
RISK_WINDOW = 256
#: Calendar days of prices read before the session: the year to date plus the risk window.
_PRICE_DAYS = 400


@dataclass(frozen=True)
class Section:
    """One section of the first screen.

    Attributes
    ----------
    name : str
        Key in ``--json`` output (``trading_state``, ``positions``, ...).
    title : str
        Heading printed above the table.
    frame : pd.DataFrame or None
        The table; None when the section is unavailable.
    error : str or None
        One line saying why the section is unavailable (its source cannot be read).
    """

    name: str
    title: str
    frame: pd.DataFrame | None = None
    error: str | None = None


@dataclass(frozen=True)
class Status:
    """The first screen: its session, the book P&L is computed on and its sections in reading order."""

    session: pd.Timestamp
    broker: str
    base_currency: str
    book: str
    sections: list[Section] = field(default_factory=list)

    def section(self, name: str) -> Section:
        """The section called ``name``; KeyError if there is none."""
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)


def held_positions(fills: pd.DataFrame, adjustments: pd.DataFrame, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """The ledger's position of each instrument at the end of each session.

    Parameters
    ----------
    fills : pd.DataFrame
        Columns ``session`` (date of the order), ``instrument``, ``quantity`` (signed units): the
        ledger's fills at one broker (``Ledger.fills``).
    adjustments : pd.DataFrame
        Columns ``adjusted_at`` (UTC timestamp), ``instrument``, ``quantity``: adopted broker
        positions (``Ledger.position_adjustments``); each counts from the first session on or
        after its UTC date.
    sessions : pd.DatetimeIndex
        Sessions of the output, ascending.

    Returns
    -------
    pd.DataFrame
        Index ``sessions``, one column per instrument with a fill or adjustment: signed units held
        at that session's end (cumulated from the first fill, including fills before ``sessions``).
    """
    moves = pd.concat([
        pd.DataFrame({"session": pd.to_datetime(fills["session"]).dt.normalize(), "instrument": fills["instrument"],
                      "quantity": fills["quantity"].astype(float)}),
        pd.DataFrame({"session": pd.to_datetime(adjustments["adjusted_at"], utc=True).dt.tz_localize(None).dt.normalize(),
                      "instrument": adjustments["instrument"], "quantity": adjustments["quantity"].astype(float)}),
    ])
    if moves.empty or sessions.empty:
        return pd.DataFrame(index=sessions)
    stamps = pd.DatetimeIndex(moves["session"])
    at = sessions.searchsorted(stamps)  # the first session on or after the move's date
    opening = moves[stamps < sessions[0]].groupby("instrument")["quantity"].sum()
    inside = (stamps >= sessions[0]) & (at < len(sessions))
    moves = moves[inside].assign(session=sessions[at[inside]])
    wide = (moves.pivot_table(index="session", columns="instrument", values="quantity", aggfunc="sum")
            if len(moves) else pd.DataFrame(index=sessions))
    wide = wide.reindex(index=sessions, columns=wide.columns.union(opening.index)).fillna(0.0)
    return wide.cumsum() + opening.reindex(wide.columns).fillna(0.0)


def daily_pnl(held: pd.DataFrame, prices: pd.DataFrame, point_size: pd.Series, fx: pd.DataFrame | None) -> pd.DataFrame:
    """Close-to-close P&L of a held book, per session and instrument, in base currency.

    ``pnl[t, i] = held[t-1, i] x (price[t, i] - price[t-1, i]) x point_size[i] x fx[t, i]``
    (pysystemtrade ``systems/accounts/pandl_calculators/pandl_generic_costs.py``: positions lagged
    one period times price returns times value of a point, converted with the FX rate of the day;
    Carver, *Systematic Trading* ch. 12).

    Parameters
    ----------
    held : pd.DataFrame
        Index session, columns instrument: units held at each session end (missing: 0).
    prices : pd.DataFrame
        Index session (ascending), columns instrument: closes in price points.
    point_size : pd.Series
        Index instrument: instrument currency per price point per unit.
    fx : pd.DataFrame or None
        Index session, columns instrument: base currency per unit of the instrument's currency
        (:func:`pipeline.instruments.fx_to_base`); None when every instrument is in base currency.

    Returns
    -------
    pd.DataFrame
        Index ``prices.index``, columns ``prices.columns``; base currency. A session without a close
        (a quarantined bar) earns 0 and the next close takes the whole move since the last one
        (prices carried forward, as pysystemtrade does); 0 before the first close.
    """
    pos = held.reindex(index=prices.index, columns=prices.columns).ffill().fillna(0.0)
    value = prices.ffill().diff() * point_size.reindex(prices.columns).to_numpy()
    if fx is not None:
        value = value * fx.reindex(index=prices.index, columns=prices.columns).ffill()
    return (pos.shift(1) * value).fillna(0.0)


def pnl_periods(pnl: pd.DataFrame, capital: pd.Series, session: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """P&L of the day, the month to date and the year to date of ``session``.

    Parameters
    ----------
    pnl : pd.DataFrame
        :func:`daily_pnl` (index session, columns instrument, base currency).
    capital : pd.Series
        Index session: the capital each session was sized with (base currency).
    session : pd.Timestamp
        The last session counted.

    Returns
    -------
    (totals, by_instrument)
        ``totals``: index ``period`` (``day``, ``month``, ``year``); columns ``start``, ``end`` (first and last
        session counted, ISO dates), ``pnl`` (base currency), ``pct_capital`` (sum of each
        session's P&L / that session's capital, in %: pysystemtrade's percentage account curve).
        ``by_instrument``: index instrument, columns ``day``, ``month``, ``year`` (base currency).
    """
    upto = pnl[pnl.index <= session]
    starts = {"day": session, "month": session.replace(day=1), "year": session.replace(month=1, day=1)}
    rows, by = {}, {}
    pct = upto.sum(axis=1) / capital.reindex(upto.index).to_numpy() * 100.0
    for name, start in starts.items():
        part = upto[upto.index >= start]
        by[name] = part.sum()
        rows[name] = {"start": str(part.index.min().date()) if len(part) else "",
                      "end": str(part.index.max().date()) if len(part) else "",
                      "pnl": float(part.to_numpy().sum()), "pct_capital": float(pct[pct.index >= start].sum())}
    by_instrument = pd.DataFrame(by)
    by_instrument.index.name = "instrument"
    totals = pd.DataFrame.from_dict(rows, orient="index")
    totals.index.name = "period"
    return totals, by_instrument


def annualised_risk(exposure: pd.Series, prices: pd.DataFrame, capital: float, window: int = RISK_WINDOW) -> float:
    """Expected annualised standard deviation of the book, as a fraction of capital.

    ``sigma = sqrt(w' Sigma w)`` with ``w`` = base-currency exposure / capital and ``Sigma`` the
    covariance of daily percentage price changes over the last ``window`` sessions, times 256
    (pysystemtrade ``sysproduction/reporting/risk_report.py``: total portfolio risk, annualised %
    of capital; Carver, *Systematic Trading* ch. 9).

    Parameters
    ----------
    exposure : pd.Series
        Index instrument: signed notional held in base currency (units x price x point size x FX).
    prices : pd.DataFrame
        Index session, columns instrument: closes.
    capital : float
        Base currency.
    window : int
        Sessions of returns in the covariance.

    Returns
    -------
    float
        Fraction (0.2 = 20% a year); 0.0 for an empty book, NaN with fewer than 2 returns.
    """
    held = exposure[exposure.abs() > 0]
    if held.empty:
        return 0.0
    returns = prices.reindex(columns=held.index).pct_change(fill_method=None).iloc[-window:]
    cov = returns.cov().fillna(0.0).to_numpy() * 256.0
    if len(returns.dropna(how="all")) < 2:
        return float("nan")
    w = held.to_numpy() / capital
    return float(np.sqrt(w @ cov @ w))


def _unavailable(exc: Exception) -> str:
    """The one-line reason of a section that cannot be read."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _lake_session(cfg: PipelineConfig, lake_root: str, state_root: str) -> pd.Timestamp | None:
    """The latest session of ``target_positions``, None if it has none or cannot be read."""
    try:
        last = query(lake_root, "select max(session) as s from target_positions", cfg, state_root=state_root)["s"].iloc[0]
    except (LakeError, duckdb.Error):  # a missing or broken table: the sections that need it say so
        return None
    return None if pd.isna(last) else pd.Timestamp(last)


def _orders(ledger: Ledger, session: pd.Timestamp) -> pd.DataFrame:
    """The session's intents with verdicts, fill and slippage (one row per order_ref)."""
    intents = ledger.intents(session=session)
    fills = ledger.fills()
    slip = fills.groupby("order_ref")["slippage_cost"].sum() if len(fills) else pd.Series(dtype=float)
    out = intents[["order_ref", "instrument", "side", "quantity", "order_type", "reference_price", "verdict",
                   "deny_reason", "status", "filled_quantity", "avg_fill_price", "commission"]].copy()
    out["deny_reason"] = out["deny_reason"].fillna("")
    out["slippage_cost"] = slip.reindex(out["order_ref"]).to_numpy()
    return out.set_index("order_ref")


def gather_status(cfg: PipelineConfig, ledger: Ledger, lake_root: str, state_root: str, broker: str,
                  session: str | pd.Timestamp | None = None, now: pd.Timestamp | None = None) -> Status:
    """Everything the first screen shows, section by section, for ``session``.

    Parameters
    ----------
    cfg : PipelineConfig
        The universe, base currency, capital, vol target and FX folder.
    ledger : Ledger
        The order ledger (kill switch, fills, breaks, capital, alerts, roll states).
    lake_root, state_root : str
        The lake (read through :func:`pipeline.store.warehouse.query`) and the ledger's folder.
    broker : str
        The broker whose fills are the held book (``paper`` or ``ib``).
    session : str or Timestamp, optional
        Default: the latest session of ``target_positions`` (else of the ledger's orders, else today).
    now : Timestamp, optional
        UTC time the recent alerts are counted back from (default: now).

    Returns
    -------
    Status
        Sections in reading order: ``trading_state``, ``position_breaks``, ``positions`` (index
        instrument: contract (a future's priced contract of the session), position, target,
        difference = target - position, units), ``orders`` (index order_ref),
        ``pnl`` and ``pnl_by_instrument`` (:func:`pnl_periods`), ``risk`` (capital, gross exposure,
        gross leverage, annualised risk and vol target in %), ``alerts`` (the last :data:`ALERT_DAYS`
        days), ``rolls`` (futures: roll state, priced and forward contract, position, close-out and
        sessions left, soonest first). A section needing ``target_positions`` is unavailable
        (with the one-line reason) when that table cannot be read.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    day = _lake_session(cfg, lake_root, state_root) if session is None else pd.Timestamp(session)
    if day is None:
        intents = ledger.intents()
        day = pd.Timestamp(intents["session"].max()) if len(intents) else now.tz_localize(None).normalize()
    base = cfg.portfolio.base_currency
    status = Status(session=day, broker=broker, base_currency=base,
                    book=f"the ledger's positions at broker {broker} at each session end (fills + adopted adjustments)")
    add = status.sections.append
    rolls = _futures_rolls(cfg, ledger, lake_root, state_root, day)

    log = ledger.trading_state_log()
    state = ledger.trading_state().value
    last = log.iloc[-1] if len(log) else None
    add(Section("trading_state", "Trading state (kill switch)", pd.DataFrame([{
        "state": state,
        "since": "" if last is None else pd.Timestamp(last["changed_at"]).strftime("%Y-%m-%d %H:%M UTC"),
        "reason": "never changed (ACTIVE by default)" if last is None else last["reason"],
        "changed_by": "" if last is None else last["changed_by"],
    }]).set_index("state")))

    lake_error = None
    try:
        start = (day - pd.Timedelta(days=_PRICE_DAYS)).date()
        rows = query(lake_root, "select session, instrument, price, target from target_positions "
                     f"where session between DATE '{start}' and DATE '{day.date()}'", cfg, state_root=state_root)
        rows["session"] = pd.to_datetime(rows["session"])
        prices = rows.pivot(index="session", columns="instrument", values="price").sort_index()
        targets = rows.pivot(index="session", columns="instrument", values="target").sort_index()
        if prices.empty:
            raise LakeError(f"target_positions has no session from {start} to {day.date()}")
    except (LakeError, duckdb.Error) as exc:  # a broken or missing table: the other sections still answer
        lake_error = f"unavailable: {_unavailable(exc)}"

    expected = ledger.expected_positions(broker)
    breaks = ledger.open_position_breaks(broker)
    add(Section("position_breaks", f"Open position breaks (broker {broker} against the ledger)",
                breaks[["instrument", "contract", "expected", "broker_position", "difference", "first_seen",
                        "last_session"]].set_index("instrument")))
    if lake_error is None:
        target = targets.loc[day] if day in targets.index else pd.Series(dtype=float)
        names = sorted(set(cfg.symbols) | set(expected.index) | set(target.dropna().index))
        table = pd.DataFrame(index=pd.Index(names, name="instrument"))
        # a futures position is held in the session's priced contract (futures_positions), else as the break names it
        contracts = breaks.drop_duplicates("instrument").set_index("instrument")["contract"]
        if rolls.frame is not None and "contract" in rolls.frame:
            contracts = rolls.frame["contract"].dropna().combine_first(contracts)
        table["contract"] = contracts.reindex(table.index).fillna(pd.Series(table.index, index=table.index))
        table["position"] = expected.reindex(table.index).fillna(0.0)
        table["target"] = target.reindex(table.index).astype(float)
        table["difference"] = table["target"] - table["position"]
        add(Section("positions", f"Positions (ledger, broker {broker}) against the targets of {day.date()} (units)",
                    table))
    else:
        add(Section("positions", "Positions against the targets (units)", error=lake_error))
    add(Section("orders", f"Orders of {day.date()}: verdicts, fills, slippage (instrument currency)",
                _orders(ledger, day)))

    if lake_error is None:
        capital = capital_series(prices.index, ledger.recorded_capital(), cfg.portfolio.capital)
        universe = [s for s in cfg.symbols if s in prices.columns]
        instruments = [i for i in cfg.instruments if i.symbol in universe]
        px = prices[universe]
        try:
            fx = universe_fx(instruments, base, cfg.portfolio.fx_path, px.index)
        except (FXError, CarverDataError) as exc:  # no or bad FX rates for a foreign instrument: no P&L, no risk
            lake_error = f"unavailable: {_unavailable(exc)}"
    if lake_error is None:
        fills, adjustments = ledger.fills(broker=broker), ledger.position_adjustments()
        held = held_positions(fills, adjustments[adjustments["broker"] == broker], px.index)
        pnl = daily_pnl(held, px, point_sizes(instruments), fx)
        totals, by_instrument = pnl_periods(pnl, capital, day)
        add(Section("pnl", f"P&L to {day.date()} ({base}; % of the capital sized with)", totals))
        add(Section("pnl_by_instrument", f"P&L by instrument ({base})", by_instrument))
        now_held = held.reindex(columns=universe).iloc[-1].fillna(0.0) if len(held) else pd.Series(0.0, index=universe)
        fx_now = fx.iloc[-1] if fx is not None else 1.0
        exposure = now_held * px.ffill().iloc[-1] * point_sizes(instruments) * fx_now
        cap = float(capital.iloc[-1])
        add(Section("risk", f"Risk now against the target ({base})", pd.DataFrame([{
            "capital": cap, "gross_exposure": float(exposure.abs().sum()),
            "gross_leverage": float(exposure.abs().sum()) / cap,
            "annualised_risk_pct": 100.0 * annualised_risk(exposure.fillna(0.0), px, cap),
            "vol_target_pct": 100.0 * cfg.portfolio.vol_target,
        }], index=pd.Index([str(px.index[-1].date())], name="session"))))
    else:
        add(Section("pnl", f"P&L ({base})", error=lake_error))
        add(Section("pnl_by_instrument", f"P&L by instrument ({base})", error=lake_error))
        add(Section("risk", "Risk now against the target", error=lake_error))

    alerts = ledger.alerts()
    recent = alerts[pd.to_datetime(alerts["created_at"], utc=True) >= now - pd.Timedelta(days=ALERT_DAYS)]
    add(Section("alerts", f"Alerts of the last {ALERT_DAYS} days, newest first",
                recent.iloc[::-1][["created_at", "severity", "kind", "subject", "message"]].reset_index(drop=True)))
    add(rolls)
    return status


def _futures_rolls(cfg: PipelineConfig, ledger: Ledger, lake_root: str, state_root: str,
                   day: pd.Timestamp) -> Section:
    """The futures instruments' roll state (ledger) with the session's priced and forward contract,
    position and sessions left to the close-out (lake table ``futures_positions``), soonest first."""
    title = f"Rolls (futures) on {day.date()}: roll state, contracts, sessions to the close-out"
    futures = [i.symbol for i in cfg.instruments if i.sec_type == "FUT"]
    table = pd.DataFrame(index=pd.Index(futures, name="instrument"))
    states = ledger.current_roll_states().set_index("instrument")["state"]
    table["roll_state"] = states.reindex(table.index).fillna(DEFAULT_ROLL_STATE)
    if not futures:
        return Section("rolls", title, table)
    try:
        held = query(lake_root, "select instrument, contract, forward_contract, position, close_out, sessions_left "
                     f"from futures_positions where session = DATE '{day.date()}'", cfg, state_root=state_root)
    except (LakeError, duckdb.Error) as exc:  # no futures run yet, or a broken file
        return Section("rolls", title, error=f"unavailable: {_unavailable(exc)}")
    table = table.join(held.set_index("instrument"))
    return Section("rolls", title, table.sort_values("sessions_left", na_position="last"))
