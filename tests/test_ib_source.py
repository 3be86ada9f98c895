"""IBSource against the protocol-level fake TWS: the real ib_async client, real wire messages.

Nothing of ours is mocked: the fake (pipeline/adapters/ib/fake_gateway) speaks the TWS protocol on 127.0.0.1, and
the only injections are the clock (which session is open), the pacing clock and its sleep (so
back-off costs no wall time), and a factory that keeps a reference to the IB client.
"""

from __future__ import annotations

import socket
import time

import numpy as np
import pandas as pd
import pytest
from ib_async import IB, Stock

from pipeline.adapters.ib.contracts import ContractCache, ib_contract, what_to_show
from pipeline.adapters.ib.errors import (
    IBConnectivityLost,
    IBNoData,
    IBPacingViolation,
    IBRequestFailed,
    IBTimeout,
    IBUnknownContract,
    classify_error,
)
from pipeline.adapters.ib.fake_gateway import (
    CONNECTIVITY_LOST_TEXT,
    PACING_TEXT,
    Delay,
    Drop,
    Error,
    FakeClock,
    FakeContract,
    FakeTWS,
    Silent,
)
from pipeline.adapters.ib.pacing import PacingBudget
from pipeline.adapters.sources.ib import IBConnection, IBSource
from pipeline.bars import BAR_COLUMNS, BAR_DTYPES, SourceError
from pipeline.calendar import sessions
from pipeline.config import Instrument

#: Monday 2024-07-01 17:00 New York: every bar up to Friday 2024-06-28 is final.
NOW = pd.Timestamp("2024-07-01 21:00", tz="UTC")
AAPL = Instrument(symbol="AAPL", sec_type="STK")
EURUSD = Instrument(symbol="EURUSD", sec_type="CASH", exchange="IDEALPRO", asset_class="fx")
ES = Instrument(symbol="ES", sec_type="FUT", exchange="CME", point_size=50, calendar="CMES")
NOPE = Instrument(symbol="NOPE", sec_type="STK")  # configured, but the fake has no such contract
UNIVERSE = [AAPL, EURUSD, ES, NOPE]


def synthetic_bars(calendar: str, seed: int, start="2022-01-03", end="2024-06-28") -> pd.DataFrame:
    """Random-walk daily bars on the sessions of ``calendar`` (high >= open, close >= low)."""
    idx = sessions(start, end, calendar)
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(idx))))
    open_ = close * (1 + rng.normal(0, 0.003, len(idx)))
    return pd.DataFrame(
        {
            "session": idx,
            "open": open_,
            "high": np.maximum(open_, close) * 1.004,
            "low": np.minimum(open_, close) * 0.996,
            "close": close,
            "volume": rng.integers(1_000, 100_000, len(idx)).astype(float),
        }
    )


SERVED = {
    "AAPL": synthetic_bars("XNYS", 1),
    "EURUSD": synthetic_bars("XNYS", 2),
    "ES": synthetic_bars("CMES", 3),
}


@pytest.fixture
def tws():
    fake = FakeTWS(now=NOW)
    fake.add(FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"), SERVED["AAPL"])
    fake.add(
        FakeContract("EUR", "CASH", "IDEALPRO", "USD", 12087792, local_symbol="EUR.USD"), SERVED["EURUSD"]
    )
    fake.add(
        FakeContract(
            "ES", "CONTFUT", "CME", "USD", 495512563, local_symbol="ESU4", multiplier="50",
            last_trade="20240920", time_zone="America/Chicago",
        ),
        SERVED["ES"],
    )  # fmt: skip
    fake.start()
    yield fake
    fake.stop()


class Harness:
    """An IBSource wired to the fake, with a fake pacing clock and the IB clients it created."""

    def __init__(self, tws: FakeTWS, now: pd.Timestamp = NOW, **connection):
        self.clock = FakeClock()
        self.clients: list[IB] = []
        self.cache = ContractCache()
        conn = {"port": tws.port, "client_id": 11, "timeout": 2.0, **connection}
        self.source = IBSource(
            UNIVERSE,
            IBConnection(**conn),
            pacing=PacingBudget(clock=self.clock),
            cache=self.cache,
            clock=lambda: now,
            sleep=self.clock.sleep,
            ib_factory=self._make_ib,
        )

    def _make_ib(self) -> IB:
        ib = IB()
        self.clients.append(ib)
        return ib


def expected(symbol: str, start: str, end: str) -> pd.DataFrame:
    b = SERVED[symbol]
    return b[(b["session"] >= start) & (b["session"] <= end)].reset_index(drop=True)


def assert_bars_equal(got: pd.DataFrame, symbol: str, start: str, end: str, volume=True) -> None:
    want = expected(symbol, start, end)
    rows = got[got["instrument"] == symbol].reset_index(drop=True)
    assert list(rows["session"]) == list(want["session"])
    for col in ["open", "high", "low", "close"]:
        np.testing.assert_array_equal(rows[col].to_numpy(), want[col].to_numpy())  # exact: repr round-trips
    if volume:
        np.testing.assert_array_equal(rows["volume"].to_numpy(), want["volume"].to_numpy())


# -- protocol ---------------------------------------------------------------------------------


def test_real_client_connects_and_qualifies_a_stock(tws):
    ib = IB()
    ib.connect("127.0.0.1", tws.port, clientId=5, readonly=True, timeout=2, raiseSyncErrors=True)
    try:
        [aapl] = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        assert ib.managedAccounts() == ["DU1234567"]
    finally:
        ib.disconnect()
    assert (aapl.conId, aapl.primaryExchange, aapl.exchange) == (265598, "NASDAQ", "SMART")
    assert tws.requests(71) == [["71", "2", "5", ""]]  # startApi carries the client id


def test_fetch_connects_read_only_with_its_client_id_and_disconnects(tws):
    h = Harness(tws, client_id=42)
    h.source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    assert tws.requests(71)[0][2] == "42"
    assert tws.requests(5) == []  # readonly: no open-orders request at connect
    assert not h.clients[0].isConnected()


# -- bars --------------------------------------------------------------------------------------


def test_stock_trades_bars_equal_the_served_frame(tws):
    got = Harness(tws).source.fetch(["AAPL"], "2024-01-02", "2024-06-28")
    assert list(got.columns) == BAR_COLUMNS
    assert {c: str(t) for c, t in got.dtypes.items()} == {c: str(pd.Series(dtype=t).dtype) for c, t in BAR_DTYPES.items()}
    assert_bars_equal(got, "AAPL", "2024-01-02", "2024-06-28")
    assert set(got["source"]) == {"ib:TRADES"}
    assert (got["fetched_at"] == NOW).all()
    [req] = tws.requests(20)
    # End of 2024-06-28 in New York (EDT, UTC-4) is 2024-06-29 03:59:59 UTC; 179 calendar days.
    assert (req[15], req[16], req[17], req[19]) == ("20240629-03:59:59", "1 day", "179 D", "TRADES")


def test_only_the_range_asked_is_requested_and_returned(tws):
    got = Harness(tws).source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    assert_bars_equal(got, "AAPL", "2024-06-24", "2024-06-28")
    assert len(got) == 5  # Mon 24 .. Fri 28 June 2024, all XNYS sessions
    assert tws.requests(20)[0][17] == "5 D"


def test_multi_year_range_is_split_into_one_year_requests_without_overlap(tws):
    got = Harness(tws).source.fetch(["AAPL"], "2022-01-03", "2024-06-28")
    assert_bars_equal(got, "AAPL", "2022-01-03", "2024-06-28")
    assert not got["session"].duplicated().any()
    durations = [r[17] for r in tws.requests(20)]
    # 2022-01-03..2024-06-28 is 908 days: 365 + 365 + 178.
    assert durations == ["365 D", "365 D", "178 D"]


def test_fx_uses_midpoint_and_reports_no_volume(tws):
    got = Harness(tws).source.fetch(["EURUSD"], "2024-03-01", "2024-06-28")
    assert_bars_equal(got, "EURUSD", "2024-03-01", "2024-06-28", volume=False)
    assert got["volume"].isna().all()  # IB sends -1 for MIDPOINT volume
    [req] = tws.requests(20)
    assert (req[3], req[4], req[9], req[19]) == ("EUR", "CASH", "IDEALPRO", "MIDPOINT")


def test_continuous_future_asks_up_to_now_and_keeps_the_range(tws):
    got = Harness(tws).source.fetch(["ES"], "2024-02-01", "2024-06-28")
    assert_bars_equal(got, "ES", "2024-02-01", "2024-06-28")
    [req] = tws.requests(20)
    # CONTFUT accepts only endDateTime='' (IB error 10339 otherwise); 2024-02-01..2024-07-01 = 152 days.
    assert (req[4], req[15], req[17]) == ("CONTFUT", "", "152 D")


def test_several_instruments_in_one_session(tws):
    got = Harness(tws).source.fetch(["ES", "AAPL"], "2024-06-03", "2024-06-28")
    assert list(got["instrument"].unique()) == ["AAPL", "ES"]  # sorted by (instrument, session)
    assert_bars_equal(got, "AAPL", "2024-06-03", "2024-06-28")
    assert_bars_equal(got, "ES", "2024-06-03", "2024-06-28")
    assert len(tws.requests(71)) == 1


def test_bars_up_to_d_do_not_change_when_later_bars_change(tws):
    first = Harness(tws).source.fetch(["AAPL"], "2024-06-03", "2024-06-14")
    later = SERVED["AAPL"].copy()
    later.loc[later["session"] > "2024-06-14", ["open", "high", "low", "close"]] *= 3.0
    tws.set_bars(265598, later)
    second = Harness(tws).source.fetch(["AAPL"], "2024-06-03", "2024-06-14")
    pd.testing.assert_frame_equal(first, second)


def test_open_session_bar_is_dropped_before_the_close(tws):
    # 2024-06-28 15:00 New York: the session closes at 16:00, so the 28th is still partial.
    h = Harness(tws, now=pd.Timestamp("2024-06-28 19:00", tz="UTC"))
    got = h.source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    assert got["session"].max() == pd.Timestamp("2024-06-27")
    assert len(got) == 4
    assert tws.requests(20)[0][15] == "20240628-19:00:00"  # end capped at now


def test_bar_of_a_closed_session_is_kept_after_the_close(tws):
    h = Harness(tws, now=pd.Timestamp("2024-06-28 20:30", tz="UTC"))  # 16:30 New York
    got = h.source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    assert got["session"].max() == pd.Timestamp("2024-06-28")


def test_last_session_is_the_latest_closed_session(tws):
    h = Harness(tws, now=pd.Timestamp("2024-06-28 19:00", tz="UTC"))
    assert h.source.last_session(["AAPL", "EURUSD"]) == pd.Timestamp("2024-06-27")


def test_qualified_contracts_are_cached_except_continuous_futures(tws):
    h = Harness(tws)
    h.source.fetch(["AAPL", "ES"], "2024-06-24", "2024-06-28")
    h.source.fetch(["AAPL", "ES"], "2024-06-24", "2024-06-28")
    symbols = [r[4] for r in tws.requests(9)]
    assert symbols.count("AAPL") == 1  # second fetch used the cached conId
    assert symbols.count("ES") == 2  # a CONTFUT's front-month conId changes at the roll


# -- failures ----------------------------------------------------------------------------------


def test_162_no_data_raises_no_data_not_an_empty_frame(tws):
    with pytest.raises(IBNoData, match="no data"):
        Harness(tws).source.fetch(["AAPL"], "2021-06-01", "2021-06-30")  # served bars start 2022


def test_scripted_162_no_data_text_raises_no_data(tws):
    tws.script("historical", Error(162, "Historical Market Data Service error message:HMDS query returned no data: AAPL@SMART Trades"))
    with pytest.raises(IBNoData) as info:
        Harness(tws).source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    assert info.value.code == 162


def test_error_200_raises_unknown_contract(tws):
    with pytest.raises(IBUnknownContract, match="NOPE"):
        Harness(tws).source.fetch(["NOPE"], "2024-06-24", "2024-06-28")


def test_unconfigured_symbol_is_a_source_error_listing_the_universe(tws):
    with pytest.raises(SourceError, match="unknown instrument.*MSFT.*AAPL"):
        Harness(tws).source.fetch(["MSFT"], "2024-06-24", "2024-06-28")


def test_pacing_violation_is_retried_with_back_off_then_succeeds(tws):
    tws.script("historical", Error(162, PACING_TEXT), times=2)
    h = Harness(tws, pacing_retries=3, pacing_backoff=10.0)
    got = h.source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    assert_bars_equal(got, "AAPL", "2024-06-24", "2024-06-28")
    assert len(tws.requests(20)) == 3
    # t=0 try 1; back-off 10 s; the identical-request rule (15 s) adds 5 s -> try 2 at t=15;
    # back-off 20 s -> t=35, 20 s after try 2, so no pacing wait -> try 3.
    assert h.clock.sleeps == [10.0, 5.0, 20.0]


def test_pacing_violation_fails_with_a_clear_error_after_n_tries(tws):
    tws.script("historical", Error(162, PACING_TEXT), times=3)
    h = Harness(tws, pacing_retries=3)
    with pytest.raises(IBPacingViolation, match="after 3 tries"):
        h.source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    assert len(tws.requests(20)) == 3
    assert not h.clients[0].isConnected()


def test_dropped_connection_raises_connectivity_lost_and_disconnects(tws):
    tws.script("historical", Drop())
    h = Harness(tws)
    with pytest.raises(IBConnectivityLost):
        h.source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    assert not h.clients[0].isConnected()


def test_silent_server_raises_timeout_within_the_configured_timeout(tws):
    tws.script("historical", Silent())
    h = Harness(tws, timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(IBTimeout, match="within 1 s"):
        h.source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    # Without the bound the request would wait until the fake's 20 s idle limit closes it.
    assert time.monotonic() - t0 < 5.0
    assert not h.clients[0].isConnected()


def test_delayed_history_within_the_timeout_arrives_and_beyond_it_times_out(tws):
    tws.script("historical", Delay(0.3))
    bars = Harness(tws, timeout=2.0).source.fetch(["AAPL"], "2024-06-24", "2024-06-28")
    assert len(bars) == 5  # a slow farm is waited for
    tws.script("historical", Delay(3.0))
    with pytest.raises(IBTimeout):
        Harness(tws, timeout=1.0).source.fetch(["AAPL"], "2024-06-17", "2024-06-21")


def test_silence_after_1100_is_reported_as_lost_connectivity(tws):
    tws.script("historical", Silent(notice=(1100, CONNECTIVITY_LOST_TEXT)))
    with pytest.raises(IBConnectivityLost, match="1100"):
        Harness(tws, timeout=1.0).source.fetch(["AAPL"], "2024-06-24", "2024-06-28")


def test_nothing_listening_is_connectivity_lost():
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = IBSource([AAPL], IBConnection(port=port, client_id=3, timeout=1.0), pacing=PacingBudget())
    with pytest.raises(IBConnectivityLost, match="connect"):
        source.fetch(["AAPL"], "2024-06-24", "2024-06-28")


# -- contracts and classification (no server) ---------------------------------------------------


def test_contract_mapping_per_sec_type():
    assert (ib_contract(AAPL).secType, ib_contract(AAPL).exchange) == ("STK", "SMART")
    fx = ib_contract(EURUSD)
    assert (fx.secType, fx.symbol, fx.currency, fx.exchange) == ("CASH", "EUR", "USD", "IDEALPRO")
    assert ib_contract(Instrument(symbol="GBP", sec_type="CASH", currency="USD")).symbol == "GBP"
    assert ib_contract(ES).secType == "CONTFUT"
    assert ib_contract(Instrument(symbol="SPX", sec_type="IND", exchange="CBOE")).secType == "IND"
    assert [what_to_show(i) for i in (AAPL, EURUSD, ES)] == ["TRADES", "MIDPOINT", "TRADES"]


def test_bad_fx_symbol_is_rejected():
    with pytest.raises(IBUnknownContract, match="currency pair"):
        ib_contract(Instrument(symbol="EURO1", sec_type="CASH"))


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [  # real TWS texts (IB reference notes, section 2.3)
        (162, "Historical Market Data Service error message:HMDS query returned no data: AAPL@SMART Trades", IBNoData),
        (162, "Historical Market Data Service error message:No historical market data for EUR/CASH@FXSUBPIP Last 1d", IBNoData),
        (162, "Historical Market Data Service error message:Historical data request pacing violation", IBPacingViolation),
        (200, "No security definition has been found for the request", IBUnknownContract),
        (1100, "Connectivity between IB and Trader Workstation has been lost.", IBConnectivityLost),
        (10339, "Setting end date/time for continuous future security type is not allowed.", IBRequestFailed),
        (162, "Historical Market Data Service error message:API historical data query cancelled: 7", IBRequestFailed),
    ],
)
def test_ib_errors_are_classified_by_code_and_text(code, text, kind):
    err = classify_error(code, text, "test")
    assert type(err) is kind and err.code == code


def test_fetch_inside_a_running_event_loop_is_refused_with_a_clear_error(tws):
    import asyncio

    async def inside_loop():
        return Harness(tws).source.fetch(["AAPL"], "2024-06-24", "2024-06-28")

    with pytest.raises(SourceError, match="running event loop"):
        asyncio.run(inside_loop())
    assert tws.requests(71) == []  # refused before connecting
