"""The order ledger: order intents, their broker events, fills, the kill-switch log and alerts, in DuckDB.

The ledger lives in ``<state folder>/warehouse.duckdb`` (``state_root`` of the configuration, by
default the lake root; ``pipeline.store.paths``). It is the write-ahead log of the order
path (reliability.md §2): an intent is committed here before it is sent, and every fill is
kept here because brokers return a limited execution history.

One writing process at a time, short-lived connections and lock retries: see
:mod:`pipeline.store.ledger.connection`. All timestamps are stored as TIMESTAMPTZ and returned
in UTC.

One module per group of tables, each a base of :class:`Ledger`: ``connection`` (opening,
locking, transactions, :meth:`Ledger.init`), ``schema`` (the tables' DDL and upgrades),
``orders`` (intents, broker events, fills), ``releases`` (quarantine releases),
``trading_state`` (the kill switch), ``alerts``, ``positions`` (position breaks against the
broker's account, adopted adjustments), ``capital`` (the capital each daily run sized with),
``source_errors`` (inputs a bar source could not read) and ``missing_bars`` (sessions without a
clean bar: reason, policy, action); ``roll_states`` (the roll state of each futures instrument,
with its history).
"""

from __future__ import annotations

from pipeline.store.ledger.alerts import AlertTable
from pipeline.store.ledger.capital import CapitalTable
from pipeline.store.ledger.connection import (
    LEDGER_FILE,
    LedgerConnection,
    LedgerError,
    LedgerLockedError,
)
from pipeline.store.ledger.missing_bars import MissingBarTable
from pipeline.store.ledger.orders import OrderTables
from pipeline.store.ledger.positions import PositionTables
from pipeline.store.ledger.releases import QuarantineReleaseTable
from pipeline.store.ledger.roll_states import RollStateTable
from pipeline.store.ledger.schema import (
    EVENT_COLUMNS,
    FILL_COLUMNS,
    INTENT_COLUMNS,
    INTENT_STATUSES,
    MODES,
    OPEN_STATUSES,
    ORDER_TYPES,
)
from pipeline.store.ledger.source_errors import SourceErrorTable
from pipeline.store.ledger.trading_state import TradingStateTable

__all__ = [
    "EVENT_COLUMNS",
    "FILL_COLUMNS",
    "INTENT_COLUMNS",
    "INTENT_STATUSES",
    "LEDGER_FILE",
    "MODES",
    "OPEN_STATUSES",
    "ORDER_TYPES",
    "Ledger",
    "LedgerConnection",
    "LedgerError",
    "LedgerLockedError",
]


class Ledger(OrderTables, PositionTables, CapitalTable, QuarantineReleaseTable, TradingStateTable, AlertTable,
             SourceErrorTable, MissingBarTable, RollStateTable):
    """The DuckDB order ledger at ``path`` (normally ``<state folder>/warehouse.duckdb``).

    Parameters
    ----------
    path : Path
        The DuckDB file. Its folder is created by :meth:`init`.
    lock_retries : int
        Attempts to open the file while another process holds the lock.
    lock_backoff : float
        First back-off in seconds; doubled after each failed attempt (0.05 s x 6 attempts waits
        about 1.6 s in total).

    Notes
    -----
    No connection is kept open between calls, so several processes (Dagster runs, a DuckDB
    shell) can take turns on the file; see the module docstring. :meth:`hold` keeps the file
    open for one unit of work when many calls follow each other.
    """
