"""A protocol-level fake of TWS / IB Gateway (standard library plus pandas for the bars).

The real ib_async client talks to it over 127.0.0.1: the tests run every IB scenario against it,
and ``trading-pipeline fake-gateway`` starts one so the whole live loop can be rehearsed offline.
See :mod:`pipeline.adapters.ib.fake_gateway.server` for what it speaks and how faults are injected,
:mod:`.futures` for the dated futures months it lists (and those of a rehearsal, on the exchange's
rules or a compressed calendar), :mod:`.combos` for combo (BAG) orders and :mod:`.clock` for the
session clock a rehearsal advances.
"""

from pipeline.adapters.ib.fake_gateway.book import (
    DeliveryBreach,
    FakeExecution,
    FakeLeg,
    FakeOrder,
    FakeSettlement,
    OrderBook,
)
from pipeline.adapters.ib.fake_gateway.clock import FakeClock, SessionClock, SessionTime
from pipeline.adapters.ib.fake_gateway.contract import FakeContract
from pipeline.adapters.ib.fake_gateway.futures import (
    BUILTIN_FUTURES,
    ES,
    GC,
    MCL,
    FuturesMonth,
    FutureSpec,
    generated_bars,
    rehearsal_months,
)
from pipeline.adapters.ib.fake_gateway.server import (
    CONNECTIVITY_LOST_TEXT,
    CONNECTIVITY_RESTORED_TEXT,
    NO_SECDEF_TEXT,
    PACING_TEXT,
    Delay,
    Drop,
    Empty,
    Error,
    FakeTWS,
    Omit,
    Silent,
)

__all__ = [
    "BUILTIN_FUTURES",
    "CONNECTIVITY_LOST_TEXT",
    "CONNECTIVITY_RESTORED_TEXT",
    "ES",
    "GC",
    "MCL",
    "NO_SECDEF_TEXT",
    "PACING_TEXT",
    "Delay",
    "DeliveryBreach",
    "Drop",
    "Empty",
    "Error",
    "FakeClock",
    "FakeContract",
    "FakeExecution",
    "FakeLeg",
    "FakeOrder",
    "FakeSettlement",
    "FakeTWS",
    "FutureSpec",
    "FuturesMonth",
    "Omit",
    "OrderBook",
    "SessionClock",
    "SessionTime",
    "Silent",
    "generated_bars",
    "rehearsal_months",
]
