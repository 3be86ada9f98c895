"""A protocol-level fake TWS / IB Gateway for the IB tests (see :mod:`tests.fake_tws.server`)."""

from tests.fake_tws.server import (
    CONNECTIVITY_LOST_TEXT,
    NO_SECDEF_TEXT,
    PACING_TEXT,
    Drop,
    Error,
    FakeContract,
    FakeTWS,
    Silent,
)

__all__ = [
    "CONNECTIVITY_LOST_TEXT",
    "NO_SECDEF_TEXT",
    "PACING_TEXT",
    "Drop",
    "Error",
    "FakeContract",
    "FakeTWS",
    "Silent",
]
