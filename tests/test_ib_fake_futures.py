"""Dated futures at the fake gateway, with the real ib_async client over 127.0.0.1.

The fake lists months of MCL (micro WTI, NYMEX, monthly, cash-settled), GC (gold, COMEX, GJMQVZ,
physically delivered) and ES (E-mini S&P 500, CME, HMUZ) with their last trading days; serves each
month's daily bars up to its current session; keeps positions per conId; refuses orders to a
CONTFUT; fills a BAG spread leg by leg (or never, with a switch); and expires months as its session
clock advances. These are what a rehearsal of rolls against the fake relies on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ib_async import IB, Bag, ComboLeg, ContFuture, Future, LimitOrder, MarketOrder

from pipeline.adapters.ib.fake_gateway import ES, GC, MCL, FakeLeg, FakeOrder, FakeTWS
from pipeline.adapters.ib.fake_gateway.book import (
    completed_order_fields,
    open_order_fields,
)
from pipeline.adapters.ib.fake_gateway.combos import parse_combo
from pipeline.adapters.ib.fake_gateway.futures import contract_months, last_trading_days

SESSION = "2023-10-02"  # a Monday
ACCOUNT = "DU1234567"
from tests.conftest import SHARED_DATA

MULTIPLE_PRICES = SHARED_DATA / "futures_carver_2023" / "multiple_prices_daily.parquet"


def new_fake(session: str = SESSION) -> FakeTWS:
    fake = FakeTWS(session=session)
    for spec in (MCL, GC, ES):
        fake.add_future(spec, "2023-01", "2024-12")
    return fake


@pytest.fixture
def fake():
    with new_fake() as f:
        yield f


def connect(port: int, client_id: int = 11) -> IB:
    ib = IB()
    ib.RaiseRequestErrors = True
    ib.RequestTimeout = 10
    ib.connect("127.0.0.1", port, clientId=client_id, timeout=5, raiseSyncErrors=True)
    return ib


def settle(ib: IB, trade, done: bool = True) -> None:
    for _ in range(300):
        if trade.isDone() if done else trade.orderStatus.status == "Submitted":
            break
        ib.sleep(0.01)
    ib.sleep(0.1)  # commission reports and pushed positions follow


def month(ib: IB, symbol: str, exchange: str, contract_month: str, include_expired: bool = False) -> Future:
    c = Future(symbol, contract_month, exchange, currency="USD", includeExpired=include_expired)
    [qualified] = ib.qualifyContracts(c)
    qualified.includeExpired = include_expired  # qualifying copies the details' contract, which has it unset
    return qualified


def last_close(ib: IB, contract) -> float:
    """The contract's close on the fake's current session (the price an order fills at)."""
    bars = ib.reqHistoricalData(contract, "", "5 D", "1 day", "TRADES", True, timeout=0)
    return bars[-1].close


# --- contract details ---------------------------------------------------------------------------

def test_contract_details_list_every_month_with_its_expiry_and_one_month_when_asked(fake):
    ib = connect(fake.port)
    try:
        es = ib.reqContractDetails(Future("ES", exchange="CME", currency="USD"))
        assert [(d.contractMonth, d.contract.lastTradeDateOrContractMonth, d.realExpirationDate) for d in es] == [
            ("202312", "20231215", "20231215"), ("202403", "20240315", "20240315"),
            ("202406", "20240621", "20240621"), ("202409", "20240920", "20240920"),
        ]  # third Fridays; ESU3 (2023-09-15) has expired, four quarterlies are listed
        assert {(d.contract.secType, d.contract.multiplier, d.contract.exchange) for d in es} == {("FUT", "50", "CME")}
        assert [d.contract.localSymbol for d in es] == ["ESZ3", "ESH4", "ESM4", "ESU4"]
        assert len({d.contract.conId for d in es}) == 4 and es[0].minTick == 0.25

        gc = ib.reqContractDetails(Future("GC", exchange="COMEX"))
        assert [(d.contractMonth, d.contract.lastTradeDateOrContractMonth) for d in gc] == [
            ("202310", "20231027"), ("202312", "20231227"), ("202402", "20240227"),
            ("202404", "20240426"), ("202406", "20240626"), ("202408", "20240828"),
        ]  # GJMQVZ, third last business day of the month
        assert {d.contract.multiplier for d in gc} == {"100"}

        mcl = ib.reqContractDetails(Future("MCL", exchange="NYMEX", currency="USD"))
        assert [d.contractMonth for d in mcl] == [f"2023{m}" for m in ("11", "12")] + [f"2024{m:02d}" for m in range(1, 11)]
        # micro WTI stops trading in the month before its contract month
        assert [d.contract.lastTradeDateOrContractMonth for d in mcl[:2]] == ["20231019", "20231120"]
        assert {d.contract.multiplier for d in mcl} == {"100"}

        # with a month: that month only; ib_async qualifies it in place
        z3 = month(ib, "GC", "COMEX", "202312")
        assert (z3.lastTradeDateOrContractMonth, z3.localSymbol, z3.conId) == ("20231227", "GCZ3", gc[1].contract.conId)
        # expired months only with includeExpired
        expired = ib.reqContractDetails(Future("ES", exchange="CME", includeExpired=True))
        assert [d.contractMonth for d in expired] == ["202303", "202306", "202309", "202312", "202403", "202406", "202409"]
        with pytest.raises(Exception, match="200"):  # RequestError: no security definition
            ib.reqContractDetails(Future("ES", "202309", "CME"))
    finally:
        ib.disconnect()


def test_last_trading_days_follow_the_exchange_rules():
    assert [d.strftime("%Y%m%d") for d in last_trading_days(ES, contract_months(ES, "2024-01", "2024-12"))] == [
        "20240315", "20240621", "20240920", "20241220"]
    # GC: third last business day; Good Friday 2024-03-29 is no CME session
    assert [d.strftime("%Y%m%d") for d in last_trading_days(GC, ["202403", "202404"])] == ["20240326", "20240426"]
    # MCL: 4 business days before the 25th of the month before (5 when the 25th is a weekend day)
    assert [d.strftime("%Y%m%d") for d in last_trading_days(MCL, ["202311", "202401"])] == ["20231019", "20231218"]


# --- bars ---------------------------------------------------------------------------------------

def test_a_year_of_daily_bars_of_one_month_up_to_the_current_session(fake):
    ib = connect(fake.port)
    try:
        esu3 = month(ib, "ES", "CME", "202309", include_expired=True)
        bars = ib.reqHistoricalData(esu3, "20230915-23:00:00", "1 Y", "1 day", "TRADES", True, timeout=0)
        assert 245 <= len(bars) <= 260
        assert (str(bars[0].date), str(bars[-1].date)) == ("2022-09-15", "2023-09-15")  # to its last trading day
        assert all(b.low <= min(b.open, b.close) and b.high >= max(b.open, b.close) for b in bars)
        assert all(round(b.close / 0.25, 6).is_integer() for b in bars)  # on ES's tick

        # a live month: nothing after the current session, whatever the end asked for
        esz3 = month(ib, "ES", "CME", "202312")
        bars = ib.reqHistoricalData(esz3, "20231231-23:00:00", "1 Y", "1 day", "TRADES", True, timeout=0)
        assert str(bars[-1].date) == SESSION
        # a term structure: each later gold month is dearer on the same session (carry 5% a year)
        closes = [last_close(ib, month(ib, "GC", "COMEX", m)) for m in ("202310", "202312", "202402", "202404")]
        assert closes == sorted(closes) and closes[0] < closes[-1] * 0.995
    finally:
        ib.disconnect()


@pytest.mark.shared_data(MULTIPLE_PRICES)
def test_bars_from_multiple_prices_follow_price_forward_and_carry():
    from pipeline.futures import read_multiple_prices

    multiple = read_multiple_prices(MULTIPLE_PRICES, "GOLD")
    with FakeTWS(session="2023-08-31") as fake:
        fake.add_future(GC, multiple=multiple)
        ib = connect(fake.port)
        try:
            v3 = month(ib, "GC", "COMEX", "202310")
            bars = ib.reqHistoricalData(v3, "", "1 Y", "1 day", "TRADES", True, timeout=0)
            served = pd.Series([b.close for b in bars], index=pd.DatetimeIndex([str(b.date) for b in bars]))
            rows = multiple.loc["2022-09-01":"2023-08-31"]
            rows.index = rows.index.normalize()
            # 202310's series: PRICE while priced, else FORWARD while the forward, else CARRY
            roles = [rows[f"{r}_CONTRACT"].eq(20231000).fillna(False).to_numpy() for r in ("PRICE", "FORWARD", "CARRY")]
            expected = pd.Series(np.select(roles, [rows["PRICE"], rows["FORWARD"], rows["CARRY"]], np.nan),
                                 index=rows.index).dropna()
            assert served.to_dict() == expected.to_dict()
            assert sum(r.sum() for r in roles[:1]) > 20 and roles[1].sum() > 20  # both roles in the year
            assert (str(bars[-1].date), bars[-1].close) == ("2023-08-31", 1949.1)  # the last PRICE
            z3 = month(ib, "GC", "COMEX", "202312")  # the forward at the end: its last bar is FORWARD
            assert last_close(ib, z3) == rows["FORWARD"].iloc[-1] == 1967.8
        finally:
            ib.disconnect()


# --- positions per conId, CONTFUT refused -------------------------------------------------------

def test_positions_in_two_months_of_one_future_stay_two_positions(fake):
    ib = connect(fake.port)
    try:
        z3, f4 = month(ib, "MCL", "NYMEX", "202312"), month(ib, "MCL", "NYMEX", "202401")
        for contract, qty in ((z3, 2), (f4, 3)):
            settle(ib, ib.placeOrder(contract, MarketOrder("BUY", qty, account=ACCOUNT)))
        # an order by symbol and month (no conId) books on that month's conId too
        settle(ib, ib.placeOrder(Future("MCL", "202312", "NYMEX", currency="USD"), MarketOrder("SELL", 1, account=ACCOUNT)))
        assert fake.positions_by_contract() == {z3.conId: 1.0, f4.conId: 3.0}
        assert sorted((p.contract.conId, p.position) for p in ib.positions()) == sorted([(z3.conId, 1.0), (f4.conId, 3.0)])
    finally:
        ib.disconnect()
    fresh = connect(fake.port, client_id=12)  # reqPositions at connect: each with its dated contract
    try:
        got = sorted((p.contract.localSymbol, p.contract.lastTradeDateOrContractMonth, p.contract.secType, p.position)
                     for p in fresh.positions())
        assert got == [("MCLF4", "20231218", "FUT", 3.0), ("MCLZ3", "20231120", "FUT", 1.0)]
    finally:
        fresh.disconnect()


def test_an_order_to_a_continuous_future_is_refused_and_no_order_names_it(fake):
    ib = connect(fake.port)
    try:
        cont = ContFuture("MCL", "NYMEX", currency="USD")
        ib.qualifyContracts(cont)
        front = month(ib, "MCL", "NYMEX", "202311")
        assert (cont.secType, cont.conId, cont.lastTradeDateOrContractMonth) == ("CONTFUT", front.conId, "20231019")
        # data convenience: its bars are the front months' (here MCLX3's) bars
        assert last_close(ib, cont) == last_close(ib, front)
        refused = ib.placeOrder(cont, MarketOrder("BUY", 1, account=ACCOUNT, orderRef="carver:2023-10-02:MCL:1"))
        settle(ib, refused)
        assert refused.orderStatus.status == "Cancelled" and refused.log[-1].errorCode == 200
        settle(ib, ib.placeOrder(front, MarketOrder("BUY", 1, account=ACCOUNT, orderRef="carver:2023-10-02:MCL:2")))
    finally:
        ib.disconnect()
    assert [c[2] for c in fake.order_contracts()] == ["CONTFUT", "FUT"]  # both orders reached the fake
    assert [(o.order_ref, o.contract[2], o.con_id) for o in fake.orders()] == [("carver:2023-10-02:MCL:2", "FUT", front.conId)]
    assert fake.positions_by_contract() == {front.conId: 1.0}


# --- combo orders -------------------------------------------------------------------------------

def spread(old: Future, new: Future) -> Bag:
    """Sell ``old``, buy ``new``: a calendar spread that rolls a long position."""
    return Bag(symbol=old.symbol, exchange=old.exchange, currency="USD", comboLegs=[
        ComboLeg(conId=old.conId, ratio=1, action="SELL", exchange=old.exchange),
        ComboLeg(conId=new.conId, ratio=1, action="BUY", exchange=new.exchange),
    ])


def test_a_calendar_spread_fills_leg_by_leg_and_moves_the_position_to_the_next_month(fake):
    ib = connect(fake.port)
    try:
        z3, f4 = month(ib, "MCL", "NYMEX", "202312"), month(ib, "MCL", "NYMEX", "202401")
        settle(ib, ib.placeOrder(z3, MarketOrder("BUY", 3, account=ACCOUNT)))
        old_price, new_price = last_close(ib, z3), last_close(ib, f4)
        trade = ib.placeOrder(spread(z3, f4), MarketOrder("BUY", 3, account=ACCOUNT, orderRef="carver:roll:MCL"))
        settle(ib, trade)
        assert trade.orderStatus.status == "Filled" and trade.orderStatus.filled == 3.0
        assert trade.orderStatus.avgFillPrice == pytest.approx(new_price - old_price)
        legs = [(f.contract.conId, f.execution.side, f.execution.shares, f.execution.price) for f in trade.fills]
        assert legs == [(z3.conId, "SLD", 3.0, old_price), (f4.conId, "BOT", 3.0, new_price)]  # two execDetails
        assert [f.commissionReport.commission for f in trade.fills] == [1.0, 1.0]
        assert {f.execution.permId for f in trade.fills} == {trade.order.permId}
        assert sorted((p.contract.conId, p.position) for p in ib.positions() if p.position) == [(f4.conId, 3.0)]
        assert fake.positions_by_contract() == {f4.conId: 3.0}
        [booked] = fake.orders("carver:roll:MCL")
        assert [(leg.con_id, leg.action) for leg in booked.legs] == [(z3.conId, "SELL"), (f4.conId, "BUY")]
        # a limit above the market's spread price does not fill (a spread bought is a BUY of new - old)
        away = ib.placeOrder(spread(f4, z3), LimitOrder("BUY", 1, round(old_price - new_price - 1.0, 2), account=ACCOUNT))
        settle(ib, away, done=False)
        assert away.orderStatus.status == "Submitted" and away.fills == []
    finally:
        ib.disconnect()


def test_with_the_never_fill_switch_a_spread_rests_and_outright_orders_then_roll(fake):
    fake.spreads_fill = False
    ib = connect(fake.port)
    try:
        z3, f4 = month(ib, "GC", "COMEX", "202312"), month(ib, "GC", "COMEX", "202402")
        settle(ib, ib.placeOrder(z3, MarketOrder("BUY", 2, account=ACCOUNT)))
        stuck = ib.placeOrder(spread(z3, f4), MarketOrder("BUY", 2, account=ACCOUNT))
        settle(ib, stuck, done=False)
        ib.sleep(0.2)
        assert stuck.orderStatus.status == "Submitted" and stuck.fills == []
        assert fake.positions_by_contract() == {z3.conId: 2.0}
        ib.cancelOrder(stuck.order)
        settle(ib, stuck)
        assert stuck.orderStatus.status == "Cancelled"
        # escalation: two outright orders
        for contract, action in ((z3, "SELL"), (f4, "BUY")):
            settle(ib, ib.placeOrder(contract, MarketOrder(action, 2, account=ACCOUNT)))
        assert fake.positions_by_contract() == {f4.conId: 2.0}
    finally:
        ib.disconnect()


def test_a_combo_order_carries_its_legs_in_open_and_completed_orders():
    ibapi = pytest.importorskip("ibapi")
    del ibapi
    from tests.test_ib_wire_layouts import decode

    legs = [FakeLeg(111, 1, "SELL", "NYMEX"), FakeLeg(222, 2, "BUY", "NYMEX")]
    o = FakeOrder(perm_id=9, order_id=3, client_id=7, epoch=1, action="BUY", quantity=2, order_type="MKT",
                  lmt_price="", tif="DAY", account=ACCOUNT, order_ref="carver:roll",
                  contract=["28812380", "MCL", "BAG", "", "0", "", "", "NYMEX", "", "USD", "", ""], legs=legs)
    _, order_id, contract, order, _ = decode(5, open_order_fields(o))
    assert order_id == 3 and [(leg.conId, leg.ratio, leg.action) for leg in contract.comboLegs] == [
        (111, 1, "SELL"), (222, 2, "BUY")]
    o.status = "Filled"
    _, contract, order, _ = decode(101, completed_order_fields(o))
    assert [leg.conId for leg in contract.comboLegs] == [111, 222] and order.permId == 9


def test_parse_combo_reads_the_legs_and_the_shift_of_later_fields():
    head = ["3", "5", "0", "MCL", "BAG", "", "0", "", "", "NYMEX", "", "USD", "", ""] + [""] * 21
    block = ["2", "111", "1", "SELL", "NYMEX", "0", "0", "", "-1", "222", "1", "BUY", "NYMEX", "0", "0", "", "-1",
             "1", "0.5", "1", "NonGuaranteed", "1"]
    legs, shift = parse_combo(head + block + [""] * 60)
    assert legs == [FakeLeg(111, 1, "SELL", "NYMEX"), FakeLeg(222, 1, "BUY", "NYMEX")]
    assert shift == len(block) == 3 + 8 * 2 + 1 + 2


# --- the session clock --------------------------------------------------------------------------

def test_advancing_the_clock_expires_a_month_and_settles_its_cash_position(fake):
    ib = connect(fake.port)
    try:
        x3 = month(ib, "MCL", "NYMEX", "202311")  # last trading day 2023-10-19
        settle(ib, ib.placeOrder(x3, MarketOrder("BUY", 2, account=ACCOUNT)))
        assert fake.advance(to="2023-10-19") == pd.Timestamp("2023-10-19")
        assert fake.settlements() == [] and fake.positions_by_contract() == {x3.conId: 2.0}  # still trading
        final_close = last_close(ib, x3)
        assert fake.advance() == pd.Timestamp("2023-10-20")
        ib.sleep(0.2)  # the closed position is pushed
        [s] = fake.settlements()
        assert (s.con_id, s.quantity, s.price, s.session, s.kind) == (x3.conId, 2.0, final_close, "20231019", "cash")
        assert fake.positions_by_contract() == {} and ib.positions() == []  # the pushed 0 removed it
        listed = ib.reqContractDetails(Future("MCL", exchange="NYMEX"))
        assert listed[0].contractMonth == "202312" and len(listed) == 12  # 202411 is listed now
        assert "202311" in [d.contractMonth for d in ib.reqContractDetails(Future("MCL", exchange="NYMEX",
                                                                                    includeExpired=True))]
        late = ib.placeOrder(x3, MarketOrder("BUY", 1, account=ACCOUNT))
        settle(ib, late)
        assert late.orderStatus.status == "Cancelled" and late.log[-1].errorCode == 200
        assert fake.delivery_breaches() == []
    finally:
        ib.disconnect()


def test_a_physically_delivered_month_held_past_its_close_out_is_a_delivery_breach(fake):
    ib = connect(fake.port)
    try:
        z3, g4 = month(ib, "GC", "COMEX", "202312"), month(ib, "GC", "COMEX", "202402")
        settle(ib, ib.placeOrder(z3, MarketOrder("BUY", 1, account=ACCOUNT)))
        settle(ib, ib.placeOrder(g4, MarketOrder("BUY", 1, account=ACCOUNT)))
        fake.advance(to="2023-11-29")  # the day before GCZ3's first notice day
        assert fake.delivery_breaches() == []
        settle(ib, ib.placeOrder(g4, MarketOrder("SELL", 1, account=ACCOUNT)))  # closed out in time
        fake.advance()  # 2023-11-30: GCZ3's close-out, still held
        [breach] = fake.delivery_breaches()
        assert (breach.con_id, breach.local_symbol, breach.quantity, breach.close_out, breach.session) == (
            z3.conId, "GCZ3", 1.0, "20231130", "20231130")
        fake.advance(to="2023-12-28")  # expired: delivered at the final price, one breach only
        [delivered] = fake.settlements()
        assert (delivered.con_id, delivered.kind, delivered.quantity) == (z3.conId, "delivery", 1.0)
        assert len(fake.delivery_breaches()) == 1 and fake.positions_by_contract() == {}
    finally:
        ib.disconnect()


def test_the_official_client_lists_the_months_of_a_future():
    pytest.importorskip("ibapi")
    from ibapi.contract import Contract

    from tests.test_ib_official_client import App, unexpected

    with new_fake() as fake:
        app = App()
        app.start(fake.port, client_id=31)
        try:
            c = Contract()
            c.symbol, c.secType, c.exchange, c.currency = "GC", "FUT", "COMEX", "USD"
            app.reqContractDetails(4, c)
            app.wait_for(lambda: 4 in app.details_end, "contractDetailsEnd")
            got = [(d.contract.localSymbol, d.contractMonth, d.realExpirationDate, d.contract.multiplier)
                   for d in app.details[4]]
            assert got[:2] == [("GCV3", "202310", "20231027", "100"), ("GCZ3", "202312", "20231227", "100")]
            assert len(got) == 6 and unexpected(app) == []
        finally:
            app.stop()
