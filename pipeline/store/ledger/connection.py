"""The ledger's DuckDB connection: opening the file with lock retries, short-lived connections
and transactions, holding the file open for a unit of work, creating and upgrading the tables.

DuckDB allows one writing process at a time (a second writer fails with "Could not set lock on
file"; duckdb.org/docs/current/connect/concurrency), so connections are short-lived — opened
for one unit of work and closed — and opening retries on the lock error with a short
exponential back-off (as ``dagster_duckdb.DuckDBResource`` does) before raising
:class:`LedgerLockedError`. Readers open read-only. All timestamps are stored as TIMESTAMPTZ
and returned in UTC.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import duckdb
import pandas as pd

from pipeline.store.ledger.schema import (
    _SCHEMA,
    _WHAT_IF_COLUMNS,
    CONTRACT_INTENT_COLUMNS,
    _needs_upgrade,
    _upgrade_intents,
)

LEDGER_FILE = "warehouse.duckdb"


class LedgerError(ValueError):
    """The ledger cannot be read or written; the message names the file and what to do."""


class LedgerLockedError(LedgerError):
    """Another process holds the DuckDB write lock and did not release it in time."""


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("could not set" in text or "conflicting" in text)


class LedgerConnection:
    """The connection half of :class:`pipeline.store.ledger.Ledger` (its parameters and the
    tables' base class): every group of tables reads with :meth:`_read` and writes in
    :meth:`_transaction`."""

    def __init__(self, path: Path | str, *, lock_retries: int = 6, lock_backoff: float = 0.05) -> None:
        self.path = Path(path)
        self.lock_retries = max(1, int(lock_retries))
        self.lock_backoff = float(lock_backoff)
        self._anchor: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def at_lake(cls, lake_root: Path | str, **kwargs: Any) -> Self:
        """The ledger of a lake: ``<lake_root>/warehouse.duckdb``."""
        return cls(Path(lake_root) / LEDGER_FILE, **kwargs)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    # -- connections -----------------------------------------------------------------------

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only and not self.path.exists():
            raise LedgerError(f"ledger {self.path} does not exist: call Ledger.init() first")
        delay, attempt = self.lock_backoff, 0
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.ConnectionException as exc:
                # This process already has the file open read-write (a hold() on this or another
                # Ledger object): DuckDB refuses a second configuration, and the open read-write
                # instance is the one to use, also for reading.
                if read_only and "different configuration" in str(exc):
                    read_only = False
                    continue
                raise LedgerError(f"ledger {self.path} cannot be opened: {exc}") from exc
            except duckdb.IOException as exc:
                if not _is_lock_error(exc):
                    raise LedgerError(f"ledger {self.path} cannot be opened: {exc}") from exc
                attempt += 1
                if attempt >= self.lock_retries:
                    raise LedgerLockedError(
                        f"ledger {self.path} is locked by another process after {attempt} attempts "
                        f"({exc}); wait for the other writer (a Dagster run or a DuckDB shell) to "
                        "finish, or close it, and retry"
                    ) from exc
                time.sleep(delay)
                delay *= 2

    @contextmanager
    def hold(self) -> Iterator[Self]:
        """Keep the file open read-write for a unit of work (e.g. one ``execute_orders`` run).

        Opening a DuckDB file costs ~20 ms, while a further connection to a file this process
        already has open costs microseconds (DuckDB caches the database instance). Inside
        ``with ledger.hold():`` every method still uses its own short connection and
        transaction, but they are cheap; the write lock is held until the block ends, so keep
        the block to one run. Re-entrant.
        """
        if self._anchor is not None:
            yield self
            return
        anchor = self._open(read_only=False)
        self._anchor = anchor
        try:
            yield self
        finally:
            self._anchor = None
            anchor.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_anchor": None}  # an open connection is not picklable

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived DuckDB connection with the session time zone set to UTC.

        Use as ``with ledger.connect() as con:``; the connection is closed on exit. Readers pass
        ``read_only=True``. Raises :class:`LedgerLockedError` when another process keeps the
        lock through all retries, :class:`LedgerError` when a read-only open finds no file.
        """
        con = self._open(read_only and self._anchor is None)
        try:
            con.execute("SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connect() as con:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()

    def init(self) -> Self:
        """Create the folder, the file and the tables if missing (idempotent). Returns self.

        A ledger written by an earlier version is upgraded in the same transaction: the
        ``order_intents`` table is rebuilt with the current statuses, order types and columns
        (every row kept), ``fills`` gains its ``perm_id`` column and ``order_intents`` its
        market-fallback columns ``parent_ref`` and ``fallback_at`` and its ``what_if_*`` columns, and both
        ``fills`` and ``order_intents`` their dated-contract columns (``contract``; the intent's
        ``spread_contract``, ``contract_price``, ``roll_state``), NULL on the rows already there.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as con:
            if _needs_upgrade(con):
                _upgrade_intents(con)
            con.execute(_SCHEMA)
            con.execute("ALTER TABLE fills ADD COLUMN IF NOT EXISTS perm_id BIGINT")
            con.execute("ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS parent_ref VARCHAR")
            con.execute("ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS fallback_at TIMESTAMPTZ")
            con.execute("ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS planned_quantity DOUBLE")
            con.execute("ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS adjust_reason VARCHAR")
            for col in _WHAT_IF_COLUMNS:
                kind = "VARCHAR" if col == "what_if_currency" else "DOUBLE"
                con.execute(f"ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS {col} {kind}")
            for col, kind in CONTRACT_INTENT_COLUMNS.items():  # dated futures contracts (NULL for stocks)
                con.execute(f"ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS {col} {kind}")
            con.execute("ALTER TABLE fills ADD COLUMN IF NOT EXISTS contract VARCHAR")
        return self

    def _read(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        with self.connect(read_only=True) as con, warnings.catch_warnings():
            # duckdb 2.0's DataFrame conversion calls DataFrame.drop(inplace=True), which pandas
            # 3.1 deprecates; the warning is about duckdb's internals, not this code.
            warnings.filterwarnings("ignore", message="The inplace keyword", category=Warning)
            try:
                return con.execute(sql, params or []).df()
            except duckdb.CatalogException as exc:
                raise LedgerError(f"ledger {self.path} has no tables yet: call Ledger.init() ({exc})") from exc
