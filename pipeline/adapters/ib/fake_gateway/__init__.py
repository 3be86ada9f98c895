"""A protocol-level fake of TWS / IB Gateway (standard library plus pandas for the bars).

The real ib_async client talks to it over 127.0.0.1: the tests run every IB scenario against it,
and ``trading-pipeline fake-gateway`` starts one so the whole live loop can be rehearsed offline.
See :mod:`pipeline.adapters.ib.fake_gateway.server` for what it speaks and how faults are injected.
"""

from pipeline.adapters.ib.fake_gateway.book import FakeExecution, FakeOrder, OrderBook
from pipeline.adapters.ib.fake_gateway.clock import FakeClock
from pipeline.adapters.ib.fake_gateway.server import (
    CONNECTIVITY_LOST_TEXT,
    CONNECTIVITY_RESTORED_TEXT,
    NO_SECDEF_TEXT,
    PACING_TEXT,
    Delay,
    Drop,
    Empty,
    Error,
    FakeContract,
    FakeTWS,
    Omit,
    Silent,
)

__all__ = [
    "CONNECTIVITY_LOST_TEXT",
    "CONNECTIVITY_RESTORED_TEXT",
    "NO_SECDEF_TEXT",
    "PACING_TEXT",
    "Delay",
    "Drop",
    "Empty",
    "Error",
    "FakeClock",
    "FakeContract",
    "FakeExecution",
    "FakeOrder",
    "FakeTWS",
    "Omit",
    "OrderBook",
    "Silent",
]
