"""The trading kernel: order references and intents, fills, broker answers, the kill-switch states,
and the :class:`Broker` protocol that every broker adapter offers the order path (positions,
working orders, submit, look-up).

Adapters fail closed (DESIGN rule 5; reliability.md §2): a broker that cannot answer raises
:class:`BrokerError`; it never returns an empty answer meaning "unknown", because an empty
position list read as "flat" produces ghost orders (nautilus_trader issue #4228).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import pandas as pd

#: IB paper-trading accounts start with these letters (IB reference notes, section 4).
PAPER_ACCOUNT_PREFIX = "DU"


class OrderError(ValueError):
    """Bad input to the order path (an order_ref, a target or a position); nothing was sent."""


class TradingState(str, Enum):
    """The kill switch (nautilus_trader ``TradingState``).

    ACTIVE: all orders pass to the limit checks. REDUCING: only orders that reduce the absolute
    position without crossing through zero. HALTED: no order at all.
    """

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


def session_day(session: Any) -> pd.Timestamp:
    """A session (str, date or Timestamp) as a tz-naive midnight Timestamp."""
    return pd.Timestamp(pd.Timestamp(session).date())


def check_ref_field(name: str, value: str) -> None:
    """Raise :class:`OrderError` unless ``value`` can be a field of an ``orderRef`` (non-empty, no ':')."""
    if not value or ":" in value:
        raise OrderError(f"order_ref field {name}={value!r} must be non-empty and contain no ':'")


def order_ref(strategy: str, session: Any, instrument: str, seq: int, contract: str | None = None) -> str:
    """The deterministic reference of an order: ``"carver:2022-12-28:AAPL:1"``, or with a dated
    futures contract ``"carver:2023-10-02:MCL:202312:1"`` (a calendar spread names both legs,
    ``"carver:2023-10-02:MCL:202312_202401:2"``, as pysystemtrade's spread contract ids do).

    Parameters
    ----------
    strategy : str
        ``BrokerConfig.strategy``; no ':'.
    session : date-like
        The session the order trades for (str, date or Timestamp).
    instrument : str
        Symbol; no ':'.
    seq : int
        1 for the first order of (session, instrument), then 2, 3, ... (>= 1), counted over all
        contracts of the instrument.
    contract : str, optional
        The contract month (``YYYYMM`` or ``YYYYMMDD``, as multiple prices label it) of a futures
        order, or ``PRICED_FORWARD`` for a calendar spread; None for stocks, FX and futures traded
        without roll parameters (the reference keeps its four fields).

    Raises
    ------
    OrderError
        A field contains ':' or is empty, or ``seq < 1``.
    """
    check_ref_field("strategy", strategy)
    check_ref_field("instrument", instrument)
    if int(seq) < 1 or int(seq) != seq:
        raise OrderError(f"order_ref: seq must be a whole number >= 1, got {seq!r}")
    day = session_day(session).date().isoformat()
    if contract is None:
        return f"{strategy}:{day}:{instrument}:{int(seq)}"
    check_ref_field("contract", contract)
    return f"{strategy}:{day}:{instrument}:{contract}:{int(seq)}"


@dataclass(frozen=True)
class OrderRef:
    """The fields of an order reference (see :func:`order_ref`); ``contract`` None for a reference
    of four fields."""

    strategy: str
    session: pd.Timestamp
    instrument: str
    seq: int
    contract: str | None = None


def parse_order_ref(ref: str) -> OrderRef:
    """Split ``"carver:2022-12-28:AAPL:1"`` (or ``"carver:2023-10-02:MCL:202312:1"``) into its
    fields (inverse of :func:`order_ref`).

    Raises
    ------
    OrderError
        ``ref`` does not have four or five ':'-separated fields, a valid date and a seq >= 1.
    """
    parts = ref.split(":")
    if len(parts) not in (4, 5):
        raise OrderError(f"order_ref {ref!r} is not 'strategy:YYYY-MM-DD:instrument[:contract]:seq'")
    strategy, day, instrument, *contract, seq = parts
    try:
        session = pd.Timestamp(day)
        n = int(seq)
    except ValueError as exc:
        raise OrderError(f"order_ref {ref!r}: bad date {day!r} or seq {seq!r}") from exc
    month = contract[0] if contract else None
    if order_ref(strategy, session, instrument, n, month) != ref:
        raise OrderError(f"order_ref {ref!r} is not in canonical form 'strategy:YYYY-MM-DD:instrument[:contract]:seq'")
    return OrderRef(strategy, session, instrument, n, month)


@dataclass(frozen=True)
class OrderIntent:
    """One order the system means to send (a row of the ledger's ``order_intents``).

    Quantities and positions are signed units (+ buy, - sell); prices in price points.

    Futures with roll parameters trade a dated contract: ``contract`` is its month (``YYYYMM`` or
    ``YYYYMMDD``, as multiple prices label it; None for stocks, FX and futures without rolls). A
    calendar spread (roll state ``Force``) has ``spread_contract`` too: ``quantity`` q sells q of
    ``contract`` (the priced month) and buys q of ``spread_contract`` (the forward), a negative q
    the reverse; its ``reference_price`` is the spread's price (forward - priced, may be <= 0) and
    ``contract_price`` the priced leg's price, so the forward leg is at ``contract_price +
    reference_price``.
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
    contract: str | None = None
    spread_contract: str | None = None
    contract_price: float | None = None

    @property
    def side(self) -> str:
        return "BUY" if self.quantity > 0 else "SELL"

    @property
    def is_spread(self) -> bool:
        """A calendar spread (two legs, one order)."""
        return self.spread_contract is not None

    @classmethod
    def from_row(cls, row: Any) -> OrderIntent:
        """Build from a row (mapping / Series) of :func:`plan_orders` or ``Ledger.intents``."""
        def optional(name: str) -> Any:
            value = row.get(name) if hasattr(row, "get") else None
            return value if value is not None and pd.notna(value) else None

        limit, account = optional("limit_price"), optional("account")
        contract, spread, leg = optional("contract"), optional("spread_contract"), optional("contract_price")
        return cls(
            order_ref=str(row["order_ref"]),
            strategy=str(row["strategy"]),
            session=session_day(row["session"]),
            instrument=str(row["instrument"]),
            seq=int(row["seq"]),
            quantity=float(row["quantity"]),
            reference_price=float(row["reference_price"]),
            target_position=float(row["target_position"]),
            position_before=float(row["position_before"]),
            order_type=str(row["order_type"]),
            limit_price=float(limit) if limit is not None else None,
            account=str(account) if account is not None else None,
            contract=str(contract) if contract is not None else None,
            spread_contract=str(spread) if spread is not None else None,
            contract_price=float(leg) if leg is not None else None,
        )



#: Columns of :meth:`Broker.working_orders` (an optional ``contract`` column gives each working
#: quantity's dated contract; a calendar spread is one row per leg).
WORKING_COLUMNS = ("order_ref", "instrument", "quantity")


class BrokerError(ValueError):
    """The broker did not answer, or answered something unusable; the run must stop."""


@dataclass(frozen=True)
class Fill:
    """One execution of an order (the paper broker fills an order in one execution; IB may
    execute it in several, each its own Fill).

    Attributes
    ----------
    fill_id : str
        Unique and deterministic per execution (the paper broker uses ``"paper:" + order_ref``,
        IB the ``execId``).
    order_ref : str
        The intent's reference (``strategy:session:instrument:seq``).
    broker : str
        The broker's ``name``.
    session : pd.Timestamp
        Session the order belongs to (midnight, tz-naive).
    instrument : str
        Symbol.
    quantity : float
        Signed units filled; + bought, - sold.
    price : float
        Average fill price in price points, slippage included.
    commission : float
        Commission in the instrument's currency (>= 0).
    slippage_cost : float
        ``|quantity| x slippage x point_size`` in the instrument's currency; already inside
        ``price``, recorded so costs can be split (not to be subtracted a second time).
    filled_at : pd.Timestamp
        Execution time, tz-aware UTC.
    perm_id : int or None
        The broker's permanent order id (IB ``permId``); None for the paper broker.
    contract : str or None
        The dated futures contract the execution traded (``YYYYMM`` or ``YYYYMMDD``; a calendar
        spread fills leg by leg, one Fill per leg); None for stocks, FX and futures without rolls.
    """

    fill_id: str
    order_ref: str
    broker: str
    session: pd.Timestamp
    instrument: str
    quantity: float
    price: float
    commission: float
    slippage_cost: float
    filled_at: pd.Timestamp
    perm_id: int | None = None
    contract: str | None = None


#: Order statuses a broker reports, in the ledger's vocabulary (``pipeline.store.ledger.INTENT_STATUSES``).
BROKER_STATUSES = ("SUBMITTED", "ACKNOWLEDGED", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REJECTED")
#: Of those, the ones after which the order can no longer trade.
FINAL_STATUSES = ("FILLED", "CANCELLED", "REJECTED")


@dataclass(frozen=True)
class BrokerOrder:
    """What the broker knows about one order, found by its ``order_ref``.

    Attributes
    ----------
    order_ref : str
        The intent's reference (``strategy:session:instrument:seq``), IB's ``orderRef``.
    status : str
        One of ``BROKER_STATUSES``: SUBMITTED (sent, not yet acknowledged), ACKNOWLEDGED (held
        by the broker, nothing filled), PARTIALLY_FILLED (working with fills), FILLED,
        CANCELLED (possibly after partial fills), REJECTED.
    fills : tuple of Fill
        Every execution of the order known to the broker.
    filled : float
        Signed units filled so far.
    remaining : float
        Signed units still working (0 once final).
    perm_id, order_id : int or None
        The broker's permanent id (IB ``permId``, stable across sessions) and its session
        order id (IB ``orderId``; may be reused after a gateway restart, never a key).
    reason : str or None
        Why it was rejected or cancelled, in the broker's words.
    """

    order_ref: str
    status: str
    fills: tuple[Fill, ...] = ()
    filled: float = 0.0
    remaining: float = 0.0
    perm_id: int | None = None
    order_id: int | None = None
    reason: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class OrderPreview:
    """What an order would do to the account, from the broker's what-if check (nothing sent).

    Attributes
    ----------
    order_ref : str
        The intent's reference.
    init_margin_change, maint_margin_change : float
        Change of the initial and maintenance margin requirement, in ``currency`` (NaN when the
        broker gives none).
    equity_with_loan_after : float
        The account's equity with loan value after the order (NaN when not given).
    commission : float
        The commission the order would pay, in ``currency`` (NaN when not given).
    currency : str
        Currency of the amounts.
    warning : str
        The broker's warning text ('' when none).
    """

    order_ref: str
    init_margin_change: float
    maint_margin_change: float
    equity_with_loan_after: float
    commission: float
    currency: str = ""
    warning: str = ""


@runtime_checkable
class Broker(Protocol):
    """The broker interface the order path needs (paper and IB adapters implement it)."""

    name: str

    def positions(self) -> pd.Series:
        """Signed position in units per instrument (index ``instrument``).

        An empty Series means the account is flat, and only that. Raises :class:`BrokerError`
        when positions cannot be read.

        A broker may also offer ``contract_positions()``: the same positions per (instrument,
        contract) (a MultiIndex Series; contract the month label of a futures instrument with roll
        parameters, else the instrument's symbol): two months of one future are two positions.
        The order path uses it when present (:func:`pipeline.execution.broker_io.broker_contract_positions`).
        """
        ...

    def working_orders(self) -> pd.DataFrame:
        """Orders sent but not yet (fully) filled: columns ``WORKING_COLUMNS``, quantity the
        signed remaining units. Raises :class:`BrokerError` when they cannot be read."""
        ...

    def submit(self, intent: OrderIntent, fill_price: float) -> BrokerOrder:
        """Send one order under ``intent.order_ref`` and return what the broker then knows of
        it. Sending an ``order_ref`` the broker already has must not create a second order
        (return the existing one). Raises :class:`BrokerError`, also when the outcome is
        unknown (a dropped connection after sending: the next run reconciles)."""
        ...

    def lookup(self, order_ref: str) -> BrokerOrder | None:
        """The order sent earlier under ``order_ref``, or None if the broker has none.
        Raises :class:`BrokerError` when the broker cannot be asked (never None for 'unknown')."""
        ...

    def cancel(self, order_ref: str) -> BrokerOrder | None:
        """Cancel the working order with ``order_ref``; None if there is none working.
        Raises :class:`BrokerError`."""
        ...


def empty_working_orders() -> pd.DataFrame:
    """An empty working-orders frame with the expected columns and dtypes."""
    return pd.DataFrame(
        {"order_ref": pd.Series(dtype="str"), "instrument": pd.Series(dtype="str"), "quantity": pd.Series(dtype=float)}
    )
