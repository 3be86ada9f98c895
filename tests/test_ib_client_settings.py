"""Promise 12, the settings behind "broker silence is not success": what IBBroker and IBSource
give their ib_async client, read from the real client connected to the fake gateway, and what
``raiseSyncErrors`` changes when the gateway stays silent during the start-up synchronisation."""

from __future__ import annotations

import pandas as pd
import pytest
from ib_async import IB

from pipeline.adapters.ib.broker import IBBroker
from pipeline.adapters.ib.errors import IBError
from pipeline.adapters.ib.fake_gateway import FakeContract, FakeTWS, Silent
from pipeline.adapters.sources.ib import IBConnection, IBSource
from pipeline.config import Instrument
from pipeline.trading import BrokerError
from tests.test_ib_broker import INSTRUMENTS, config, new_fake


class RecordingIB(IB):
    """The real ib_async client, keeping the arguments of its ``connect`` call."""

    def connect(self, *args, **kwargs):
        self.connect_args = (args, kwargs)
        return super().connect(*args, **kwargs)


class Clients(list):
    def __call__(self) -> RecordingIB:
        ib = RecordingIB()
        self.append(ib)
        return ib


@pytest.fixture
def fake():
    with new_fake() as f:
        yield f


@pytest.mark.parametrize("execution", ["paper", "dry_run"])
def test_ibbroker_bounds_every_request_and_raises_on_errors(fake, execution):
    clients = Clients()
    cfg = config(
        fake.port,
        execution=execution,
        ib={"port": fake.port, "client_id": 201, "timeout": 2.5},
    )
    with IBBroker(INSTRUMENTS, cfg, ib_factory=clients) as broker:
        ib = clients[0]
        assert ib.isConnected() and broker.account == "DU1234567"
        assert ib.RaiseRequestErrors is True
        assert ib.RequestTimeout == 2.5  # the configured broker.ib.timeout
        args, kwargs = ib.connect_args
        assert args == ("127.0.0.1", fake.port)
        assert kwargs["raiseSyncErrors"] is True
        assert (kwargs["clientId"], kwargs["timeout"]) == (201, 2.5)
        assert kwargs["readonly"] is (execution == "dry_run")


def test_ibsource_bounds_every_request_and_raises_on_errors():
    bars = pd.DataFrame(
        {
            "session": pd.to_datetime(["2024-06-27", "2024-06-28"]),
            "open": [210.0, 212.0],
            "high": [213.0, 215.0],
            "low": [209.0, 211.0],
            "close": [212.5, 214.0],
            "volume": [1e6, 1.1e6],
        }
    )
    clients = Clients()
    with FakeTWS(now=pd.Timestamp("2024-07-01 21:00", tz="UTC")) as tws:
        tws.add(
            FakeContract(
                "AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"
            ),
            bars,
        )
        source = IBSource(
            [Instrument(symbol="AAPL", sec_type="STK")],
            IBConnection(port=tws.port, client_id=11, timeout=1.5),
            clock=lambda: pd.Timestamp("2024-07-01 21:00", tz="UTC"),
            ib_factory=clients,
        )
        got = source.fetch(["AAPL"], "2024-06-27", "2024-06-28")
    assert got["close"].tolist() == [212.5, 214.0]
    ib = clients[0]
    assert ib.RaiseRequestErrors is True and ib.RequestTimeout == 1.5
    args, kwargs = ib.connect_args
    assert args == ("127.0.0.1", tws.port)
    assert kwargs["raiseSyncErrors"] is True and kwargs["readonly"] is True
    assert (kwargs["clientId"], kwargs["timeout"]) == (11, 1.5)


def test_a_silent_start_up_synchronisation_fails_the_connect_instead_of_starting_blind(
    fake,
):
    # the positions answer of the start-up synchronisation never comes
    fake.script("positions", Silent())
    cfg = config(fake.port, ib={"port": fake.port, "client_id": 201, "timeout": 1.0})
    with pytest.raises(
        BrokerError, match="no answer from IB within 1 s.*No order was sent"
    ):
        IBBroker(INSTRUMENTS, cfg).connect()
    # each of the two settings alone turns the silence into an error: raiseSyncErrors ...
    fake.script("positions", Silent())
    strict = IB()
    with pytest.raises(ConnectionError, match="positions request timed out"):
        strict.connect(
            "127.0.0.1", fake.port, clientId=202, timeout=1.0, raiseSyncErrors=True
        )
    # ... and with ib_async's defaults (no RequestTimeout, raiseSyncErrors=False) the client only
    # logs it and reports itself connected, with positions it never received
    fake.script("positions", Silent())
    lenient = IB()
    lenient.connect("127.0.0.1", fake.port, clientId=203, timeout=1.0)
    try:
        assert lenient.isConnected() and lenient.positions() == []
    finally:
        lenient.disconnect()


def test_ibsource_refuses_a_silent_start_up_too():
    with FakeTWS(now=pd.Timestamp("2024-07-01 21:00", tz="UTC")) as tws:
        tws.add(
            FakeContract(
                "AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"
            )
        )
        tws.script("positions", Silent())
        source = IBSource(
            [Instrument(symbol="AAPL", sec_type="STK")],
            IBConnection(port=tws.port, client_id=11, timeout=1.0),
            clock=lambda: pd.Timestamp("2024-07-01 21:00", tz="UTC"),
        )
        with pytest.raises(IBError, match="no answer from IB within 1 s"):
            source.fetch(["AAPL"], "2024-06-27", "2024-06-28")
