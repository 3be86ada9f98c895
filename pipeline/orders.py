"""From target positions to orders, exactly once (DESIGN rule 3; reliability.md §2).

Every order carries a deterministic reference ``strategy:session:instrument:seq`` (IB's
``orderRef``), is written to the ledger before it is sent, and passes the pre-trade gate. A run
first reconciles the session's unfinished intents with the broker, then orders only the
residual ``target - position - working`` (pysystemtrade's netting of new targets against
unfilled orders, ``sysexecution/order_stacks/instrument_order_stack.py``), so a re-run or a
retry after a crash never sends an order twice.
"""

from __future__ import annotations

import fcntl
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.alerting import notify
from pipeline.broker.base import WORKING_COLUMNS, Broker, BrokerError, BrokerOrder
from pipeline.config import RiskLimits
from pipeline.ledger import OPEN_STATUSES, Ledger
from pipeline.risk import TradingState, Verdict, daily_loss_breached, pre_trade_check

#: Columns of :func:`plan_orders`' result.
PLAN_COLUMNS = (
    "order_ref", "strategy", "session", "instrument", "seq", "quantity", "side", "order_type",
    "reference_price", "target_position", "position_before",
)

#: Residuals smaller than this (units) are float noise, not orders.
_ZERO = 1e-9


class OrderError(ValueError):
    """Bad input to the order path (an order_ref, a target or a position); nothing was sent."""


class OrderRunLocked(OrderError):
    """Another order run of the same strategy holds the lock; this one sent nothing."""


@contextmanager
def order_run_lock(ledger: Ledger, strategy: str) -> Iterator[Path]:
    """Hold the one-order-run-at-a-time lock of ``strategy`` (an exclusive ``flock``).

    The file is ``<ledger folder>/locks/orders-<strategy>.lock``. Dagster's run queue and the
    ``broker`` pool only limit *launched* runs; this lock also covers ``execute_job``, the CLI
    and a second machine process on the same lake (reliability.md §5 scenario 10).

    Raises
    ------
    OrderRunLocked
        At once (no waiting) when another run, in this or another process, holds it.
    """
    folder = ledger.path.parent / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"orders-{strategy}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OrderRunLocked(
                f"order run locked: another order run of strategy {strategy!r} holds {path}; "
                "nothing was sent by this one (re-run once it has finished: it sends only what is missing)"
            ) from exc
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _session(session: Any) -> pd.Timestamp:
    """A session as a tz-naive midnight Timestamp."""
    return pd.Timestamp(pd.Timestamp(session).date())


def _check_field(name: str, value: str) -> None:
    if not value or ":" in value:
        raise OrderError(f"order_ref field {name}={value!r} must be non-empty and contain no ':'")


def order_ref(strategy: str, session: Any, instrument: str, seq: int) -> str:
    """The deterministic reference of an order: ``"carver:2022-12-28:AAPL:1"``.

    Parameters
    ----------
    strategy : str
        ``BrokerConfig.strategy``; no ':'.
    session : date-like
        The session the order trades for (str, date or Timestamp).
    instrument : str
        Symbol; no ':'.
    seq : int
        1 for the first order of (session, instrument), then 2, 3, ... (>= 1).

    Raises
    ------
    OrderError
        A field contains ':' or is empty, or ``seq < 1``.
    """
    _check_field("strategy", strategy)
    _check_field("instrument", instrument)
    if int(seq) < 1 or int(seq) != seq:
        raise OrderError(f"order_ref: seq must be a whole number >= 1, got {seq!r}")
    return f"{strategy}:{_session(session).date().isoformat()}:{instrument}:{int(seq)}"


@dataclass(frozen=True)
class OrderRef:
    """The four fields of an order reference (see :func:`order_ref`)."""

    strategy: str
    session: pd.Timestamp
    instrument: str
    seq: int


def parse_order_ref(ref: str) -> OrderRef:
    """Split ``"carver:2022-12-28:AAPL:1"`` into its fields (inverse of :func:`order_ref`).

    Raises
    ------
    OrderError
        ``ref`` does not have four ':'-separated fields, a valid date and a seq >= 1.
    """
    parts = ref.split(":")
    if len(parts) != 4:
        raise OrderError(f"order_ref {ref!r} is not 'strategy:YYYY-MM-DD:instrument:seq'")
    strategy, day, instrument, seq = parts
    try:
        session = pd.Timestamp(day)
        n = int(seq)
    except ValueError as exc:
        raise OrderError(f"order_ref {ref!r}: bad date {day!r} or seq {seq!r}") from exc
    if order_ref(strategy, session, instrument, n) != ref:
        raise OrderError(f"order_ref {ref!r} is not in canonical form 'strategy:YYYY-MM-DD:instrument:seq'")
    return OrderRef(strategy, session, instrument, n)


@dataclass(frozen=True)
class OrderIntent:
    """One order the system means to send (a row of the ledger's ``order_intents``).

    Quantities and positions are signed units (+ buy, - sell); prices in price points.
    """

    order_ref: str
    strategy: str
    session: pd.Timestamp
    instrument: str
    seq: int
    quantity: float
    reference_price: float
    target_position: float = math.nan
    position_before: float = math.nan
    order_type: str = "MKT"
    limit_price: float | None = None
    account: str | None = None

    @property
    def side(self) -> str:
        return "BUY" if self.quantity > 0 else "SELL"

    @classmethod
    def from_row(cls, row: Any) -> "OrderIntent":
        """Build from a row (mapping / Series) of :func:`plan_orders` or ``Ledger.intents``."""
        limit = row.get("limit_price") if hasattr(row, "get") else None
        account = row.get("account") if hasattr(row, "get") else None
        return cls(
            order_ref=str(row["order_ref"]),
            strategy=str(row["strategy"]),
            session=_session(row["session"]),
            instrument=str(row["instrument"]),
            seq=int(row["seq"]),
            quantity=float(row["quantity"]),
            reference_price=float(row["reference_price"]),
            target_position=float(row["target_position"]),
            position_before=float(row["position_before"]),
            order_type=str(row["order_type"]),
            limit_price=float(limit) if limit is not None and pd.notna(limit) else None,
            account=str(account) if account is not None and pd.notna(account) else None,
        )


def _as_series(x: pd.Series | None, what: str) -> pd.Series:
    if x is None:
        return pd.Series(dtype=float)
    if not isinstance(x, pd.Series):
        raise OrderError(f"{what} must be a pandas Series indexed by instrument, got {type(x).__name__}")
    if not x.index.is_unique:
        raise OrderError(f"{what}: instruments listed twice: {sorted(set(x.index[x.index.duplicated()]))}")
    return x.astype(float)


def plan_orders(
    targets: pd.Series,
    positions: pd.Series,
    working: pd.Series,
    reference_prices: pd.Series,
    session: Any,
    strategy: str,
    prior_intents: pd.DataFrame,
) -> pd.DataFrame:
    """The orders that take positions to their targets: ``target - position - working``.

    Parameters
    ----------
    targets : Series
        Index instrument; target position in signed units for ``session``. NaN means "no
        target" (no order, whatever the position: an unknown target is not zero).
    positions : Series
        Index instrument; signed units held now (missing instrument = flat).
    working : Series
        Index instrument; signed units of orders sent but not yet filled (missing = none).
    reference_prices : Series
        Index instrument; price points used to value each order (e.g. the session close);
        missing gives NaN, which the pre-trade gate denies.
    session : date-like
        The session the orders are for.
    strategy : str
        First field of the order_ref.
    prior_intents : DataFrame
        Intents already in the ledger (``Ledger.intents``; only ``session``, ``instrument``
        and ``seq`` are used); may be empty.

    Returns
    -------
    DataFrame
        One row per order (instruments with a target and a non-zero residual, sorted), columns
        ``PLAN_COLUMNS``: ``seq`` = 1 + the highest seq already used for (session,
        instrument) in ``prior_intents``; ``quantity`` the signed residual, rounded to whole
        units when the target is whole (removes float noise of positions stored as DOUBLE);
        ``position_before`` = position + working (what the position will be before this
        order); ``order_type`` 'MKT'. Residuals below 1e-9 units are no order.

    Raises
    ------
    OrderError
        An input repeats an instrument, a position or working quantity is NaN (an unusable
        broker answer, fail closed), a target is infinite, or strategy / an instrument
        contains ':'.

    Notes
    -----
    Residual netting: pysystemtrade ``instrument_order_stack.py``; reliability.md §2 step 1.
    """
    session = _session(session)
    _check_field("strategy", strategy)
    targets = _as_series(targets, "targets")
    positions = _as_series(positions, "positions")
    working = _as_series(working, "working")
    reference_prices = _as_series(reference_prices, "reference_prices")
    for what, s in (("positions", positions), ("working", working)):
        if s.isna().any():
            raise OrderError(
                f"plan_orders: {what} of {sorted(s.index[s.isna()])} are NaN; a broker answer with "
                "unknown positions cannot be netted (fail closed): fix the broker data and re-run"
            )
    if np.isinf(targets.to_numpy()).any():
        raise OrderError(f"plan_orders: infinite targets for {sorted(targets.index[np.isinf(targets)])}")

    instruments = targets.index.union(positions.index).union(working.index).sort_values()
    t = targets.reindex(instruments)
    held = positions.reindex(instruments).fillna(0.0) + working.reindex(instruments).fillna(0.0)
    residual = t - held
    whole = t.notna() & (t == t.round())
    residual = residual.where(~whole, residual.round())
    residual = residual.where(residual.abs() >= _ZERO, 0.0)
    keep = t.notna() & (residual != 0)
    inst = instruments[keep.to_numpy()]
    for name in inst:
        _check_field("instrument", str(name))

    last_seq = pd.Series(dtype=float)
    if prior_intents is not None and not prior_intents.empty:
        same = prior_intents[pd.to_datetime(prior_intents["session"]) == session]
        last_seq = same.groupby("instrument")["seq"].max().astype(float)
    seq = (last_seq.reindex(inst).fillna(0).astype(int) + 1).to_numpy()
    qty = residual[keep].to_numpy(dtype=float)
    day = session.date().isoformat()
    refs = [f"{strategy}:{day}:{i}:{n}" for i, n in zip(inst, seq)]
    return pd.DataFrame(
        {
            "order_ref": pd.array(refs, dtype="str"),
            "strategy": strategy,
            "session": session,
            "instrument": pd.array(list(inst), dtype="str"),
            "seq": seq.astype(int),
            "quantity": qty,
            "side": np.where(qty > 0, "BUY", "SELL"),
            "order_type": "MKT",
            "reference_price": reference_prices.reindex(inst).to_numpy(dtype=float),
            "target_position": t[keep].to_numpy(dtype=float),
            "position_before": held[keep].to_numpy(dtype=float),
        },
        columns=list(PLAN_COLUMNS),
    )


@dataclass(frozen=True)
class OrderPolicy:
    """How accepted intents become broker orders, and the audit fields they carry.

    Attributes
    ----------
    order_type : str
        ``MKT`` or ``LMT`` (``BrokerConfig.order_type``).
    limit_offset : float
        ``LMT``: the limit is ``reference x (1 + offset)`` for a buy, ``x (1 - offset)`` for a
        sell (a fraction; the price collar of the gate checks it).
    account : str or None
        The account orders go to; with ``live`` False it must be a paper account (``DU...``).
    live : bool
        True only in live mode (``execution: live`` with ``live_enabled``).
    code_version, input_hash : str or None
        Stored on each intent: which code and which inputs produced it (:mod:`pipeline.audit`).
    market_fallback_after : float or None
        ``LMT``: seconds to wait for a limit order's fills before its unfilled residual is
        cancelled and sent as a market order (``BrokerConfig.market_fallback_after``); None: no
        fallback, a limit order works until it fills or expires.
    what_if : bool
        Record-only runs with a broker (a dry run of today's orders): ask the broker's what-if
        check (``Broker.what_if``, IB's ``whatIfOrder``) for each accepted intent and store its
        margin and commission preview on the intent.
    """

    order_type: str = "MKT"
    limit_offset: float = 0.0
    account: str | None = None
    live: bool = False
    code_version: str | None = None
    input_hash: str | None = None
    market_fallback_after: float | None = None
    what_if: bool = False

    def limit_prices(self, quantity: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Limit prices in price points (NaN for market orders)."""
        if self.order_type != "LMT":
            return np.full(len(quantity), np.nan)
        return reference * (1.0 + np.sign(quantity) * self.limit_offset)


@dataclass(frozen=True)
class ExecutionReport:
    """What one :func:`execute_orders` run did.

    Attributes
    ----------
    session : pd.Timestamp
        The session traded or recorded.
    mode : str
        ``"submit"`` or ``"record_only"``.
    trading_state : TradingState
        The kill-switch state the run used (HALTED if the circuit breaker tripped).
    intents : DataFrame
        The ledger rows this run wrote or settled (columns of ``Ledger.intents`` plus
        ``action``: ``new``, ``adopted`` (an earlier intent found final at the broker: filled,
        cancelled or rejected), ``working`` (found working at the broker), ``resent`` (an
        earlier intent the broker did not know, sent again under the same order_ref),
        ``denied_on_resend``, ``replaced`` (a limit order cancelled for its market fallback)
        or ``fallback`` (the market order for a limit order's unfilled residual)).
    counts : dict[str, int]
        ``planned`` (orders from the residual), ``unchanged`` (planned orders identical to an
        intent already recorded, not written again), ``recorded`` (new intents), ``accepted``,
        ``denied`` (verdicts of the new intents), ``sent`` (orders given to the broker, resent
        included), ``filled`` (orders found or left fully filled this run), ``rejected`` (by
        the broker), ``reconciled`` (earlier open intents looked up), ``adopted``, ``resent``,
        ``fallbacks`` (market fallback intents written, denied ones included), ``previewed``
        (record-only intents given a what-if preview).
    """

    session: pd.Timestamp
    mode: str
    trading_state: TradingState
    intents: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def _fill_price(instrument: str, reference_prices: pd.Series, fallback: float) -> float:
    price = reference_prices.get(instrument, math.nan) if reference_prices is not None else math.nan
    price = float(price) if price is not None else math.nan
    return price if math.isfinite(price) else float(fallback)


def _working_orders(broker: Broker) -> pd.DataFrame:
    """The broker's working orders, refusing an answer that cannot be used (fail closed)."""
    working = broker.working_orders()
    if not isinstance(working, pd.DataFrame) or not set(WORKING_COLUMNS) <= set(working.columns):
        raise BrokerError(
            f"broker {broker.name}: working_orders() did not return a DataFrame with columns "
            f"{list(WORKING_COLUMNS)}; without them an order could be sent twice"
        )
    return working


def _broker_positions(broker: Broker) -> tuple[pd.Series, pd.Series]:
    """Positions and working quantity per instrument from the broker, failing closed."""
    positions = broker.positions()
    if not isinstance(positions, pd.Series):
        raise BrokerError(
            f"broker {broker.name}: positions() returned {type(positions).__name__}, not a Series; "
            "an unknown position is not a flat one"
        )
    working = _working_orders(broker).groupby("instrument")["quantity"].sum().astype(float)
    return positions.astype(float), working


def _record(ledger: Ledger, outcome: BrokerOrder, run_id: str | None, counts: dict[str, int]) -> str:
    """Store a broker answer; a rejection is alerted (and never retried automatically)."""
    status = ledger.record_broker_order(outcome, run_id)
    if status == "FILLED":
        counts["filled"] += 1
    elif status == "REJECTED":
        counts["rejected"] += 1
        notify(
            ledger, "order_rejected", "ERROR", outcome.order_ref,
            f"{outcome.order_ref} rejected by the broker: {outcome.reason or 'no reason given'}; "
            "not retried: new orders for this instrument are denied for the rest of the session",
            f"order_rejected:{outcome.order_ref}",
        )  # fmt: skip
    return status


def _submit(
    broker: Broker, ledger: Ledger, intent: OrderIntent, price: float, counts: dict[str, int], run_id: str | None
) -> BrokerOrder:
    """Send one intent that is already in the ledger; record the outcome."""
    try:
        outcome = broker.submit(intent, price)
    except BrokerError as exc:
        notify(
            ledger, "broker_error", "ERROR", intent.order_ref,
            f"submit of {intent.order_ref} failed: {exc}; the intent stays open and the next run "
            "reconciles it with the broker before sending anything",
            f"broker_error:{intent.order_ref}",
        )
        raise
    counts["sent"] += 1
    _record(ledger, outcome, run_id, counts)
    return outcome


@dataclass
class _GateContext:
    """Everything the gate needs besides the order itself, for one run."""

    state: TradingState
    limits: RiskLimits
    point_sizes: dict[str, float]
    policy: OrderPolicy = OrderPolicy()
    #: instrument -> (order_ref, reason) of a broker rejection earlier in the session
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: orders already sent within the throttle window (before this run's)
    sent_in_window: int = 0
    #: only runs that send orders are throttled (record-only runs and backfills send nothing)
    throttle: bool = False

    def check(self, quantity: float, instrument: str, price: float, position_before: float,
              limit_price: float | None) -> Verdict:
        if instrument in self.rejected and self.state is not TradingState.HALTED:
            ref, reason = self.rejected[instrument]
            return Verdict(
                False,
                f"rejected_earlier: {ref} was rejected by the broker ({reason}); no automatic retry "
                "in this session: fix the cause, the next session trades again",
                "rejected_earlier",
            )
        verdict = pre_trade_check(
            quantity, instrument, price, float(self.point_sizes.get(instrument, math.nan)), position_before,
            self.state, self.limits, limit_price=limit_price,
            orders_in_window=self.sent_in_window if self.throttle else 0,
            account=self.policy.account, live=self.policy.live,
        )
        if verdict.accepted:
            self.sent_in_window += 1
        return verdict


@dataclass(frozen=True)
class _SubmitRun:
    """What a submitting run of :func:`execute_orders` carries through reconciliation, sending and
    the market fallback: where intents are written, where orders go, the gate, the prices, the
    run's counters (mutated), its id and its order policy."""

    ledger: Ledger
    broker: Broker
    gate: _GateContext
    reference_prices: pd.Series
    counts: dict[str, int]
    run_id: str | None
    policy: OrderPolicy


def _reconcile(open_intents: pd.DataFrame, run: _SubmitRun) -> dict[str, str]:
    """Settle earlier open intents of the session with the broker; returns order_ref -> action.

    Each is looked up by order_ref (the broker searches its open orders of every client, its
    completed orders and today's executions; never the orderId). Found: its fills and status
    are recorded (``adopted`` when final, ``working`` otherwise). Not found: an intent that
    was never acknowledged (INTENT / SUBMITTED) is gated again and re-sent under the SAME
    order_ref; one the broker had acknowledged but no longer knows is closed as CANCELLED with
    an alert (the residual against the broker's positions decides what to do next).
    """
    actions: dict[str, str] = {}
    for _, row in open_intents.iterrows():
        intent = OrderIntent.from_row(row)
        run.counts["reconciled"] += 1
        found = run.broker.lookup(intent.order_ref)
        if found is not None:
            _record(run.ledger, found, run.run_id, run.counts)
            actions[intent.order_ref] = "adopted" if found.final else "working"
            run.counts["adopted"] += int(found.final)
            continue
        if row["status"] not in ("INTENT", "SUBMITTED"):
            reason = f"acknowledged earlier ({row['status']}) but unknown to the broker at reconciliation"
            run.ledger.update_status(intent.order_ref, "CANCELLED", status_reason=reason)
            notify(run.ledger, "order_lost", "ERROR", intent.order_ref, f"{intent.order_ref}: {reason}",
                   f"order_lost:{intent.order_ref}")
            actions[intent.order_ref] = "adopted"
            continue
        # Unknown to the broker: it was never sent. Send it now under the same order_ref, after
        # the gate with today's state and positions (the gate stands before every submission).
        positions, working = _broker_positions(run.broker)
        before = float(positions.get(intent.instrument, 0.0)) + float(working.get(intent.instrument, 0.0))
        price = _fill_price(intent.instrument, run.reference_prices, intent.reference_price)
        verdict = run.gate.check(intent.quantity, intent.instrument, price, before, intent.limit_price)
        if not verdict.accepted:
            run.ledger.update_status(intent.order_ref, "DENIED", verdict="DENIED", deny_reason=verdict.reason)
            actions[intent.order_ref] = "denied_on_resend"
            continue
        run.ledger.update_status(intent.order_ref, row["status"], verdict="ACCEPTED")
        _submit(run.broker, run.ledger, intent, price, run.counts, run.run_id)
        actions[intent.order_ref] = "resent"
        run.counts["resent"] += 1
    return actions


def _preview(accepted: pd.DataFrame, broker: Broker, ledger: Ledger) -> int:
    """Store the broker's what-if preview of each accepted record-only intent; returns how many.

    A preview only informs (nothing is sent either way), so a broker that cannot give one is
    alerted (``what_if_failed``) and the run goes on."""
    what_if = getattr(broker, "what_if", None)
    if what_if is None or accepted.empty:
        return 0
    done = 0
    for _, row in accepted.iterrows():
        intent = OrderIntent.from_row(row)
        try:
            preview = what_if(intent)
        except BrokerError as exc:
            notify(ledger, "what_if_failed", "WARN", intent.order_ref,
                   f"what-if preview of {intent.order_ref} failed: {exc}", f"what_if_failed:{intent.order_ref}")
            continue
        ledger.record_what_if(preview)
        done += 1
    return done


def _market_fallback(session: pd.Timestamp, wait: float, run: _SubmitRun) -> dict[str, str]:
    """Give the session's working limit orders ``wait`` seconds, then replace what is left of
    each by a market order (steps (a)-(c) of :func:`execute_orders`, "Market fallback")."""
    intents = run.ledger.intents(session=session)
    working = intents[
        (intents["mode"] == "submit") & (intents["order_type"] == "LMT") & intents["status"].isin(OPEN_STATUSES)
    ]
    if working.empty:
        return {}
    waiter = getattr(run.broker, "wait_for_fills", None)
    if waiter is not None:
        for outcome in waiter(list(working["order_ref"]), wait).values():
            _record(run.ledger, outcome, run.run_id, run.counts)
    intents = run.ledger.intents(session=session)
    still = intents[intents["order_ref"].isin(working["order_ref"]) & intents["status"].isin(OPEN_STATUSES)]
    for ref in still["order_ref"]:
        run.ledger.start_fallback(str(ref))  # (a) before the cancel: from here a fallback is owed
    return _complete_fallbacks(session, run)


def _complete_fallbacks(session: pd.Timestamp, run: _SubmitRun) -> dict[str, str]:
    """Cancel every limit intent of ``session`` whose fallback started and has no market
    intent yet, record its final state, and send its unfilled residual as a market order."""
    intents = run.ledger.intents(session=session)
    if intents.empty:
        return {}
    owed = intents[
        (intents["mode"] == "submit") & intents["fallback_at"].notna()
        & ~intents["order_ref"].isin(intents["parent_ref"].dropna())
    ]
    actions: dict[str, str] = {}
    for _, row in owed.iterrows():
        ref = str(row["order_ref"])
        if row["status"] in OPEN_STATUSES:  # (b) cancel; then the broker's final word, fills included
            try:
                run.broker.cancel(ref)
                outcome = run.broker.lookup(ref)
            except BrokerError as exc:
                notify(run.ledger, "broker_error", "ERROR", ref,
                       f"market fallback of {ref}: the cancel failed ({exc}); the next run completes the "
                       "fallback after reconciling the limit order", f"broker_error:fallback:{ref}")
                raise
            if outcome is None or not outcome.final:
                raise BrokerError(
                    f"market fallback of {ref}: the limit order is not final at the broker after its cancel "
                    f"({outcome.status if outcome else 'unknown'}); no market order sent, the next run retries"
                )
            _record(run.ledger, outcome, run.run_id, run.counts)
            actions[ref] = "replaced"
        parent = run.ledger.intents(session=session).set_index("order_ref").loc[ref]
        filled = float(parent["filled_quantity"]) if pd.notna(parent["filled_quantity"]) else 0.0
        residual = float(parent["quantity"]) - filled
        if parent["status"] != "CANCELLED" or abs(residual) < _ZERO:
            continue  # filled before the cancel, or rejected (never retried): no fallback
        actions.update(_send_fallback(parent, ref, residual, run))
    return actions


def _send_fallback(parent: pd.Series, parent_ref: str, quantity: float, run: _SubmitRun) -> dict[str, str]:
    """(c): the market intent for a cancelled limit order's residual, gated, written, sent."""
    session, instrument = _session(parent["session"]), str(parent["instrument"])
    seq = int(run.ledger.intents(session=session, instrument=instrument)["seq"].max()) + 1
    ref = order_ref(str(parent["strategy"]), session, instrument, seq)
    positions, working = _broker_positions(run.broker)
    before = float(positions.get(instrument, 0.0)) + float(working.get(instrument, 0.0))
    price = _fill_price(instrument, run.reference_prices, float(parent["reference_price"]))
    verdict = run.gate.check(quantity, instrument, price, before, None)
    row = pd.DataFrame([{
        "order_ref": ref, "strategy": parent["strategy"], "session": session, "instrument": instrument, "seq": seq,
        "quantity": quantity, "side": "BUY" if quantity > 0 else "SELL", "order_type": "MKT",
        "reference_price": price, "target_position": parent["target_position"], "position_before": before,
        "status": "INTENT" if verdict.accepted else "DENIED", "mode": "submit",
        "verdict": "ACCEPTED" if verdict.accepted else "DENIED", "deny_reason": verdict.reason, "run_id": run.run_id,
        "account": run.policy.account, "code_version": run.policy.code_version, "input_hash": run.policy.input_hash,
        "parent_ref": parent_ref,
    }])
    run.ledger.record_intents(row)
    run.counts["fallbacks"] += 1
    if not verdict.accepted:
        notify(run.ledger, "order_denied", "WARN", ref, f"{ref} (market fallback of {parent_ref}) denied by the "
               f"pre-trade gate: {verdict.reason}", f"order_denied:{ref}")
        return {ref: "fallback"}
    _submit(run.broker, run.ledger, OrderIntent.from_row(row.iloc[0]), price, run.counts, run.run_id)
    return {ref: "fallback"}


def _gate(
    plan: pd.DataFrame,
    state: TradingState,
    limits: RiskLimits,
    point_sizes: dict[str, float],
    context: _GateContext | None = None,
) -> list[Verdict]:
    # A loop over a handful of orders a day; the gate is per order by nature (rules short-circuit,
    # and the throttle counts the orders accepted before each one).
    ctx = context or _GateContext(state, limits, point_sizes)
    limit = plan["limit_price"] if "limit_price" in plan.columns else pd.Series(np.nan, index=plan.index)
    columns = (  # plain arrays: iterating the frame's rows converts every column, dates included
        plan["quantity"].to_numpy(dtype=float).tolist(), plan["instrument"].to_numpy(dtype=object).tolist(),
        plan["reference_price"].to_numpy(dtype=float).tolist(), plan["position_before"].to_numpy(dtype=float).tolist(),
        limit.to_numpy(dtype=float).tolist(),
    )
    return [
        ctx.check(q, str(i), p, b, None if not math.isfinite(lp) else lp)
        for q, i, p, b, lp in zip(*columns)
    ]


def _unchanged(plan: pd.DataFrame, prior: pd.DataFrame, mode: str) -> np.ndarray:
    """Which planned orders repeat the latest untraded intent of their instrument (see
    :func:`execute_orders`, "Idempotency")."""
    if plan.empty or prior.empty:
        return np.zeros(len(plan), dtype=bool)
    latest = (
        prior[prior["mode"] == mode].sort_values("seq").groupby("instrument").tail(1).set_index("instrument")
    )
    m = latest.reindex(plan["instrument"].to_numpy())
    same = (
        m["status"].isin(["RECORDED", "DENIED"]).to_numpy()
        & np.isclose(m["target_position"].to_numpy(dtype=float), plan["target_position"].to_numpy(dtype=float))
        & np.isclose(m["quantity"].to_numpy(dtype=float), plan["quantity"].to_numpy(dtype=float))
        & (m["verdict"].to_numpy(dtype=object) == plan["verdict"].to_numpy(dtype=object))
        & (m["deny_reason"].fillna("").to_numpy(dtype=object) == plan["deny_reason"].fillna("").to_numpy(dtype=object))
    )
    return np.asarray(same, dtype=bool)


def _rejected_in_session(prior: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """instrument -> (order_ref, reason) where the latest submit intent was REJECTED."""
    if prior.empty:
        return {}
    sent = prior[prior["mode"] == "submit"].sort_values("seq").groupby("instrument").tail(1)
    rej = sent[sent["status"] == "REJECTED"]
    return {r.instrument: (r.order_ref, str(r.status_reason or "")) for r in rej.itertuples(index=False)}


def execute_orders(
    targets: pd.Series,
    reference_prices: pd.Series,
    session: Any,
    *,
    ledger: Ledger,
    broker: Broker | None,
    limits: RiskLimits,
    point_sizes: dict[str, float],
    strategy: str,
    submit: bool,
    run_id: str | None,
    assumed_positions: pd.Series | None = None,
    policy: OrderPolicy | None = None,
) -> ExecutionReport:
    """Take the positions of one session to their targets, exactly once.

    Flow (DESIGN rule 3; reliability.md §2):

    0. ``submit=True``: take the strategy's order-run lock (:func:`order_run_lock`; a second
       concurrent run fails at once with :class:`OrderRunLocked`, sending nothing), and trip
       the daily-loss circuit breaker if the broker reports a loss beyond
       ``limits.max_daily_loss`` (HALTED is written to the ledger's kill-switch log).
    1. Reconcile (``submit=True`` only): every intent of ``session`` in mode ``submit`` still
       open (INTENT, SUBMITTED, ACKNOWLEDGED, PARTIALLY_FILLED; e.g. after a crash between
       ``placeOrder`` and the ledger update) is looked up at the broker by order_ref and
       settled (see :func:`_reconcile`): adopted, left working, or re-sent under the SAME
       order_ref when the broker never got it.
    2. Read broker positions and working orders; a :class:`BrokerError` propagates and stops
       the run (fail closed: nothing is planned from an unknown position).
    3. Plan the residual ``target - position - working`` (:func:`plan_orders`); with an
       ``LMT`` policy each order gets its limit price.
    4. Gate each order (:func:`pipeline.risk.pre_trade_check`, plus ``rejected_earlier``: an
       instrument whose order the broker rejected this session is not retried), then write
       every intent in one transaction BEFORE any submission, with its verdict: ACCEPTED
       orders as INTENT (``submit``) or RECORDED (``record_only``), denials as DENIED with the
       reason (and, in submit runs, an alert ``order_denied``).
    5. ``submit=True``: send the accepted intents and record each broker answer (fills with
       their execution ids and commissions, permId, status: ACKNOWLEDGED, PARTIALLY_FILLED,
       FILLED, CANCELLED or REJECTED, the latter alerted). A BrokerError on submit leaves the
       intent open, adds an alert ``broker_error`` and propagates; the next run reconciles
       it. ``submit=False`` (a backfill or a dry run): nothing is sent; with a broker and
       ``policy.what_if``, each accepted intent gets the broker's what-if margin and commission
       preview (``Ledger.record_what_if``; a failed preview is alerted, the run goes on).
    6. Market fallback (``submit=True`` and ``policy.market_fallback_after`` set): see below.

    Market fallback. Limit orders of the session still working after
    ``market_fallback_after`` seconds (counted from this run's submissions; a limit order
    found working by a later run falls back at once) are replaced: (a) the limit intent's
    ``fallback_at`` is written to the ledger, (b) the order is cancelled at the broker and its
    final state (fills included) recorded, (c) its unfilled residual ``quantity -
    filled_quantity`` becomes a new MKT intent with the next seq of (session, instrument), its
    own order_ref and ``parent_ref`` = the limit order's, gated and written before it is
    sent. Step 1 of every submit run also completes any fallback that (a) started but whose
    (c) was never written (a crash between the cancel and the market order), so each limit
    order gets at most one market fallback; a rejected or fully filled limit order gets none.

    Idempotency. Submit runs: the residual is against the broker's position, so a re-run
    after success plans nothing. Record-only runs never change a position, so instead a
    planned order is *unchanged* — not written again — when the latest intent of the same
    (session, instrument) in the same mode did not trade (status RECORDED or DENIED) and has
    the same target position, quantity, verdict and denial reason. The same rule keeps a
    re-run of a submit run that was denied (e.g. while HALTED) from piling up identical
    denials. A changed target (or a changed verdict) records a new intent with the next seq.

    Parameters
    ----------
    targets : Series
        Index instrument; target positions for ``session`` in signed units (NaN: no order).
    reference_prices : Series
        Index instrument; price points; valued by the gate and used as the paper fill price.
    session : date-like
        The session the orders are for.
    ledger : Ledger
        The initialised ledger.
    broker : Broker or None
        Required when ``submit``. In a record-only run it is optional: given, the residual is
        against its current positions (a dry run of today's orders); None, against
        ``assumed_positions`` (a backfill).
    limits : RiskLimits
        Pre-trade limits.
    point_sizes : dict[str, float]
        Currency per price point per unit, per instrument (missing: the gate denies).
    strategy : str
        First field of each order_ref.
    submit : bool
        True to send orders (only for the latest session, DESIGN rule 2); False records only.
    run_id : str or None
        The Dagster run id, stored on each new intent and broker event.
    assumed_positions : Series, optional
        Record-only runs without a broker: positions to net against (e.g. the previous
        session's targets); default flat. Ignored when a broker is given.
    policy : OrderPolicy, optional
        Order type, limit offset, account and audit fields; default market orders.

    Returns
    -------
    ExecutionReport

    Raises
    ------
    BrokerError
        The broker could not report positions / working orders / fills, or a submit failed.
    OrderRunLocked
        Another submit run of the strategy is in progress.
    OrderError
        ``submit`` without a broker, or bad inputs (see :func:`plan_orders`).
    LedgerError
        The ledger cannot be read or written (e.g. locked by another process).

    Notes
    -----
    The ledger file stays open (``Ledger.hold``) for the run, so other processes wait for the
    write lock until it returns.
    """
    if submit and broker is None:
        raise OrderError("execute_orders: submit=True needs a broker (or run with submit=False)")
    kwargs = dict(
        ledger=ledger, broker=broker, limits=limits, point_sizes=point_sizes, strategy=strategy, submit=submit,
        run_id=run_id, assumed_positions=assumed_positions, policy=policy or OrderPolicy(),
    )
    if not submit:
        with ledger.hold():
            return _execute_orders(targets, reference_prices, _session(session), **kwargs)
    with order_run_lock(ledger, strategy), ledger.hold():  # one open of the DuckDB file for the whole run
        return _execute_orders(targets, reference_prices, _session(session), **kwargs)


def _circuit_breaker(ledger: Ledger, broker: Broker, limits: RiskLimits, state: TradingState) -> TradingState:
    """HALT (in the ledger) when the broker's daily P&L is beyond the loss limit."""
    daily_pnl = getattr(broker, "daily_pnl", None)
    if limits.max_daily_loss is None or daily_pnl is None or state is TradingState.HALTED:
        return state
    why = daily_loss_breached(daily_pnl(), limits)
    if why is None:
        return state
    ledger.set_trading_state(TradingState.HALTED, why, "circuit_breaker")
    notify(ledger, "circuit_breaker", "ERROR", "trading_state", f"trading HALTED: {why}",
           f"circuit_breaker:{pd.Timestamp.now(tz='UTC').date()}")
    return TradingState.HALTED


def _execute_orders(
    targets: pd.Series,
    reference_prices: pd.Series,
    session: pd.Timestamp,
    *,
    ledger: Ledger,
    broker: Broker | None,
    limits: RiskLimits,
    point_sizes: dict[str, float],
    strategy: str,
    submit: bool,
    run_id: str | None,
    assumed_positions: pd.Series | None,
    policy: OrderPolicy,
) -> ExecutionReport:
    mode = "submit" if submit else "record_only"
    counts = dict.fromkeys(
        ("planned", "unchanged", "recorded", "accepted", "denied", "sent", "filled", "rejected", "reconciled",
         "adopted", "resent", "fallbacks", "previewed"),
        0,
    )
    state = ledger.trading_state()
    prior = ledger.intents(session=session)
    gate = _GateContext(state, limits, point_sizes, policy)
    if submit:
        gate.state = state = _circuit_breaker(ledger, broker, limits, state)
        window = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=limits.order_window_seconds)
        gate.sent_in_window, gate.throttle = ledger.submitted_since(window), True
        gate.rejected = _rejected_in_session(prior)
        run = _SubmitRun(ledger, broker, gate, reference_prices, counts, run_id, policy)

    # 1. reconcile the session's open intents before anything new is planned
    actions: dict[str, str] = {}
    if submit:
        open_intents = prior[(prior["mode"] == "submit") & prior["status"].isin(OPEN_STATUSES)]
        actions = _reconcile(open_intents, run)
        actions.update(_complete_fallbacks(session, run))
        if actions:
            prior = ledger.intents(session=session)
            gate.rejected = _rejected_in_session(prior)

    # 2. positions: the broker's, failing closed; or the assumed ones of a record-only run
    if broker is not None:
        positions, working = _broker_positions(broker)
    else:
        positions, working = _as_series(assumed_positions, "assumed_positions"), pd.Series(dtype=float)

    # 3. plan the residual, 4. gate and write before sending
    plan = plan_orders(targets, positions, working, reference_prices, session, strategy, prior)
    counts["planned"] = len(plan)
    plan["order_type"] = policy.order_type
    plan["limit_price"] = policy.limit_prices(plan["quantity"].to_numpy(float), plan["reference_price"].to_numpy(float))
    verdicts = _gate(plan, state, limits, point_sizes, gate)
    plan["verdict"] = pd.array(["ACCEPTED" if v.accepted else "DENIED" for v in verdicts], dtype="str")
    plan["deny_reason"] = pd.array([v.reason for v in verdicts], dtype="str")
    unchanged = _unchanged(plan, prior, mode)
    counts["unchanged"] = int(unchanged.sum())
    plan = plan[~unchanged].reset_index(drop=True)
    accepted = (plan["verdict"] == "ACCEPTED").to_numpy()
    plan["status"] = np.where(accepted, "INTENT" if submit else "RECORDED", "DENIED")
    plan["mode"] = mode
    plan["run_id"] = run_id
    plan["account"] = policy.account
    plan["code_version"] = policy.code_version
    plan["input_hash"] = policy.input_hash
    ledger.record_intents(plan)
    counts.update(recorded=len(plan), accepted=int(accepted.sum()), denied=int((~accepted).sum()))
    actions.update(dict.fromkeys(plan["order_ref"], "new"))
    if submit:
        for r in plan[~accepted].itertuples(index=False):
            notify(
                ledger, "order_denied", "WARN", r.order_ref, f"{r.order_ref} denied by the pre-trade gate: {r.deny_reason}",
                f"order_denied:{r.order_ref}",
            )

    if not submit and broker is not None and policy.what_if:
        counts["previewed"] = _preview(plan[accepted], broker, ledger)

    # 5. send the accepted intents (already in the ledger); 6. market fallback of working limits
    if submit:
        for _, row in plan[accepted].iterrows():
            intent = OrderIntent.from_row(row)
            price = _fill_price(intent.instrument, reference_prices, intent.reference_price)
            _submit(broker, ledger, intent, price, counts, run_id)
        if policy.market_fallback_after is not None:
            sent_limits = bool(accepted.any()) and policy.order_type == "LMT"
            actions.update(_market_fallback(session, policy.market_fallback_after if sent_limits else 0.0, run))

    report = ledger.intents(session=session)
    report = report[report["order_ref"].isin(list(actions))].reset_index(drop=True)
    report["action"] = report["order_ref"].map(actions)
    return ExecutionReport(session=session, mode=mode, trading_state=state, intents=report, counts=counts)


def cancel_orders(session: Any, *, ledger: Ledger, broker: Broker, run_id: str | None = None) -> pd.DataFrame:
    """Cancel every open submitted intent of ``session`` at the broker, in any trading state.

    A cancel only removes risk, so the kill switch never blocks it (FIA 2015 §1.11: a kill
    switch disables new orders *and* cancels working ones; nautilus_trader lets cancels through
    when HALTED). Each answer is recorded like any broker answer (status CANCELLED, or FILLED
    if the order filled first).

    Returns
    -------
    DataFrame
        The session's intents after the cancels (``Ledger.intents`` columns).

    Raises
    ------
    BrokerError
        The broker could not be asked or refused the cancel.
    """
    counts = dict.fromkeys(("filled", "rejected"), 0)
    with ledger.hold():
        prior = ledger.intents(session=session)
        live = prior[(prior["mode"] == "submit") & prior["status"].isin(OPEN_STATUSES)]
        for ref in live["order_ref"]:
            outcome = broker.cancel(str(ref))
            if outcome is None:
                outcome = broker.lookup(str(ref))
            if outcome is not None:
                _record(ledger, outcome, run_id, counts)
        return ledger.intents(session=session)


def record_intents_without_sending(
    targets: pd.DataFrame,
    reference_prices: pd.DataFrame,
    sessions: pd.DatetimeIndex,
    *,
    ledger: Ledger,
    limits: RiskLimits,
    point_sizes: dict[str, float],
    strategy: str,
    run_id: str | None,
) -> pd.DataFrame:
    """Record-only intents for one or many sessions (a backfill, an older session, a dry run).

    Nothing is ever sent.

    For each session the position before is the previous session's target (flat before the
    first target), so the intents are the trades the system would have made. Every session is
    planned and gated as :func:`execute_orders` does with ``submit=False`` (same order_refs,
    same residual rounding, same "unchanged" idempotency rule, same verdicts), but all sessions
    at once: the residuals of the whole (session x instrument) frame in one array operation,
    the next seq and the "unchanged" test by one join against the ledger's intents of the
    range, the ledger read once and written in one transaction. Only the pre-trade gate runs
    per order (:func:`pipeline.risk.pre_trade_check`, a few microseconds each; no throttle and
    no earlier rejections in a record-only run, so each verdict depends on its order alone).

    Parameters
    ----------
    targets, reference_prices : DataFrame
        Index session, columns instrument; target positions (signed units, NaN = no target)
        and reference prices (price points) covering ``sessions`` and the session before.
    sessions : DatetimeIndex
        The sessions to record (each must be in ``targets.index``).
    ledger, limits, point_sizes, strategy, run_id
        As :func:`execute_orders`.

    Returns
    -------
    DataFrame
        The intents written (``PLAN_COLUMNS`` plus verdict, deny_reason, status, mode, run_id).

    Raises
    ------
    OrderError
        A session of ``sessions`` has no row in ``targets``, a target is infinite, or
        ``strategy`` / an instrument that trades contains ':'.
    """
    sessions = pd.DatetimeIndex(sessions)
    missing = sessions.difference(targets.index)
    if len(missing):
        raise OrderError(f"record_intents_without_sending: no target positions for {[str(d.date()) for d in missing[:5]]}")
    _check_field("strategy", strategy)
    columns = [*PLAN_COLUMNS, "verdict", "deny_reason", "status", "mode", "run_id"]
    state = ledger.trading_state()
    instruments = targets.columns.sort_values()
    wide = targets.reindex(columns=instruments).astype(float)
    t = wide.loc[sessions].to_numpy()
    if np.isinf(t).any():
        bad = sorted(set(instruments[np.isinf(t).any(axis=0)]))
        raise OrderError(f"record_intents_without_sending: infinite targets for {bad}")
    held = wide.shift(1).fillna(0.0).loc[sessions].to_numpy()  # the previous session's target
    with np.errstate(invalid="ignore"):
        residual = t - held
        whole = ~np.isnan(t) & (t == np.round(t))
        residual = np.where(whole, np.round(residual), residual)
        residual = np.where(np.abs(residual) >= _ZERO, residual, 0.0)
        keep = ~np.isnan(t) & (residual != 0)
    rows, cols = np.nonzero(keep)  # row-major: by session, then instrument (sorted), as plan_orders
    with ledger.hold():
        if not len(rows):
            return pd.DataFrame(columns=columns)
        for name in instruments[np.unique(cols)]:
            _check_field("instrument", str(name))
        day = np.asarray(sessions.strftime("%Y-%m-%d"), dtype=object)[rows]
        inst = np.asarray(instruments, dtype=object)[cols]
        plan = pd.DataFrame({"session": sessions[rows], "instrument": inst})
        prior = ledger.intents()
        prior = prior[prior["session"].isin(sessions)]
        seq = np.ones(len(plan), dtype=int)
        if len(prior):
            last = prior.groupby(["session", "instrument"])["seq"].max().rename("last_seq")
            seq += plan.join(last, on=["session", "instrument"])["last_seq"].fillna(0).to_numpy(dtype=int)
        qty = residual[rows, cols]
        prices = reference_prices.reindex(index=sessions, columns=instruments).to_numpy(dtype=float)
        refs = strategy + ":" + day + ":" + inst + ":" + seq.astype(str).astype(object)
        plan = pd.DataFrame(
            {
                "order_ref": pd.array(refs, dtype="str"),
                "strategy": strategy,
                "session": plan["session"].dt.normalize().dt.as_unit("s"),  # as _session gives
                "instrument": pd.array(inst, dtype="str"),
                "seq": seq.astype(int),
                "quantity": qty,
                "side": np.where(qty > 0, "BUY", "SELL"),
                "order_type": "MKT",
                "reference_price": prices[rows, cols],
                "target_position": t[rows, cols],
                "position_before": held[rows, cols],
            },
            columns=list(PLAN_COLUMNS),
        )
        verdicts = _gate(plan, state, limits, point_sizes)
        plan["verdict"] = pd.array(["ACCEPTED" if v.accepted else "DENIED" for v in verdicts], dtype="str")
        plan["deny_reason"] = pd.array([v.reason for v in verdicts], dtype="str")
        out = plan[~_unchanged_by_session(plan, prior, "record_only")].reset_index(drop=True)
        out["status"] = np.where(out["verdict"] == "ACCEPTED", "RECORDED", "DENIED")
        out["mode"] = "record_only"
        out["run_id"] = run_id
        if len(out):
            ledger.record_intents(out)
    return out


def _unchanged_by_session(plan: pd.DataFrame, prior: pd.DataFrame, mode: str) -> np.ndarray:
    """:func:`_unchanged` for a plan of many sessions: each planned order against the latest
    intent of its own (session, instrument) in ``mode``."""
    if plan.empty or prior.empty:
        return np.zeros(len(plan), dtype=bool)
    latest = prior[prior["mode"] == mode].sort_values("seq").groupby(["session", "instrument"]).tail(1)
    m = plan[["session", "instrument"]].merge(
        latest[["session", "instrument", "status", "target_position", "quantity", "verdict", "deny_reason"]],
        on=["session", "instrument"], how="left",
    )
    same = (
        m["status"].isin(["RECORDED", "DENIED"]).to_numpy()
        & np.isclose(m["target_position"].to_numpy(dtype=float), plan["target_position"].to_numpy(dtype=float))
        & np.isclose(m["quantity"].to_numpy(dtype=float), plan["quantity"].to_numpy(dtype=float))
        & (m["verdict"].to_numpy(dtype=object) == plan["verdict"].to_numpy(dtype=object))
        & (m["deny_reason"].fillna("").to_numpy(dtype=object) == plan["deny_reason"].fillna("").to_numpy(dtype=object))
    )
    return np.asarray(same, dtype=bool)
