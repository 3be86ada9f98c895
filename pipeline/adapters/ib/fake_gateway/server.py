"""A protocol-level fake of TWS / IB Gateway: the real ib_async client talks to it over TCP.

It speaks the text wire protocol at server version 178 (the version a current Gateway negotiates
with ib_async 2.1.0): the ``API\\0`` handshake (negotiated as a Gateway does, see below),
``startApi`` -> ``managedAccounts`` + ``nextValidId`` + farm notices (a client id already
connected gets error 326 and is closed), answers to the six startup requests of ``IB.connect``
(positions, open / completed orders, account updates, account updates multi, executions),
contract details (``reqContractDetails`` -> ``contractDetails`` + ``contractDetailsEnd``), daily
historical bars (``reqHistoricalData`` -> one ``historicalData`` message), and a simulated broker
(:mod:`.book`): ``placeOrder`` -> ``openOrder`` + ``orderStatus`` + ``execDetails`` +
``commissionReport`` + pushed ``position`` and ``updatePortfolio``; ``cancelOrder`` (202, or
10147 for an unknown order); ``reqOpenOrders`` / ``reqAllOpenOrders``, ``reqCompletedOrders``,
``reqExecutions``, ``reqPositions``, ``reqAccountSummary`` and ``reqPnL``; a what-if order
(``whatIfOrder``) is answered with its margin and commission and never booked. Layouts follow
ib_async's ``client.py`` / ``decoder.py``.

Handshake: the client sends ``API\\0`` then a framed ``v<min>..<max>`` (or ``v<version>``), maybe
followed by `` <connect options>`` (``+PACEAPI``). The fake answers min(client max,
:data:`SERVER_VERSION`) if that is within the client's range and at least
:data:`MIN_SERVER_VERSION` (both 178: the fake encodes only the 178 layouts), else closes the
connection, as TWS does with a client it cannot serve. So ib_async (v157..178) and IB's official
client ``ibapi`` 10.50 (v100..226) both get 178, a client offering only v200..226 is refused.

IB's official client at 178 (checked with ``ibapi-stable`` 10.50.2, tests/test_ib_official_client.py):
the same framing as ib_async (uint32 length + NUL-terminated text fields; the raw binary message
id and protobuf start at 201), and the same field layouts for every request the fake reads
(startApi, reqContractDetails, reqHistoricalData, placeOrder - 114 fields, orderRef at 26 and
whatIf at 84 -, reqPositions, reqExecutions). Only values of fields the fake ignores differ: an
unset strike is ``""`` (ib_async ``0.0``), openClose ``""`` (ib_async ``O``), and some unset order
numbers come as ``1.7976931348623157e+308`` / ``2147483647`` (ib_async ``""``). ibapi's decoder
reads the replies with their types and, for the short messages (``managedAccounts``,
``nextValidId``, ``*End``), checks the field count; the replies satisfy both as they are.

Orders fill at once at the contract's price (``set_price``, else the last bar's close) when
marketable; ``fill_ratio`` < 1 fills part of each order, which then rests or is cancelled
(``after_partial``); ``reject`` answers orders (all, or one orderRef) with error 201. The order
book outlives the server, so a restart (a new server given the old ``book``) keeps orders and
positions while order ids start again (IB's orderId reuse after a gateway restart).

A test (or a user rehearsing offline) can script the next requests of a kind to be answered
with an IB error, to drop the connection, to get no answer (``Silent``, optionally after an
unsolicited notice such as 1100: the time-out), or, for history, to be answered late; and
positions or executions to be answered with a lie (``Empty``: none at all; ``Omit``: all but
those of some contracts), the faults the order path must meet by stopping, not by trading.

Lying or failing broker answers, one switch each (all off by default):

* an answer that never comes: ``script(kind, Silent())``; an empty or incomplete positions or
  executions answer: ``script("positions" | "executions", Empty() | Omit(symbols))``;
* the same execution reported twice: ``repeat_executions`` (each execution's execDetails and
  commissionReport are sent that many times, live and in answers to reqExecutions);
* statuses out of order: ``filled_before_submitted`` (an order that fills at once is reported
  Filled first; its acknowledgement, Submitted with nothing filled, arrives last);
* a partial fill then a disconnect: ``drop_after_partial`` (the partial fill is reported, then
  the connection closes; the rest then rests or is cancelled, ``after_partial``, unheard);
* a fill reported after a cancel was acknowledged: ``fill_after_cancel`` (a fraction of the
  remaining quantity fills as the cancel arrives; the client hears Cancelled + 202 first and
  the execution only with its next request);
* an orderId sequence reset: a restart with the old ``book`` (``next_order_id`` starts again).

Dated futures (:mod:`.futures`, :mod:`.combos`): ``add_future`` lists the months of a future
(MCL, GC, ES built in) with their last trading days, from generated bars or pysystemtrade
multiple prices; contract details of a ``FUT`` without a month list every listed month (expired
ones with ``includeExpired``), with a month that month; bars are served per month; positions are
kept per conId; an order to a ``CONTFUT`` (or to an expired month) is refused with error 200; a
``BAG`` order fills leg by leg at each leg's price (``spreads_fill = False``: it never fills). With
a session clock (``session=``), ``advance`` moves it: only bars up to the current session are
served, and months whose last trading day passed expire (cash-settled positions are closed at the
final price, :meth:`FakeTWS.settlements`; a physically delivered position held on or after its
close-out date is listed by :meth:`FakeTWS.delivery_breaches`).

Every wait is bounded: a connection idle for ``idle_timeout`` seconds is
closed, and the server stops itself after ``lifetime`` seconds (None: runs until stopped).

Usage::

    with FakeTWS() as tws:
        tws.add(FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"), bars)
        ib.connect("127.0.0.1", tws.port, clientId=7, readonly=True)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self
from zoneinfo import ZoneInfo

import pandas as pd

from pipeline.adapters.ib.fake_gateway.book import (
    DeliveryBreach,
    FakeOrder,
    FakeSettlement,
    OrderBook,
    WhatIf,
    commission_fields,
    completed_order_fields,
    exec_details_fields,
    open_order_fields,
    order_status_fields,
    portfolio_fields,
    position_fields,
)
from pipeline.adapters.ib.fake_gateway.clock import SessionClock
from pipeline.adapters.ib.fake_gateway.combos import (
    combo_price,
    leg_action,
    parse_combo,
)
from pipeline.adapters.ib.fake_gateway.contract import FakeContract
from pipeline.adapters.ib.fake_gateway.futures import (
    FuturesListing,
    FuturesMonth,
    FutureSpec,
    contract_months,
    generated_bars,
    month_table,
    multiple_prices_bars,
)

#: The highest server version the fake speaks (its message layouts are those of 178, the version a
#: current Gateway negotiates with ib_async 2.1.0's v157..178 and with ibapi 10.50's v100..226).
SERVER_VERSION = 178
#: The lowest server version the fake agrees to: it encodes only the 178 layouts, so a client whose
#: highest version is below 178 is refused rather than answered with layouts it cannot decode.
MIN_SERVER_VERSION = 178
UNSET_DOUBLE = "1.7976931348623157E308"

#: Real TWS texts (IB reference, section 2.3).
NO_DATA_TEXT = "Historical Market Data Service error message:HMDS query returned no data: {sym}@{exch} {what}"
PACING_TEXT = "Historical Market Data Service error message:Historical data request pacing violation"
NO_SECDEF_TEXT = "No security definition has been found for the request"
CONNECTIVITY_LOST_TEXT = "Connectivity between IB and Trader Workstation has been lost."
CONNECTIVITY_RESTORED_TEXT = "Connectivity between IB and Trader Workstation has been restored - data maintained."
CONTFUT_END_TEXT = "Setting end date/time for continuous future security type is not allowed."
CLIENT_ID_IN_USE_TEXT = "Unable to connect as the client id is already in use. Retry with a unique client id."
REJECT_TEXT = "Order rejected - reason:{reason}"
CANCELLED_TEXT = "Order Canceled - reason:"
CANCEL_UNKNOWN_TEXT = "OrderId {order_id} that needs to be cancelled is not found."
DUPLICATE_ID_TEXT = "Duplicate order id"

#: Index of ``whatIf`` in a placeOrder message at version 178 (message id = index 0).
_WHAT_IF_FIELD = 84
#: Index of ``overridePercentageConstraints`` in a placeOrder message at version 178 (not a combo
#: order: after stockRangeUpper, before volatility; ib_async 2.1.0 ``Client.placeOrder``).
_OVERRIDE_PERCENTAGE_CONSTRAINTS_FIELD = 61

#: Request kinds a test can script (see :meth:`FakeTWS.script`), by message id.
SCRIPTABLE = {
    "historical": 20, "contract_details": 9, "place": 3, "cancel": 4, "positions": 61,
    "open_orders": 5, "all_open_orders": 16, "completed_orders": 99, "executions": 7,
    "account_summary": 62, "pnl": 92,
}  # fmt: skip

# ---------------------------------------------------------------------------------------------
# What a test registers and scripts


@dataclass(frozen=True)
class Error:
    """Answer the request with IB error ``code`` and ``text`` (``4,2,reqId,code,text,""``)."""

    code: int
    text: str


@dataclass(frozen=True)
class Drop:
    """Close the TCP connection (abort the transport) instead of answering."""


@dataclass(frozen=True)
class Silent:
    """Never answer; first send ``notice`` ``(code, text)`` with reqId -1 if given (e.g. 1100)."""

    notice: tuple[int, str] | None = None


@dataclass(frozen=True)
class Delay:
    """Answer as usual, but only after ``seconds`` (a slow data farm; historical requests)."""

    seconds: float


@dataclass(frozen=True)
class Empty:
    """A lying answer: for "positions", ``positionEnd`` with no position, whatever the account
    holds; for "executions", ``execDetailsEnd`` with no execution, whatever was executed."""


@dataclass(frozen=True)
class Omit:
    """A lying answer: every position (for "positions") or every execution (for "executions")
    but those of the contracts ``symbols`` (IB symbols, e.g. ``"ES"``, ``"EUR"``)."""

    symbols: tuple[str, ...]


Action = Error | Drop | Silent | Delay | Empty | Omit


@dataclass
class _Script:
    action: Action
    remaining: int
    skip: int = 0


@dataclass
class _Conn:
    writer: asyncio.StreamWriter
    client_id: int | None = None
    ready: bool = False
    positions_sub: bool = False
    account_sub: bool = False
    received: deque = field(default_factory=deque)  # arrival times of the last second's messages
    #: Messages held back until the client's next request (``fill_after_cancel``).
    pending: list[tuple[object, ...]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Encoding


def encode(*fields: object) -> bytes:
    """One framed message: big-endian uint32 length, then NUL-terminated text fields."""
    body = b"".join(str(f).encode() + b"\0" for f in fields)
    return struct.pack(">I", len(body)) + body


def negotiate(offer: str) -> int | None:
    """The server version agreed with a client offering ``offer`` (``"v100..226"``, ``"v178"``,
    either maybe followed by connect options such as ``" +PACEAPI"``), or None to refuse it."""
    m = re.fullmatch(r"v(\d+)(?:\.\.(\d+))?(?:\s.*)?", offer.strip(), flags=re.DOTALL)
    if not m:
        return None
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    version = min(high, SERVER_VERSION)
    return version if low <= version and version >= MIN_SERVER_VERSION else None


def _num(x: float) -> str:
    # repr of a float round-trips exactly through float(), so the client sees the served value.
    return repr(float(x))


def _duration_days(duration: str) -> int | None:
    m = re.fullmatch(r"\s*(\d+)\s*([DWMY])\s*", duration)
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return n * {"D": 1, "W": 7, "M": 31, "Y": 366}[unit]


def _parse_end(text: str, now: pd.Timestamp) -> pd.Timestamp | None:
    """endDateTime as a UTC timestamp: '' (now), 'yyyymmdd-HH:MM:SS' (UTC), 'yyyymmdd HH:MM:SS TZ'."""
    text = text.strip()
    if not text:
        return now
    try:
        if re.fullmatch(r"\d{8}-\d{2}:\d{2}:\d{2}", text):
            return pd.Timestamp(dt.datetime.strptime(text, "%Y%m%d-%H:%M:%S"), tz="UTC")
        m = re.fullmatch(r"(\d{8}) (\d{2}:\d{2}:\d{2}) (\S+)", text)
        if m:
            naive = dt.datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H:%M:%S")
            return pd.Timestamp(naive.replace(tzinfo=ZoneInfo(m.group(3)))).tz_convert("UTC")
    except (ValueError, KeyError):
        return None
    return None


def _combo_shift(f: list[str]) -> int:
    """How far a placeOrder's fields after ``hidden`` moved: a BAG order's combo block, else 0."""
    if len(f) > 4 and f[4] == "BAG":
        try:
            return parse_combo(f)[1]
        except ValueError:
            return 0
    return 0


def _is_what_if(f: list[str]) -> bool:
    """Whether a placeOrder message asks a what-if (``whatIf`` at 84, after a BAG's combo block)."""
    at = _WHAT_IF_FIELD + _combo_shift(f)
    return len(f) > at and f[at] == "1"


def _as_utc(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


# ---------------------------------------------------------------------------------------------
# The server


class FakeTWS:
    """A fake TWS on 127.0.0.1, run on its own thread and event loop.

    Parameters
    ----------
    account : str
        The one managed account (``DU...`` is a paper account).
    now : Timestamp, optional
        The server's "now" (UTC) for ``endDateTime=''`` and execution times; default real time.
    next_order_id : int
        ``nextValidId`` sent to every client (a restarted gateway may start again at 1).
    idle_timeout : float
        Seconds a connection may stay silent before the fake closes it.
    lifetime : float or None
        Seconds after which the server stops by itself even if nobody calls ``stop``; None
        runs until :meth:`stop` (the ``fake-gateway`` command).
    book : OrderBook, optional
        The broker state; pass the book of a stopped fake to simulate a gateway restart.
    port : int
        TCP port on 127.0.0.1; 0 picks a free one.
    net_liquidation : float
        Account value reported by account updates and the account summary (USD).
    session : date-like, optional
        Start a session clock (CME Globex sessions) at this session: bars after it are not served,
        "now" is 23:00 UTC of it unless ``now`` is given, and :meth:`advance` moves it (expiring
        futures months). None: no clock (every bar is served).
    """

    def __init__(
        self,
        account: str = "DU1234567",
        now: pd.Timestamp | None = None,
        next_order_id: int = 1,
        idle_timeout: float = 20.0,
        lifetime: float | None = 120.0,
        book: OrderBook | None = None,
        port: int = 0,
        net_liquidation: float = 1_000_000.0,
        session: object | None = None,
    ):
        self.account = account
        self.now = _as_utc(now) if now is not None else None
        self.next_order_id = next_order_id
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime
        self.port: int = port
        self.book = book if book is not None else OrderBook()
        self.net_liquidation = net_liquidation
        #: Fraction of each order filled at once (1 = all); the rest rests or is cancelled.
        self.fill_ratio = 1.0
        #: What happens to the unfilled part of a partly filled order: "rest" or "cancel" (DAY expiry).
        self.after_partial = "cancel"
        #: Commission per execution: max(commission_min, commission_per_unit x shares), USD.
        self.commission_per_unit = 0.005
        self.commission_min = 1.0
        #: Daily P&L reported by reqPnL (USD).
        self.daily_pnl = 0.0
        #: TWS answers more than this many API messages a second from one client with error 100
        #: (the message is dropped); every such answer is counted in ``rate_violations``.
        self.max_messages_per_second = 50
        self.rate_violations = 0
        #: What-if orders: initial and maintenance margin as fractions of the notional.
        self.init_margin_rate = 0.5
        self.maint_margin_rate = 0.25
        #: The what-if orders received (never booked).
        self.what_ifs: list[FakeOrder] = []
        #: Called with each order booked from a placeOrder, before any reply is sent (fault hooks).
        self.on_place: Callable[[FakeOrder], None] | None = None
        #: The same execution reported twice (or more): each execution's execDetails and
        #: commissionReport are sent this many times, live and in answers to reqExecutions.
        self.repeat_executions = 1
        #: Statuses out of order: an order that fills at once is reported Filled (execution,
        #: openOrder and orderStatus Filled, commission) before its acknowledgement, whose
        #: openOrder and orderStatus Submitted (nothing filled, all remaining) arrive last.
        self.filled_before_submitted = False
        #: A partial fill then a disconnect: after the replies to a partly filled order (the
        #: execution, status Submitted with the filled quantity) the connection is closed; the
        #: unfilled part then rests or is cancelled at the broker (``after_partial``), unheard.
        self.drop_after_partial = False
        #: A fill reported after a cancel was acknowledged: when a cancel reaches a working order,
        #: this fraction of its remaining quantity fills at once (at the limit, else the price;
        #: the exchange filled it before the cancel reached it). The client hears the cancel
        #: (orderStatus Cancelled with the earlier filled quantity, error 202) first and the
        #: execution (execDetails, commissionReport, position) only with its next request. The
        #: order stays Cancelled at the broker (Filled if nothing remains). 0: off.
        self.fill_after_cancel = 0.0
        #: Combo (BAG) orders fill leg by leg when marketable; False: they rest Submitted, never filling.
        self.spreads_fill = True
        #: The current session (None: no clock); see :meth:`advance`.
        self.sessions: SessionClock | None = SessionClock(session) if session is not None else None
        #: The dated futures months served (see :meth:`add_future`).
        self.futures = FuturesListing()
        self.book.epoch += 1
        self._epoch = self.book.epoch
        self._contracts: list[FakeContract] = []
        self._bars: dict[int, pd.DataFrame] = {}
        self._prices: dict[str, float] = {}
        self._rejects: dict[str, str] = {}
        self._scripts: dict[str, deque[_Script]] = {k: deque() for k in SCRIPTABLE}
        self._lock = threading.Lock()
        self._log: list[list[str]] = []
        self._conns: list[_Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    # -- configuration (any thread) ------------------------------------------------------------

    def add(self, contract: FakeContract, bars: pd.DataFrame | None = None) -> None:
        """Register ``contract`` and its daily bars.

        ``bars`` has columns ``session`` (dates), ``open, high, low, close``, optional ``volume``
        (default 0), ``wap`` (default the close) and ``bar_count`` (default 1).
        """
        with self._lock:
            self._contracts.append(contract)
        if bars is not None:
            self.set_bars(contract.con_id, bars)

    def set_bars(self, con_id: int, bars: pd.DataFrame) -> None:
        """Replace the bars served for the contract ``con_id`` (same columns as :meth:`add`)."""
        b = bars.copy()
        b["session"] = pd.to_datetime(b["session"]).dt.normalize()
        with self._lock:
            self._bars[con_id] = b.sort_values("session", ignore_index=True)

    def add_future(self, spec: FutureSpec, first: str | None = None, last: str | None = None,
                   multiple: pd.DataFrame | None = None) -> list[FuturesMonth]:
        """List the months of the future ``spec`` with their daily bars; returns them by last trading day.

        Either generated months ``first`` .. ``last`` (``YYYY-MM``) of ``spec.cycle`` with generated bars
        (:func:`~pipeline.adapters.ib.fake_gateway.futures.generated_bars`), or, given ``multiple``
        (pysystemtrade multiple prices, as :func:`pipeline.futures.read_multiple_prices` returns them),
        every contract in it with its bars from the PRICE / FORWARD / CARRY columns
        (:func:`~pipeline.adapters.ib.fake_gateway.futures.multiple_prices_bars`). Each month gets a
        stable made-up conId and the last trading day of ``spec``'s exchange rule.

        Raises
        ------
        ValueError
            Neither ``first`` and ``last`` nor ``multiple`` given, or bad multiple prices.
        """
        if multiple is not None:
            bars = multiple_prices_bars(multiple)
            table = month_table(spec, bars["contract"].unique())
            bars = bars.merge(table[["contract", "con_id"]], on="contract")
        elif first is not None and last is not None:
            table = month_table(spec, contract_months(spec, first, last))
            bars = generated_bars(spec, table)
        else:
            raise ValueError(f"add_future({spec.symbol}): give first and last months, or multiple prices")
        months = self.futures.add(spec, table)
        by_month = dict(tuple(bars.groupby("con_id")))
        for m in months:
            self.add(m.fake_contract(), by_month.get(m.con_id))
        return months

    def set_price(self, symbol: str, price: float) -> None:
        """The price at which orders in ``symbol`` fill (default: the last bar's close, else 100)."""
        with self._lock:
            self._prices[symbol] = float(price)

    def reject(self, reason: str, order_ref: str | None = None) -> None:
        """Reject (error 201) every new order, or only those with ``order_ref``."""
        with self._lock:
            self._rejects[order_ref or "*"] = reason

    def script(self, kind: str, action: Action, times: int = 1, skip: int = 0) -> None:
        """Answer ``times`` requests of ``kind`` with ``action``, after letting ``skip`` through.

        Kinds: the keys of :data:`SCRIPTABLE` ("historical", "contract_details", "place",
        "positions", "executions", ...). For "place" the order is booked at the broker first
        (it exists and fills) and then the reply is replaced: ``Drop`` closes the connection
        before the client hears anything, ``Silent`` never answers, ``Error`` sends the error.
        "cancel" likewise: the order is cancelled at the broker, then the reply is replaced.
        ``Empty`` and ``Omit`` are lies of "positions" and "executions" answers; ``Silent`` on
        any kind is an answer that never comes (the client's request times out).
        """
        if kind not in self._scripts:
            raise ValueError(f"unknown request kind {kind!r}; use one of {sorted(SCRIPTABLE)}")
        with self._lock:
            self._scripts[kind].append(_Script(action, times, skip))

    def clear_scripts(self, kind: str) -> None:
        """Forget every scripted answer of ``kind`` still pending: the gateway tells the truth again."""
        with self._lock:
            self._scripts[kind].clear()

    def requests(self, msg_id: int | None = None) -> list[list[str]]:
        """Every message received so far (fields, message id first), optionally of one id."""
        with self._lock:
            return [list(f) for f in self._log if msg_id is None or f[0] == str(msg_id)]

    def placed(self, order_ref: str | None = None) -> list[list[str]]:
        """The placeOrder messages received (optionally those with ``order_ref``, field 26),
        what-if orders left out (see :attr:`what_ifs`)."""
        return [
            f for f in self.requests(3)
            if (order_ref is None or (len(f) > 26 and f[26] == order_ref)) and not _is_what_if(f)
        ]  # fmt: skip

    def order_contracts(self) -> list[list[str]]:
        """The contract (12 fields: conId, symbol, secType, lastTrade, ...) of every order received,
        refused ones included (an order to a ``CONTFUT`` is refused, never booked)."""
        return [f[2:14] for f in self.placed()]

    def orders(self, order_ref: str | None = None) -> list[FakeOrder]:
        """The broker's orders (all gateway sessions of the book), optionally with ``order_ref``."""
        with self.book.lock:
            return [o for o in self.book.orders if order_ref is None or o.order_ref == order_ref]

    def position(self, symbol: str) -> float:
        """The broker's position in ``symbol`` (units, signed)."""
        with self.book.lock:
            return sum(p.quantity for p in self.book.positions.values() if p.contract[1] == symbol)

    def positions_by_contract(self) -> dict[int, float]:
        """The broker's non-zero positions by conId (units, signed): two months of one future are two."""
        with self.book.lock:
            return {c: p.quantity for c, p in self.book.positions.items() if p.quantity != 0}

    def settlements(self) -> list[FakeSettlement]:
        """Positions closed at expiry (cash settlement, or delivery of a physically delivered one)."""
        with self.book.lock:
            return list(self.book.settlements)

    def delivery_breaches(self) -> list[DeliveryBreach]:
        """Positions in a physically delivered month held on or after its close-out date (one per
        month, at the first session seen so); a rehearsal of rolls asserts there are none."""
        with self.book.lock:
            return list(self.book.breaches)

    @property
    def session(self) -> pd.Timestamp:
        """The current session: the clock's, else today's date in Chicago (by the fake's now)."""
        if self.sessions is not None:
            return self.sessions.session
        return self._now().tz_convert("America/Chicago").tz_localize(None).normalize()

    def advance(self, sessions: int = 1, to: object | None = None) -> pd.Timestamp:
        """Move the session clock ``sessions`` sessions forward (or to the session on or after ``to``)
        and expire what that passes: see :meth:`_expire`. Returns the new session.

        Raises
        ------
        RuntimeError
            The fake has no session clock (construct it with ``session=``).
        """
        if self.sessions is None:
            raise RuntimeError("this fake has no session clock; construct it with FakeTWS(session=...)")
        new = self.sessions.advance_to(to) if to is not None else self.sessions.advance(sessions)
        pushed = self._expire(new)
        loop = self._loop
        if loop is not None and pushed:
            for con_id in pushed:
                loop.call_soon_threadsafe(self._push_position, con_id, None)
        return new

    def _expire(self, session: pd.Timestamp) -> list[int]:
        """At ``session``: close every position in a month whose last trading day has passed at its
        final price (the close of its last bar up to that day; a physically delivered one is also a
        delivery breach), and record a breach for each physically delivered position held on or
        after its close-out date. Returns the conIds whose positions changed."""
        changed = []
        with self.book.lock:
            for m in self.futures.expired(session):
                p = self.book.positions.get(m.con_id)
                if p is None or p.quantity == 0:
                    continue
                self._note_breach(m, p.quantity, session)
                final = self._price("", m.con_id, m.last_trade)
                kind = "cash" if m.spec.settlement == "cash" else "delivery"
                self.book.settlements.append(FakeSettlement(m.con_id, list(p.contract), p.quantity, final,
                                                            m.last_trade.strftime("%Y%m%d"), kind))
                self.book.move_position(m.con_id, p.contract, -p.quantity, final)
                changed.append(m.con_id)
            self._check_deliveries(session)
        return changed

    def _check_deliveries(self, session: pd.Timestamp) -> None:
        """Record a breach for each physically delivered position held on or after its close-out."""
        with self.book.lock:
            for con_id, p in self.book.positions.items():
                m = self.futures.get(con_id)
                if m is not None and p.quantity != 0 and session >= m.close_out:
                    self._note_breach(m, p.quantity, session)

    def _note_breach(self, m: FuturesMonth, quantity: float, session: pd.Timestamp) -> None:
        if m.spec.settlement != "physical" or any(b.con_id == m.con_id for b in self.book.breaches):
            return
        self.book.breaches.append(DeliveryBreach(m.con_id, m.local_symbol, quantity,
                                                 m.close_out.strftime("%Y%m%d"), session.strftime("%Y%m%d")))

    def send_notice(self, code: int, text: str) -> None:
        """Send an unsolicited error/notice (reqId -1) to every connected client, e.g. 1100 / 1102."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._broadcast, encode(4, 2, -1, code, text, ""))

    def drop_all(self) -> None:
        """Abort every client connection now (the gateway vanishing mid-session)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._abort_all)

    def _abort_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.writer.transport.abort()

    @property
    def connections(self) -> int:
        """Number of client connections currently open."""
        with self._lock:
            return sum(1 for c in self._conns if not c.writer.is_closing())

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> int:
        """Start serving; return the port."""
        self._thread = threading.Thread(target=self._run, name="fake-tws", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("fake TWS did not start within 5 s")
        if self._start_error is not None:
            raise RuntimeError(f"fake TWS failed to start: {self._start_error!r}")
        return self.port

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and stop the server thread (bounded by ``timeout``)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # loop already closed by the lifetime limit
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self) -> None:
        """Block until the server stops (lifetime reached or :meth:`stop` from another thread)."""
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - any failure, surfaced by start()
            self._start_error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.lifetime)
        except TimeoutError:
            pass
        finally:
            server.close()
            self._abort_all()
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                pass

    # -- per connection -----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        with self._lock:
            self._conns.append(conn)
        try:
            if not await self._handshake(reader, conn):
                return
            for _ in range(1_000_000):  # bounded; a session sends far fewer messages
                fields = await self._read_msg(reader)
                if fields is None:
                    return
                with self._lock:
                    self._log.append(fields)
                if self._over_message_rate(conn):
                    continue
                self._flush_pending(conn)
                self._dispatch(conn, fields)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception:  # a bug in the fake must show, not look like a dropped connection
            logging.getLogger(__name__).exception("fake TWS: failed to handle a message; closing the connection")
            return
        finally:
            writer.transport.abort()
            with self._lock:
                self._conns.remove(conn)

    def _over_message_rate(self, conn: _Conn) -> bool:
        """Error 100 and drop the message when the client sent more than the message rate (TWS)."""
        now = time.monotonic()
        conn.received.append(now)
        while conn.received and conn.received[0] <= now - 1.0:
            conn.received.popleft()
        if len(conn.received) <= self.max_messages_per_second:
            return False
        with self._lock:
            self.rate_violations += 1
        self._error(conn, -1, 100, f"Max rate of messages per second has been exceeded:max={self.max_messages_per_second} "
                                   f"rec={len(conn.received)} (1)")
        return True

    async def _read_exactly(self, reader: asyncio.StreamReader, n: int) -> bytes | None:
        try:
            return await asyncio.wait_for(reader.readexactly(n), self.idle_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _read_msg(self, reader: asyncio.StreamReader) -> list[str] | None:
        head = await self._read_exactly(reader, 4)
        if head is None:
            return None
        (size,) = struct.unpack(">I", head)
        if size > 1_000_000:
            return None
        body = await self._read_exactly(reader, size)
        if body is None:
            return None
        fields = body.decode(errors="replace").split("\0")
        if fields and fields[-1] == "":
            fields.pop()
        return fields

    async def _handshake(self, reader: asyncio.StreamReader, conn: _Conn) -> bool:
        """``API\\0`` + ``v<min>..<max>[ <options>]`` (or ``v<version>``): answer the version both
        sides speak, min(client max, :data:`SERVER_VERSION`), if it is within the client's range and
        at least :data:`MIN_SERVER_VERSION`; else close the connection, as TWS does."""
        if await self._read_exactly(reader, 4) != b"API\0":
            return False
        fields = await self._read_msg(reader)
        version = negotiate(fields[0]) if fields else None
        if version is None:
            return False
        conn.writer.write(encode(version, f"{self._now().strftime('%Y%m%d %H:%M:%S')} Greenwich Mean Time"))
        return True

    def _now(self) -> pd.Timestamp:
        if self.now is not None:
            return self.now
        if self.sessions is not None:  # after the close of the current session, in UTC
            return self.sessions.session.tz_localize("UTC") + pd.Timedelta(hours=23)
        return pd.Timestamp.now(tz="UTC")

    def _send(self, conn: _Conn, *fields: object) -> None:
        if not conn.writer.is_closing():
            conn.writer.write(encode(*fields))

    def _broadcast(self, data: bytes) -> None:
        with self._lock:
            conns = [c for c in self._conns if c.ready]
        for c in conns:
            if not c.writer.is_closing():
                c.writer.write(data)

    def _error(self, conn: _Conn, req_id: int | str, code: int, text: str) -> None:
        self._send(conn, 4, 2, req_id, code, text, "")

    def _next_script(self, kind: str) -> Action | None:
        with self._lock:
            q = self._scripts[kind]
            if not q:
                return None
            s = q[0]
            if s.skip > 0:
                s.skip -= 1
                return None
            s.remaining -= 1
            if s.remaining <= 0:
                q.popleft()
            return s.action

    def _apply(self, conn: _Conn, req_id: str, action: Action) -> None:
        if isinstance(action, Error):
            self._error(conn, req_id, action.code, action.text)
        elif isinstance(action, Drop):
            conn.writer.transport.abort()
        elif isinstance(action, Silent) and action.notice is not None:
            self._error(conn, -1, action.notice[0], action.notice[1])

    def _dispatch(self, conn: _Conn, f: list[str]) -> None:
        msg = int(f[0]) if f and f[0].isdigit() else -1
        kind = next((k for k, v in SCRIPTABLE.items() if v == msg), None)
        if kind is not None and kind not in ("historical", "contract_details", "place", "cancel"):
            action = self._next_script(kind)
            if isinstance(action, (Empty, Omit)) and msg in (61, 7):
                only = () if isinstance(action, Empty) else None
                omit = action.symbols if isinstance(action, Omit) else ()
                if msg == 61:
                    self._positions(conn, only, omit)
                else:
                    self._executions(conn, f, only, omit)
                return
            if action is not None:
                req_id = {7: f[2] if len(f) > 2 else -1, 62: f[2] if len(f) > 2 else -1, 92: f[1] if len(f) > 1 else -1}.get(msg, -1)
                self._apply(conn, req_id, action)
                return
        acct = self.account
        if msg == 71:  # startApi: version, clientId, optCapab
            self._start_api(conn, int(f[2]))
        elif msg == 61:  # reqPositions: the account's positions, then positionEnd; a subscription
            self._positions(conn)
        elif msg == 64:  # cancelPositions
            conn.positions_sub = False
        elif msg in (5, 16):  # reqOpenOrders (this client's) / reqAllOpenOrders (every client's)
            with self.book.lock:
                live = [o for o in self.book.orders if not o.done and (msg == 16 or o.client_id == conn.client_id)]
                for o in live:
                    self._send(conn, 5, *open_order_fields(o))
                    self._send(conn, 3, *order_status_fields(o))
            self._send(conn, 53, 1)
        elif msg == 99:  # reqCompletedOrders(apiOnly)
            with self.book.lock:
                for o in [o for o in self.book.orders if o.done]:
                    self._send(conn, 101, *completed_order_fields(o))
            self._send(conn, 102)
        elif msg == 6:  # reqAccountUpdates(subscribe, account)
            conn.account_sub = f[2] == "1"
            if conn.account_sub:
                self._send(conn, 6, 2, "NetLiquidation", f"{self.net_liquidation:.2f}", "USD", acct)
                with self.book.lock:
                    for p in [p for p in self.book.positions.values() if p.quantity != 0]:
                        self._send(conn, 7, *portfolio_fields(acct, p, self._price(p.contract[1], p.con_id)))
                self._send(conn, 8, 1, self._now().strftime("%H:%M"))
                self._send(conn, 54, 1, acct)
        elif msg == 76:  # reqAccountUpdatesMulti(reqId, account, modelCode, ledgerAndNLV)
            self._send(conn, 73, 1, f[2], acct, "", "NetLiquidation", f"{self.net_liquidation:.2f}", "USD")
            self._send(conn, 74, 1, f[2])
        elif msg == 62:  # reqAccountSummary(reqId, group, tags)
            for tag, value in (("AccountType", "INDIVIDUAL"), ("NetLiquidation", f"{self.net_liquidation:.2f}")):
                self._send(conn, 63, 1, f[2], acct, tag, value, "USD" if tag != "AccountType" else "")
            self._send(conn, 64, 1, f[2])
        elif msg == 92:  # reqPnL(reqId, account, modelCode)
            self._send(conn, 94, f[1], repr(float(self.daily_pnl)), "0.0", "0.0")
        elif msg == 7:  # reqExecutions(reqId, clientId, account, time, symbol, secType, exchange, side)
            self._executions(conn, f)
        elif msg == 3:
            self._place(conn, f)
        elif msg == 4:  # cancelOrder(version, orderId, manualCancelOrderTime)
            self._cancel(conn, int(f[2]))
        elif msg == 58:  # reqGlobalCancel
            with self.book.lock:
                live = [o for o in self.book.orders if not o.done]
            for o in live:
                self._cancel_order(o, conn)
        elif msg == 17:  # reqManagedAccts
            self._send(conn, 15, 1, acct)
        elif msg == 8:  # reqIds
            self._send(conn, 9, 1, self.next_order_id)
        elif msg == 49:  # reqCurrentTime
            self._send(conn, 49, 1, int(self._now().timestamp()))
        elif msg == 9:
            self._contract_details(conn, f)
        elif msg == 20:
            self._historical(conn, f)
        # anything else (cancels 25/63/77, market data, ...) is ignored, as TWS does for no-ops

    def _positions(self, conn: _Conn, only: tuple[str, ...] | None = None, omit: tuple[str, ...] = ()) -> None:
        """Answer ``reqPositions``: the account's positions (those of ``only`` if given, none of
        ``omit``), then ``positionEnd``; the session is subscribed to position updates."""
        conn.positions_sub = True
        with self.book.lock:
            held = [p for p in self.book.positions.values() if p.quantity != 0
                    and (only is None or p.contract[1] in only) and p.contract[1] not in omit]
            for p in held:
                self._send(conn, 61, *position_fields(self.account, p))
        self._send(conn, 62, 1)

    def _start_api(self, conn: _Conn, client_id: int) -> None:
        with self._lock:
            taken = any(c is not conn and c.ready and c.client_id == client_id for c in self._conns)
        if taken:  # TWS: error 326, then closes the socket
            self._error(conn, -1, 326, CLIENT_ID_IN_USE_TEXT)
            conn.writer.close()
            return
        conn.client_id = client_id
        conn.ready = True
        self._send(conn, 15, 1, self.account)
        self._send(conn, 9, 1, self.next_order_id)
        self._error(conn, -1, 2104, "Market data farm connection is OK:usfarm")
        self._error(conn, -1, 2106, "HMDS data farm connection is OK:ushmds")
        self._error(conn, -1, 2158, "Sec-def data farm connection is OK:secdefnj")

    # -- orders -------------------------------------------------------------------------------

    def _price(self, symbol: str, con_id: int, session: pd.Timestamp | None = None) -> float:
        """The price orders in ``symbol`` / ``con_id`` fill at: ``set_price``'s, else the close of the
        contract's last bar up to ``session`` (default: the current session, with a clock), else 100."""
        with self._lock:
            if symbol in self._prices:
                return self._prices[symbol]
            bars = self._bars.get(con_id)
        until = session if session is not None else (self.sessions.session if self.sessions is not None else None)
        if bars is not None and until is not None:
            bars = bars[bars["session"] <= until]
        if bars is not None and len(bars):
            return float(bars["close"].iloc[-1])
        return 100.0

    def _exec_time(self) -> str:
        return self._now().strftime("%Y%m%d %H:%M:%S") + " UTC"

    def _place(self, conn: _Conn, f: list[str]) -> None:
        # 3, orderId, <12 contract>, secIdType, secId, action, totalQuantity, orderType, lmtPrice,
        # auxPrice, tif, ocaGroup, account, openClose, origin, orderRef, transmit, ...
        if len(f) < 27:
            self._error(conn, -1, 321, "Error validating request:-'placeOrder has too few fields'")
            return
        order_id, client_id = int(f[1]), int(conn.client_id or 0)
        if f[4] == "CONTFUT":  # a continuous future is for data only: never an order's contract
            self._error(conn, order_id, 200, NO_SECDEF_TEXT)
            return
        legs, shift = [], 0
        if f[4] == "BAG":
            try:
                legs, shift = parse_combo(f)
            except ValueError as exc:
                self._error(conn, order_id, 321, f"Error validating request:-'{exc}'")
                return
        if _is_what_if(f):
            self._what_if(conn, f)
            return
        existing = self.book.find_open(client_id, order_id, self._epoch)
        if existing is not None:  # the id of a working order: TWS refuses a second order under it
            self._error(conn, order_id, 103, DUPLICATE_ID_TEXT)
            return
        contract = self._order_contract(f[2:14])
        if contract is None or any(self._leg_contract(leg.con_id) is None for leg in legs):
            self._error(conn, order_id, 200, NO_SECDEF_TEXT)  # an unknown or expired month
            return
        override_at = _OVERRIDE_PERCENTAGE_CONSTRAINTS_FIELD + shift
        o = FakeOrder(
            perm_id=self.book.new_perm_id(), order_id=order_id, client_id=client_id, epoch=self._epoch,
            contract=contract, action=f[16], quantity=float(f[17]), order_type=f[18],
            lmt_price=f[19], tif=f[21] or "DAY", account=f[23] or self.account, order_ref=f[26],
            override_percentage_constraints=len(f) > override_at and f[override_at] == "1", legs=legs,
        )  # fmt: skip
        with self._lock:
            reject = self._rejects.get(o.order_ref, self._rejects.get("*"))
        with self.book.lock:
            self.book.orders.append(o)
        if self.on_place is not None:
            self.on_place(o)
        action = self._next_script("place")
        replies = [] if action is not None else None
        if reject is not None:
            o.status, o.reason, o.completed_time = "Cancelled", REJECT_TEXT.format(reason=reject), self._exec_time()
            self._out(conn, replies, 4, 2, order_id, 201, o.reason, "")
            self._out(conn, replies, 3, *order_status_fields(o))
        else:
            o.status = "Submitted"
            acknowledgement = [(5, *open_order_fields(o)), (3, *order_status_fields(o))]  # as of now
            if not self.filled_before_submitted:
                for m in acknowledgement:
                    self._out(conn, replies, *m)
            if o.legs:
                self._fill_combo(o, conn, replies)
            else:
                self._try_fill(o, conn, replies)
            if self.filled_before_submitted:  # the stale Submitted arrives after the fill
                for m in acknowledgement:
                    self._out(conn, replies, *m)
        if action is not None:
            self._apply(conn, str(order_id), action)

    def _order_contract(self, sent: list[str]) -> list[str] | None:
        """The contract an order books: a dated month the fake lists, by conId or by symbol and month,
        becomes its full contract (positions are kept per conId); None for such a month that has
        expired; any other contract as sent."""
        if sent[2] != "FUT":
            return list(sent)
        found = [c for c in self._match(sent[0], sent[1], "FUT", sent[7], sent[9], sent[3], sent[10])
                 if self.futures.get(c.con_id) is not None]
        if len(found) != 1:
            return list(sent)
        m = self.futures.get(found[0].con_id)
        return None if m.last_trade < self.session else found[0].fields()

    def _leg_contract(self, con_id: int) -> list[str] | None:
        """The contract of a combo leg: a registered contract (a month not expired), else None."""
        with self._lock:
            known = [c for c in self._contracts if c.con_id == con_id]
        m = self.futures.get(con_id)
        if not known or (m is not None and m.last_trade < self.session):
            return None
        return known[0].fields()

    def _fill_combo(self, o: FakeOrder, conn: _Conn, replies: list | None) -> None:
        """Fill a marketable combo order leg by leg, each leg at its own price: an execDetails per
        leg naming the leg's contract, the combo's openOrder and orderStatus (filled, at the combo
        price), a commissionReport per leg, and each leg's position pushed. Nothing happens while
        ``spreads_fill`` is False (the order rests Submitted) or a limit is not marketable."""
        if not self.spreads_fill:
            return
        prices = {leg.con_id: self._price("", leg.con_id) for leg in o.legs}
        net = combo_price(o.legs, prices.__getitem__)
        if o.order_type == "LMT":
            limit = float(o.lmt_price or "nan")
            if not ((o.action == "BUY" and limit >= net) or (o.action == "SELL" and limit <= net)):
                return
        time_ = self._exec_time()
        executions = []
        for leg in o.legs:  # a combo has a few legs
            shares = o.quantity * leg.ratio
            commission = max(self.commission_min, self.commission_per_unit * shares)
            ex = self.book.apply_leg_fill(o, self._leg_contract(leg.con_id), leg_action(o.action, leg), shares,
                                          prices[leg.con_id], time_, commission)
            executions.append(ex)
            for _ in range(max(1, self.repeat_executions)):
                self._out(conn, replies, 11, *exec_details_fields(-1, o, ex))
        with self.book.lock:
            o.filled, o.avg_price, o.last_price = o.quantity, net, net
            o.status, o.completed_time = "Filled", time_
        self._out(conn, replies, 5, *open_order_fields(o))
        self._out(conn, replies, 3, *order_status_fields(o))
        for ex in executions:
            for _ in range(max(1, self.repeat_executions)):
                self._out(conn, replies, 59, *commission_fields(ex, o.contract[9] or "USD"))
        for leg in o.legs:
            self._push_position(leg.con_id, conn if replies is not None else None)
        self._check_deliveries(self.session)

    def _what_if(self, conn: _Conn, f: list[str]) -> None:
        """Answer a what-if order: nothing is booked; the margin and commission it would take.

        Initial margin ``init_margin_rate`` and maintenance margin ``maint_margin_rate`` of the
        notional (|units| x price x multiplier), before (the positions held) and the change
        (this order); the commission as for a fill.
        """
        o = FakeOrder(
            perm_id=0, order_id=int(f[1]), client_id=int(conn.client_id or 0), epoch=self._epoch,
            contract=list(f[2:14]), action=f[16], quantity=float(f[17]), order_type=f[18], lmt_price=f[19],
            tif=f[21] or "DAY", account=f[23] or self.account, order_ref=f[26], status="PreSubmitted",
        )  # fmt: skip
        with self._lock:
            self.what_ifs.append(o)
        with self.book.lock:
            held = sum(
                abs(p.quantity) * self._price(p.contract[1], p.con_id) * float(p.contract[6] or 1)
                for p in self.book.positions.values()
            )
        notional = o.quantity * self._price(o.contract[1], o.con_id) * float(o.contract[6] or 1)
        answer = WhatIf(
            init_before=self.init_margin_rate * held, maint_before=self.maint_margin_rate * held,
            equity_before=self.net_liquidation, init_change=self.init_margin_rate * notional,
            maint_change=self.maint_margin_rate * notional,
            commission=max(self.commission_min, self.commission_per_unit * o.quantity),
            currency=o.contract[9] or "USD",
        )  # fmt: skip
        self._send(conn, 5, *open_order_fields(o, answer))

    def _out(self, conn: _Conn, replies: list | None, *fields: object) -> None:
        """Send a reply now, or hold it back when a scripted fault replaces the replies."""
        if replies is None:
            self._send(conn, *fields)
        else:
            replies.append(fields)

    def _try_fill(self, o: FakeOrder, conn: _Conn, replies: list | None) -> None:
        price = self._price(o.contract[1], o.con_id)
        if o.order_type == "LMT":
            limit = float(o.lmt_price or "nan")
            marketable = (o.action == "BUY" and limit >= price) or (o.action == "SELL" and limit <= price)
            if not marketable:
                return
        qty = o.quantity * min(max(self.fill_ratio, 0.0), 1.0)
        qty = math.floor(qty) if float(o.quantity).is_integer() else qty
        if qty > 0:
            commission = max(self.commission_min, self.commission_per_unit * qty)
            ex = self.book.apply_fill(o, qty, price, self._exec_time(), commission)
            for _ in range(max(1, self.repeat_executions)):
                self._out(conn, replies, 11, *exec_details_fields(-1, o, ex))
        drop = self.drop_after_partial and qty > 0 and o.remaining > 0 and replies is None
        if o.remaining <= 0:
            o.status = "Filled"
        elif self.after_partial == "cancel" and not drop:
            o.status = "Cancelled"
        if o.done:
            o.completed_time = self._exec_time()
        self._out(conn, replies, 5, *open_order_fields(o))
        self._out(conn, replies, 3, *order_status_fields(o))
        if qty > 0:
            for _ in range(max(1, self.repeat_executions)):
                self._out(conn, replies, 59, *commission_fields(ex, o.contract[9] or "USD"))
            self._push_position(o.con_id, conn if replies is not None else None)
            self._check_deliveries(self.session)
        if drop:  # the client heard the partial fill; now it loses the gateway
            conn.writer.close()  # graceful: what was written is delivered first
            if self.after_partial == "cancel":  # the rest expires at the broker, unheard
                o.status, o.completed_time = "Cancelled", self._exec_time()

    def _push_position(self, con_id: int, skip: _Conn | None) -> None:
        """Stream the new position to every subscribed session (positions and portfolio)."""
        with self.book.lock:
            p = self.book.positions[con_id]
            pos_msg = encode(61, *position_fields(self.account, p))
            port_msg = encode(7, *portfolio_fields(self.account, p, self._price(p.contract[1], con_id)))
        with self._lock:
            conns = [c for c in self._conns if c.ready and c is not skip]
        for c in conns:
            if not c.writer.is_closing():
                if c.positions_sub:
                    c.writer.write(pos_msg)
                if c.account_sub:
                    c.writer.write(port_msg)

    def _cancel(self, conn: _Conn, order_id: int) -> None:
        action = self._next_script("cancel")
        o = self.book.find_open(int(conn.client_id or 0), order_id, self._epoch)
        if o is None:
            self._error(conn, order_id, 10147, CANCEL_UNKNOWN_TEXT.format(order_id=order_id))
        elif action is None:
            self._cancel_order(o, conn)
            self._fill_after_cancel(o, conn)
        else:  # cancelled at the broker; the client hears what the script says instead
            self._cancel_order(o, None)
            self._fill_after_cancel(o, conn)
        if action is not None:
            self._apply(conn, str(order_id), action)

    def _fill_after_cancel(self, o: FakeOrder, conn: _Conn) -> None:
        """``fill_after_cancel``: book a fill of the cancelled order now; hold its report back
        until the client's next request (other sessions get the position at once)."""
        qty = o.remaining * min(max(self.fill_after_cancel, 0.0), 1.0)
        qty = math.floor(qty) if float(o.quantity).is_integer() else qty
        if qty <= 0:
            return
        price = float(o.lmt_price) if o.order_type == "LMT" and o.lmt_price else self._price(o.contract[1], o.con_id)
        commission = max(self.commission_min, self.commission_per_unit * qty)
        ex = self.book.apply_fill(o, qty, price, self._exec_time(), commission)
        if o.remaining <= 0:
            o.status = "Filled"
        for _ in range(max(1, self.repeat_executions)):
            conn.pending.append((11, *exec_details_fields(-1, o, ex)))
            conn.pending.append((59, *commission_fields(ex, o.contract[9] or "USD")))
        conn.pending.append(("position", o.con_id))
        self._push_position(o.con_id, conn)

    def _flush_pending(self, conn: _Conn) -> None:
        """Send the messages held back for this connection (a late fill report), in order."""
        pending, conn.pending = conn.pending, []
        for m in pending:
            if m[0] == "position":
                with self.book.lock:
                    p = self.book.positions[m[1]]
                    fields = position_fields(self.account, p)
                if conn.positions_sub:
                    self._send(conn, 61, *fields)
            else:
                self._send(conn, *m)

    def _cancel_order(self, o: FakeOrder, conn: _Conn | None) -> None:
        o.status, o.completed_time = "Cancelled", self._exec_time()
        if conn is not None:
            self._send(conn, 3, *order_status_fields(o))
            self._error(conn, o.order_id, 202, CANCELLED_TEXT)

    def _executions(self, conn: _Conn, f: list[str], only: tuple[str, ...] | None = None,
                    omit: tuple[str, ...] = ()) -> None:
        """Answer ``reqExecutions``: every execution of the book (of the client asked for, 0: all),
        those of contracts ``only`` if given and none of ``omit``, each ``repeat_executions``
        times, then ``execDetailsEnd``."""
        req_id, client_filter = f[2], int(f[3] or 0)
        with self.book.lock:
            rows = [
                (o, ex) for o in self.book.orders for ex in o.executions
                if client_filter in (0, o.client_id)
                and (only is None or o.contract[1] in only) and o.contract[1] not in omit
            ]  # fmt: skip
            for o, ex in rows:
                for _ in range(max(1, self.repeat_executions)):
                    self._send(conn, 11, *exec_details_fields(req_id, o, ex))
                    self._send(conn, 59, *commission_fields(ex, o.contract[9] or "USD"))
        self._send(conn, 55, 1, req_id)

    # -- contract details ---------------------------------------------------------------------

    def _match(self, con_id: str, symbol: str, sec_type: str, exchange: str, currency: str,
               last_trade: str = "", local_symbol: str = "", include_expired: bool = True) -> list[FakeContract]:
        """The contracts a request names: by conId, else by symbol, secType, exchange, currency and, if
        given, ``last_trade`` (``YYYYMM``: the contract month; ``YYYYMMDD``: the last trading day) and
        local symbol. Futures months the fake does not list at the current session are left out
        (expired ones are kept with ``include_expired``, for two years). A ``CONTFUT`` of a listed
        future resolves to its front month (secType kept ``CONTFUT``), as IB does."""
        with self._lock:
            contracts = list(self._contracts)
        if sec_type == "CONTFUT" and self.futures.of(symbol):
            front = self.futures.front(symbol, self.session)
            return [dataclasses.replace(front.fake_contract(), sec_type="CONTFUT")] if front is not None else []
        if con_id not in ("", "0"):
            found = [c for c in contracts if str(c.con_id) == con_id]
        else:
            found = [
                c
                for c in contracts
                if c.symbol == symbol
                and (not sec_type or c.sec_type == sec_type)
                and (not currency or c.currency == currency)
                and (exchange in ("", "SMART") or c.exchange == exchange)
                and (not last_trade or (c.month if len(last_trade) == 6 else c.last_trade) == last_trade)
                and (not local_symbol or c.local_symbol == local_symbol)
            ]
        session = self.session
        return [c for c in found if self.futures.visible(c.con_id, session, include_expired)]

    def _contract_details(self, conn: _Conn, f: list[str]) -> None:
        # 9, 8, reqId, conId, symbol, secType, lastTrade, strike, right, multiplier, exchange,
        # primaryExchange, currency, localSymbol, tradingClass, includeExpired, secIdType, secId, issuerId
        req_id = f[2]
        action = self._next_script("contract_details")
        if action is not None:
            self._apply(conn, req_id, action)
            return
        found = self._match(f[3], f[4], f[5], f[10], f[12], f[6], f[13], include_expired=f[15] == "1")
        if not found:
            self._error(conn, req_id, 200, NO_SECDEF_TEXT)
            return
        for c in found:
            self._send(
                conn, 10, req_id, c.symbol, c.sec_type, c.last_trade, "0", "", c.exchange,
                c.currency, c.local_symbol or c.symbol, c.trading_class or c.symbol, c.trading_class,
                c.con_id, c.min_tick, c.multiplier,
                "LMT,MKT", f"SMART,{c.exchange}", 1, 0, c.long_name or c.symbol, c.primary_exchange,
                c.month, "", "", "", c.time_zone, "", "", "", "",
                0,  # no secIds
                1, "", "", "26", c.expiration, "COMMON" if c.sec_type == "STK" else "", "1", "1", "1",
            )  # fmt: skip
        self._send(conn, 52, 1, req_id)

    # -- historical bars ----------------------------------------------------------------------

    def _contfut_bars(self, symbol: str) -> pd.DataFrame | None:
        """A continuous future's bars: for a listed future, each month's bars from the day after the
        previous month's last trading day to its own (front months, not adjusted); else the bars
        registered under the CONTFUT contract's conId."""
        months = self.futures.of(symbol)
        if not months:
            found = [c for c in self._contracts if c.symbol == symbol and c.sec_type == "CONTFUT"]
            return self._bars.get(found[0].con_id) if found else None
        starts = [pd.Timestamp.min, *[m.last_trade for m in months[:-1]]]
        parts = [b[(b["session"] > start) & (b["session"] <= m.last_trade)]
                 for m, start in zip(months, starts, strict=True) if (b := self._bars.get(m.con_id)) is not None]
        return pd.concat(parts, ignore_index=True) if parts else None

    def _historical(self, conn: _Conn, f: list[str]) -> None:
        # 20, reqId, conId, symbol, secType, lastTrade, strike, right, multiplier, exchange,
        # primaryExchange, currency, localSymbol, tradingClass, includeExpired, endDateTime,
        # barSize, duration, useRTH, whatToShow, formatDate, keepUpToDate, chartOptions
        action = self._next_script("historical")
        if isinstance(action, Delay):
            self._loop.call_later(action.seconds, self._historical_answer, conn, f)
        elif action is not None:
            self._apply(conn, f[1], action)
        else:
            self._historical_answer(conn, f)

    def _historical_answer(self, conn: _Conn, f: list[str]) -> None:
        req_id = f[1]
        end_text, bar_size, duration, what = f[15], f[16], f[17], f[19]
        found = self._match(f[2], f[3], f[4], f[9], f[11], f[5], f[12], include_expired=f[14] == "1")
        if len(found) != 1:
            self._error(conn, req_id, 200, NO_SECDEF_TEXT)
            return
        c = found[0]
        if c.sec_type == "CONTFUT" and end_text.strip():
            self._error(conn, req_id, 10339, CONTFUT_END_TEXT)
            return
        if c.sec_type == "CASH" and what in ("TRADES", "ADJUSTED_LAST"):
            self._error(
                conn, req_id, 162,
                f"Historical Market Data Service error message:No historical market data for "
                f"{c.symbol}/CASH@FXSUBPIP Last 1d",
            )  # fmt: skip
            return
        end = _parse_end(end_text, self._now())
        days = _duration_days(duration)
        if bar_size != "1 day" or end is None or days is None:
            self._error(conn, req_id, 321, "Error validating request:-'bad bar size, end or duration'")
            return
        end_date = end.tz_convert(c.time_zone).tz_localize(None).normalize()
        first = end_date - pd.Timedelta(days=days - 1)
        if self.sessions is not None:  # nothing after the current session exists yet
            end_date = min(end_date, self.sessions.session)
        with self._lock:
            bars = self._contfut_bars(c.symbol) if c.sec_type == "CONTFUT" else self._bars.get(c.con_id)
        sel = (
            bars[(bars["session"] >= first) & (bars["session"] <= end_date)]
            if bars is not None
            else pd.DataFrame()
        )
        if sel.empty:
            pretty = {"TRADES": "Trades", "MIDPOINT": "Midpoint"}.get(what, what)
            self._error(conn, req_id, 162, NO_DATA_TEXT.format(sym=c.symbol, exch=c.exchange, what=pretty))
            return
        quoted = what in ("MIDPOINT", "BID", "ASK", "BID_ASK")
        out: list[object] = []
        for row in sel.itertuples(index=False):  # a reply is one message; rows are few in tests
            volume = -1 if quoted else getattr(row, "volume", 0)
            wap = -1 if quoted else getattr(row, "wap", row.close)
            count = -1 if quoted else int(getattr(row, "bar_count", 1))
            out += [
                row.session.strftime("%Y%m%d"), _num(row.open), _num(row.high), _num(row.low),
                _num(row.close), _num(volume), _num(wap), count,
            ]  # fmt: skip
        fmt = "%Y%m%d %H:%M:%S"
        start_str = f"{first.strftime(fmt)} {c.time_zone}"
        end_str = f"{end.tz_convert(c.time_zone).strftime(fmt)} {c.time_zone}"
        self._send(conn, 17, req_id, start_str, end_str, len(sel), *out)
