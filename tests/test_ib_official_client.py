"""The fake gateway driven by IB's official Python client (``ibapi-stable``), unmodified.

ibapi 10.50 offers server versions v100..226; the fake answers 178 (the highest both speak) and
must then be understood by IB's own decoder, which reads every field with its type, while its
requests at 178 must be understood by the fake. The official client's ``run()`` loop runs on a
thread; every wait below is bounded, so a fake that stops answering fails the test, not hangs it.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

ibapi = pytest.importorskip("ibapi")  # test extra: ibapi-stable
from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.execution import ExecutionFilter
from ibapi.order import Order
from ibapi.server_versions import MAX_CLIENT_VER, MIN_CLIENT_VER
from ibapi.wrapper import EWrapper

from pipeline.adapters.ib.fake_gateway import FakeContract, FakeTWS
from pipeline.adapters.ib.fake_gateway.server import SERVER_VERSION, encode, negotiate
from pipeline.adapters.sources import SampleSource
from pipeline.cli.fake_gateway import fake_contract
from pipeline.config import Instrument

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "DU1234567"
LAST = pd.Timestamp("2022-12-28")  # the bundled sample's last session
NOW = pd.Timestamp("2022-12-28 22:00", tz="UTC")  # 17:00 New York: that session is final
ORDER_REF = "carver:2022-12-28:AAPL:1"
FARM_NOTICES = {2104, 2106, 2158}
WAIT = 10.0  # seconds any single answer may take


def sample_bars() -> pd.DataFrame:
    """AAPL's daily bars of the bundled sample (closes only: open/high/low/volume filled in)."""
    bars = SampleSource().fetch(["AAPL"], pd.Timestamp("2021-06-01"), LAST)
    for col in ("open", "high", "low"):
        bars[col] = bars[col].fillna(bars["close"])
    bars["volume"] = bars["volume"].fillna(0.0)
    return bars


class App(EWrapper, EClient):
    """The official client and a wrapper recording every callback the steps need."""

    def __init__(self) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, wrapper=self)
        self.cond = threading.Condition()
        self.next_id: int | None = None
        self.accounts: list[str] = []
        self.errors: list[tuple[int, int, str]] = []
        self.details: dict[int, list] = {}
        self.details_end: set[int] = set()
        self.bars: dict[int, list] = {}
        self.bars_end: set[int] = set()
        self.statuses: list[tuple[int, str, Decimal]] = []
        self.executions: list[tuple[int, Contract, object]] = []
        self.executions_end: set[int] = set()
        self.commissions: list = []
        self.positions: list[tuple[str, Contract, Decimal, float]] = []
        self.positions_end = 0
        self.thread: threading.Thread | None = None

    def _note(self, fn) -> None:
        with self.cond:
            fn()
            self.cond.notify_all()

    def wait_for(self, predicate, what: str, timeout: float = WAIT) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"no {what} within {timeout} s; errors: {self.errors}")

    # -- EWrapper callbacks (called on the run() thread) --------------------------------------

    def nextValidId(self, orderId: int):
        self._note(lambda: setattr(self, "next_id", orderId))

    def managedAccounts(self, accountsList: str):
        self._note(lambda: self.accounts.extend(a for a in accountsList.split(",") if a))

    def error(self, reqId, errorTime, errorCode, errorString, advancedOrderRejectJson=""):
        self._note(lambda: self.errors.append((reqId, errorCode, errorString)))

    def contractDetails(self, reqId, contractDetails):
        self._note(lambda: self.details.setdefault(reqId, []).append(contractDetails))

    def contractDetailsEnd(self, reqId):
        self._note(lambda: self.details_end.add(reqId))

    def historicalData(self, reqId, bar):
        self._note(lambda: self.bars.setdefault(reqId, []).append(bar))

    def historicalDataEnd(self, reqId, start, end):
        self._note(lambda: self.bars_end.add(reqId))

    def orderStatus(self, orderId, status, filled, remaining, avgFillPrice, permId, parentId, lastFillPrice,
                    clientId, whyHeld, mktCapPrice):
        self._note(lambda: self.statuses.append((orderId, status, filled)))

    def execDetails(self, reqId, contract, execution):
        self._note(lambda: self.executions.append((reqId, contract, execution)))

    def execDetailsEnd(self, reqId):
        self._note(lambda: self.executions_end.add(reqId))

    def commissionAndFeesReport(self, commissionAndFeesReport):
        self._note(lambda: self.commissions.append(commissionAndFeesReport))

    def position(self, account, contract, position, avgCost):
        self._note(lambda: self.positions.append((account, contract, position, avgCost)))

    def positionEnd(self):
        self._note(lambda: setattr(self, "positions_end", self.positions_end + 1))

    # -- session ------------------------------------------------------------------------------

    def start(self, port: int, client_id: int) -> None:
        """Connect (the handshake blocks inside ``connect``; bounded by a thread join), start
        ``run()`` on a thread, and wait for ``nextValidId`` and ``managedAccounts``."""
        connecting = threading.Thread(target=self.connect, args=("127.0.0.1", port, client_id), daemon=True)
        connecting.start()
        connecting.join(WAIT)
        assert not connecting.is_alive(), "the handshake did not complete"
        assert self.isConnected(), f"the official client did not connect; errors: {self.errors}"
        self.thread = threading.Thread(target=self.run, name="ibapi-run", daemon=True)
        self.thread.start()
        self.wait_for(lambda: self.next_id is not None and self.accounts, "nextValidId + managedAccounts")

    def stop(self) -> None:
        self.disconnect()
        if self.thread is not None:
            self.thread.join(WAIT)
            assert not self.thread.is_alive(), "the run() loop did not end"


def stock(con_id: int = 0) -> Contract:
    c = Contract()
    c.conId, c.symbol, c.secType, c.exchange, c.currency = con_id, "AAPL", "STK", "SMART", "USD"
    return c


def unexpected(app: App) -> list:
    """Errors other than the farm notices (a decoding failure shows up here as well)."""
    return [e for e in app.errors if e[1] not in FARM_NOTICES]


@pytest.fixture
def fake():
    with FakeTWS(now=NOW) as f:
        f.add(FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"), sample_bars())
        yield f


def test_the_official_client_negotiates_178_and_trades_end_to_end(fake):
    app = App()
    app.start(fake.port, client_id=21)
    try:
        # handshake: ibapi offered its whole range, the fake answered the highest it speaks
        assert (MIN_CLIENT_VER, MAX_CLIENT_VER) == (100, 226)
        assert app.serverVersion() == SERVER_VERSION == 178
        assert app.accounts == [ACCOUNT] and app.next_id == 1
        assert [r[:3] for r in fake.requests(71)] == [["71", "2", "21"]]  # startApi: version, clientId, optCapab

        # contract details of a stock given by symbol
        app.reqContractDetails(7, stock())
        app.wait_for(lambda: 7 in app.details_end, "contractDetailsEnd")
        [cd] = app.details[7]
        assert (cd.contract.conId, cd.contract.symbol, cd.contract.secType) == (265598, "AAPL", "STK")
        assert (cd.contract.primaryExchange, cd.contract.currency, cd.stockType) == ("NASDAQ", "USD", "COMMON")
        assert cd.minTick == 0.01 and cd.timeZoneId == "America/New_York"

        # one year of daily bars, endDateTime '' = the fake's now (2022-12-28 17:00 New York)
        app.reqHistoricalData(8, stock(265598), "", "1 Y", "1 day", "TRADES", 1, 1, False, [])
        app.wait_for(lambda: 8 in app.bars_end, "historicalDataEnd", timeout=20)
        bars = app.bars[8]
        sample = sample_bars().set_index("session")["close"]
        year = sample[sample.index > LAST - pd.Timedelta(days=366)]
        assert 245 <= len(bars) <= 260 and len(bars) == len(year)
        assert [b.date for b in bars[:1] + bars[-1:]] == [year.index[0].strftime("%Y%m%d"), "20221228"]
        assert bars[-1].close == sample[LAST] == pytest.approx(125.674)
        assert [b.close for b in bars] == year.tolist()

        # a market order with an orderRef fills; its execution carries the ref and the quantity
        order = Order()
        order.action, order.totalQuantity, order.orderType = "BUY", Decimal(10), "MKT"
        order.orderRef, order.account, order.tif = ORDER_REF, ACCOUNT, "DAY"
        order_id = app.next_id
        app.placeOrder(order_id, stock(265598), order)
        app.wait_for(lambda: app.executions and app.commissions
                     and (order_id, "Filled", Decimal(10)) in app.statuses, "the fill")
        [(req_id, contract, ex)] = app.executions
        assert (req_id, contract.conId, contract.symbol) == (-1, 265598, "AAPL")
        assert (ex.orderId, ex.orderRef, ex.shares, ex.side, ex.acctNumber) == (order_id, ORDER_REF, order.totalQuantity, "BOT", ACCOUNT)
        assert ex.price == pytest.approx(125.674)  # the last bar's close
        [report] = app.commissions
        assert (report.execId, report.commissionAndFees, report.currency) == (ex.execId, 1.0, "USD")
        assert fake.position("AAPL") == float(order.totalQuantity) == 10.0
        [booked] = fake.orders(ORDER_REF)
        assert (booked.quantity, booked.order_type, booked.status, booked.client_id) == (10.0, "MKT", "Filled", 21)

        # reqPositions reports it, then positionEnd
        app.reqPositions()
        app.wait_for(lambda: app.positions_end >= 1, "positionEnd")
        [(account, contract, qty, avg_cost)] = app.positions
        assert (account, contract.conId, contract.symbol, qty) == (ACCOUNT, 265598, "AAPL", Decimal(10))
        assert avg_cost == pytest.approx(125.674)

        # reqExecutions returns today's execution under the request id, then execDetailsEnd
        app.reqExecutions(9, ExecutionFilter())
        app.wait_for(lambda: 9 in app.executions_end, "execDetailsEnd")
        [(req_id, contract, again)] = [e for e in app.executions if e[0] == 9]
        assert (again.execId, again.orderRef, again.shares, contract.conId) == (ex.execId, ORDER_REF, Decimal(10), 265598)
        assert len(app.commissions) == 2  # each execution is followed by its commission report
        assert unexpected(app) == []
    finally:
        app.stop()


def test_the_official_client_with_connect_options_gets_178(fake):
    app = App()
    app.setConnectOptions("+PACEAPI")
    app.start(fake.port, client_id=22)
    try:
        assert app.serverVersion() == 178
        app.reqContractDetails(3, stock())
        app.wait_for(lambda: 3 in app.details_end, "contractDetailsEnd")
        assert [d.contract.conId for d in app.details[3]] == [265598]
        assert unexpected(app) == []
    finally:
        app.stop()


@pytest.mark.parametrize(
    ("offer", "version"),
    [
        ("v100..226", 178),  # ibapi 10.50
        ("v157..178", 178),  # ib_async 2.1.0
        ("v157..178 +PACEAPI", 178),
        ("v178", 178),
        ("v100..226 +PACEAPI", 178),
        ("v200..226", None),  # the client's lowest is above the fake's highest
        ("v179", None),
        ("v157..177", None),  # the fake speaks only the 178 layouts
        ("v100..150", None),
        ("API", None),
        ("", None),
    ],
)
def test_negotiate_answers_the_highest_common_version(offer, version):
    assert negotiate(offer) == version


def raw_handshake(port: int, offer: str) -> bytes:
    """Send ``API\\0`` + a framed version range; return what the server sends (b"" once closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(b"API\0" + struct.pack(">I", len(offer)) + offer.encode())
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    return got
                got += chunk
                if len(got) >= 4 and len(got) >= 4 + struct.unpack(">I", got[:4])[0]:
                    return got
        except ConnectionResetError:  # the fake aborts the connection: closed as well
            return got


def test_a_client_offering_only_newer_versions_is_refused(fake):
    assert raw_handshake(fake.port, "v200..226") == b""
    assert raw_handshake(fake.port, "v157..177") == b""
    reply = raw_handshake(fake.port, "v100..226")
    assert reply[4:].split(b"\0")[0] == b"178" and len(reply[4:].split(b"\0")) == 3  # 2 fields
    assert reply == encode(178, reply[4:].split(b"\0")[1].decode())


def test_the_official_client_offering_only_newer_versions_is_refused(fake, monkeypatch):
    import ibapi.client

    monkeypatch.setattr(ibapi.client, "MIN_CLIENT_VER", 200)  # it now offers "v200..226"
    app = App()
    connecting = threading.Thread(target=app.connect, args=("127.0.0.1", fake.port, 23), daemon=True)
    started = time.monotonic()
    connecting.start()
    connecting.join(WAIT)
    assert not connecting.is_alive(), "the refused client was left hanging"
    assert time.monotonic() - started < 5.0
    assert not app.isConnected() and app.serverVersion() is None
    assert fake.requests() == []  # nothing got past the handshake


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_fake_gateway_command_serves_the_official_client():
    exe = shutil.which("trading-pipeline", path=str(Path(sys.executable).parent)) or shutil.which("trading-pipeline")
    assert exe, "the trading-pipeline console script is not installed"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TRADING_PIPELINE_CONFIG", "TRADING_PIPELINE_LAKE")}
    proc = subprocess.Popen([exe, "fake-gateway", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        try:
            banner = lines.get(timeout=60)
        except queue.Empty:
            pytest.fail("the fake-gateway command printed no banner within 60 s")
        assert f"127.0.0.1:{port}" in banner, banner
        app = App()
        app.start(port, client_id=24)
        try:
            assert app.serverVersion() == 178 and app.accounts == [ACCOUNT]
            app.reqContractDetails(5, stock())
            app.wait_for(lambda: 5 in app.details_end, "contractDetailsEnd")
            [cd] = app.details[5]
            # the default contracts are the bundled configuration's instruments, with made-up conIds
            assert (cd.contract.symbol, cd.contract.secType, cd.contract.currency) == ("AAPL", "STK", "USD")
            assert cd.contract.conId == fake_contract(Instrument(symbol="AAPL")).con_id
            assert unexpected(app) == []
        finally:
            app.stop()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0  # SIGTERM stops it cleanly
