"""A protocol-level fake of TWS / IB Gateway for tests: the real ib_async client talks to it over TCP.

It speaks the text wire protocol at server version 178 (the version a current Gateway negotiates
with ib_async 2.1.0): the ``API\\0`` handshake, ``startApi`` -> ``managedAccounts`` +
``nextValidId`` + farm notices, answers to the six startup requests of ``IB.connect`` (positions,
open / completed orders, account updates, account updates multi, executions), contract details
(``reqContractDetails`` -> ``contractDetails`` + ``contractDetailsEnd``) and daily historical bars
(``reqHistoricalData`` -> one ``historicalData`` message). Layouts follow ib_async's
``client.py`` / ``decoder.py`` (see the project's IB reference notes).

Bars come from pandas frames the test registers per contract. A test can script the next
requests of a kind to be answered with an IB error, to drop the connection, or to get no answer
(optionally after an unsolicited notice such as 1100). Every wait is bounded: a connection idle
for ``idle_timeout`` seconds is closed, and the server stops itself after ``lifetime`` seconds.

Usage::

    with FakeTWS() as tws:
        tws.add(FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"), bars)
        ib.connect("127.0.0.1", tws.port, clientId=7, readonly=True)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pandas as pd

#: The only server version the fake speaks; ib_async 2.1.0 asks for v157..178.
SERVER_VERSION = 178
MIN_CLIENT_VERSION = 157
UNSET_DOUBLE = "1.7976931348623157E308"

#: Real TWS texts (IB reference, section 2.3).
NO_DATA_TEXT = "Historical Market Data Service error message:HMDS query returned no data: {sym}@{exch} {what}"
PACING_TEXT = "Historical Market Data Service error message:Historical data request pacing violation"
NO_SECDEF_TEXT = "No security definition has been found for the request"
CONNECTIVITY_LOST_TEXT = "Connectivity between IB and Trader Workstation has been lost."
CONNECTIVITY_RESTORED_TEXT = "Connectivity between IB and Trader Workstation has been restored - data maintained."
CONTFUT_END_TEXT = "Setting end date/time for continuous future security type is not allowed."

# ---------------------------------------------------------------------------------------------
# What a test registers and scripts


@dataclass
class FakeContract:
    """A contract the fake knows. ``sec_type`` is IB's (STK, CASH, CONTFUT, IND)."""

    symbol: str
    sec_type: str
    exchange: str
    currency: str
    con_id: int
    local_symbol: str = ""
    primary_exchange: str = ""
    trading_class: str = ""
    multiplier: str = ""
    last_trade: str = ""
    long_name: str = ""
    #: IANA zone of the exchange; the fake converts endDateTime to this zone's date.
    time_zone: str = "America/New_York"
    min_tick: float = 0.01


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


Action = Error | Drop | Silent


@dataclass
class _Script:
    action: Action
    remaining: int


@dataclass
class _Conn:
    writer: asyncio.StreamWriter
    client_id: int | None = None
    ready: bool = False
    received: list[list[str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Encoding


def encode(*fields: object) -> bytes:
    """One framed message: big-endian uint32 length, then NUL-terminated text fields."""
    body = b"".join(str(f).encode() + b"\0" for f in fields)
    return struct.pack(">I", len(body)) + body


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


def _as_utc(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


# ---------------------------------------------------------------------------------------------
# The server


class FakeTWS:
    """A fake TWS on 127.0.0.1 (free port), run on its own thread and event loop.

    Parameters
    ----------
    account : str
        The one managed (paper) account.
    now : Timestamp, optional
        The server's "now" (UTC) for ``endDateTime=''``; default the real time.
    idle_timeout : float
        Seconds a connection may stay silent before the fake closes it.
    lifetime : float
        Seconds after which the server stops by itself even if the test never calls ``stop``.
    """

    def __init__(
        self,
        account: str = "DU1234567",
        now: pd.Timestamp | None = None,
        next_order_id: int = 1,
        idle_timeout: float = 20.0,
        lifetime: float = 120.0,
    ):
        self.account = account
        self.now = _as_utc(now) if now is not None else None
        self.next_order_id = next_order_id
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime
        self.port: int = 0
        self._contracts: list[FakeContract] = []
        self._bars: dict[int, pd.DataFrame] = {}
        self._scripts: dict[str, deque[_Script]] = {"historical": deque(), "contract_details": deque()}
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

    def script(self, kind: str, action: Action, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``kind`` ("historical" or "contract_details") with ``action``."""
        if kind not in self._scripts:
            raise ValueError(f"unknown request kind {kind!r}; use 'historical' or 'contract_details'")
        with self._lock:
            self._scripts[kind].append(_Script(action, times))

    def requests(self, msg_id: int | None = None) -> list[list[str]]:
        """Every message received so far (fields, message id first), optionally of one id."""
        with self._lock:
            return [list(f) for f in self._log if msg_id is None or f[0] == str(msg_id)]

    def send_notice(self, code: int, text: str) -> None:
        """Send an unsolicited error/notice (reqId -1) to every connected client, e.g. 1100 / 1102."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._broadcast, encode(4, 2, -1, code, text, ""))

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

    def __enter__(self) -> "FakeTWS":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._start_error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.lifetime)
        except asyncio.TimeoutError:
            pass
        finally:
            server.close()
            with self._lock:
                conns = list(self._conns)
            for c in conns:
                c.writer.transport.abort()
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except asyncio.TimeoutError:
                pass

    # -- per connection -----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        with self._lock:
            self._conns.append(conn)
        try:
            if not await self._handshake(reader, conn):
                return
            for _ in range(100_000):  # bounded: a test sends far fewer messages
                fields = await self._read_msg(reader)
                if fields is None:
                    return
                with self._lock:
                    self._log.append(fields)
                self._dispatch(conn, fields)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.transport.abort()
            with self._lock:
                self._conns.remove(conn)

    async def _read_exactly(self, reader: asyncio.StreamReader, n: int) -> bytes | None:
        try:
            return await asyncio.wait_for(reader.readexactly(n), self.idle_timeout)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
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
        if await self._read_exactly(reader, 4) != b"API\0":
            return False
        fields = await self._read_msg(reader)
        if not fields:
            return False
        m = re.match(r"v(\d+)\.\.(\d+)", fields[0])
        # Refuse any other client range so an ib_async upgrade fails loudly, not silently.
        if not m or int(m.group(1)) > SERVER_VERSION or int(m.group(2)) != SERVER_VERSION:
            return False
        stamp = (self.now or pd.Timestamp.now(tz="UTC")).strftime("%Y%m%d %H:%M:%S")
        conn.writer.write(encode(SERVER_VERSION, f"{stamp} Greenwich Mean Time"))
        return True

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
        acct = self.account
        if msg == 71:  # startApi: version, clientId, optCapab
            conn.client_id = int(f[2])
            conn.ready = True
            self._send(conn, 15, 1, acct)
            self._send(conn, 9, 1, self.next_order_id)
            self._error(conn, -1, 2104, "Market data farm connection is OK:usfarm")
            self._error(conn, -1, 2106, "HMDS data farm connection is OK:ushmds")
            self._error(conn, -1, 2158, "Sec-def data farm connection is OK:secdefnj")
        elif msg == 61:  # reqPositions: none held
            self._send(conn, 62, 1)
        elif msg == 5:  # reqOpenOrders
            self._send(conn, 53, 1)
        elif msg == 99:  # reqCompletedOrders
            self._send(conn, 102)
        elif msg == 6:  # reqAccountUpdates(subscribe, account)
            if f[2] == "1":
                self._send(conn, 6, 2, "NetLiquidation", "1000000.00", "USD", acct)
                self._send(conn, 8, 1, "00:00")
                self._send(conn, 54, 1, acct)
        elif msg == 76:  # reqAccountUpdatesMulti(reqId, account, modelCode, ledgerAndNLV)
            self._send(conn, 73, 1, f[2], acct, "", "NetLiquidation", "1000000.00", "USD")
            self._send(conn, 74, 1, f[2])
        elif msg == 7:  # reqExecutions(reqId, filter...)
            self._send(conn, 55, 1, f[2])
        elif msg == 17:  # reqManagedAccts
            self._send(conn, 15, 1, acct)
        elif msg == 8:  # reqIds
            self._send(conn, 9, 1, self.next_order_id)
        elif msg == 49:  # reqCurrentTime
            self._send(conn, 49, 1, int((self.now or pd.Timestamp.now(tz="UTC")).timestamp()))
        elif msg == 9:
            self._contract_details(conn, f)
        elif msg == 20:
            self._historical(conn, f)
        # anything else (cancels 25/64/77, market data, ...) is ignored, as TWS does for no-ops

    # -- contract details ---------------------------------------------------------------------

    def _match(self, con_id: str, symbol: str, sec_type: str, exchange: str, currency: str) -> list[FakeContract]:
        with self._lock:
            contracts = list(self._contracts)
        if con_id not in ("", "0"):
            return [c for c in contracts if str(c.con_id) == con_id]
        return [
            c
            for c in contracts
            if c.symbol == symbol
            and (not sec_type or c.sec_type == sec_type)
            and (not currency or c.currency == currency)
            and (exchange in ("", "SMART") or c.exchange == exchange)
        ]

    def _contract_details(self, conn: _Conn, f: list[str]) -> None:
        # 9, 8, reqId, conId, symbol, secType, lastTrade, strike, right, multiplier, exchange,
        # primaryExchange, currency, localSymbol, tradingClass, includeExpired, secIdType, secId, issuerId
        req_id = f[2]
        action = self._next_script("contract_details")
        if action is not None:
            self._apply(conn, req_id, action)
            return
        found = self._match(f[3], f[4], f[5], f[10], f[12])
        if not found:
            self._error(conn, req_id, 200, NO_SECDEF_TEXT)
            return
        for c in found:
            self._send(
                conn, 10, req_id, c.symbol, c.sec_type, c.last_trade, "0", "", c.exchange,
                c.currency, c.local_symbol or c.symbol, c.trading_class or c.symbol, c.trading_class,
                c.con_id, c.min_tick, c.multiplier,
                "LMT,MKT", f"SMART,{c.exchange}", 1, 0, c.long_name or c.symbol, c.primary_exchange,
                c.last_trade[:6], "", "", "", c.time_zone, "", "", "", "",
                0,  # no secIds
                1, "", "", "26", c.last_trade, "COMMON" if c.sec_type == "STK" else "", "1", "1", "1",
            )  # fmt: skip
        self._send(conn, 52, 1, req_id)

    # -- historical bars ----------------------------------------------------------------------

    def _historical(self, conn: _Conn, f: list[str]) -> None:
        # 20, reqId, conId, symbol, secType, lastTrade, strike, right, multiplier, exchange,
        # primaryExchange, currency, localSymbol, tradingClass, includeExpired, endDateTime,
        # barSize, duration, useRTH, whatToShow, formatDate, keepUpToDate, chartOptions
        req_id = f[1]
        action = self._next_script("historical")
        if action is not None:
            self._apply(conn, req_id, action)
            return
        end_text, bar_size, duration, what = f[15], f[16], f[17], f[19]
        found = self._match(f[2], f[3], f[4], f[9], f[11])
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
        now = self.now or pd.Timestamp.now(tz="UTC")
        end = _parse_end(end_text, now)
        days = _duration_days(duration)
        if bar_size != "1 day" or end is None or days is None:
            self._error(conn, req_id, 321, f"Error validating request:-'bad bar size, end or duration'")
            return
        end_date = end.tz_convert(c.time_zone).tz_localize(None).normalize()
        first = end_date - pd.Timedelta(days=days - 1)
        with self._lock:
            bars = self._bars.get(c.con_id)
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
