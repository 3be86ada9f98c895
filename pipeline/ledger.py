"""The order ledger: order intents, their broker events, fills, the kill-switch log and alerts, in DuckDB.

The ledger lives in ``<state folder>/warehouse.duckdb`` (``state_root`` of the configuration, by
default the lake root; ``pipeline.storage``). It is the write-ahead log of the order
path (reliability.md §2): an intent is committed here before it is sent, and every fill is
kept here because brokers return a limited execution history.

DuckDB allows one writing process at a time (a second writer fails with "Could not set lock on
file"; duckdb.org/docs/current/connect/concurrency), so connections are short-lived — opened
for one unit of work and closed — and opening retries on the lock error with a short
exponential back-off (as ``dagster_duckdb.DuckDBResource`` does) before raising
:class:`LedgerLockedError`. Readers open read-only. All timestamps are stored as TIMESTAMPTZ
and returned in UTC.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from pipeline.risk import TradingState

if TYPE_CHECKING:
    from pipeline.broker.base import Fill

LEDGER_FILE = "warehouse.duckdb"

#: The life of an intent: INTENT (written, not yet sent) -> SUBMITTED (given to the broker) ->
#: ACKNOWLEDGED (the broker holds it: permId known) -> PARTIALLY_FILLED -> FILLED, CANCELLED or
#: REJECTED; DENIED by the pre-trade gate; RECORDED in record-only runs (never sent).
INTENT_STATUSES = (
    "INTENT", "SUBMITTED", "ACKNOWLEDGED", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REJECTED",
    "DENIED", "RECORDED",
)
#: Statuses of an intent whose outcome at the broker is not yet final in the ledger.
OPEN_STATUSES = ("INTENT", "SUBMITTED", "ACKNOWLEDGED", "PARTIALLY_FILLED")
MODES = ("submit", "record_only")
ORDER_TYPES = ("MKT", "LMT")

#: Columns written by :meth:`Ledger.record_intents` (the first 16 required, the rest optional).
_WRITTEN = (
    "order_ref", "strategy", "session", "instrument", "seq", "quantity", "side", "order_type",
    "reference_price", "target_position", "position_before", "status", "mode",
    "verdict", "deny_reason", "run_id", "limit_price", "account", "code_version", "input_hash",
    "parent_ref",
)
_REQUIRED = _WRITTEN[:13]
_TYPES = dict(zip(_WRITTEN, (
    "VARCHAR", "VARCHAR", "DATE", "VARCHAR", "INTEGER", "DOUBLE", "VARCHAR", "VARCHAR",
    "DOUBLE", "DOUBLE", "DOUBLE", "VARCHAR", "VARCHAR",
    "VARCHAR", "VARCHAR", "VARCHAR", "DOUBLE", "VARCHAR", "VARCHAR", "VARCHAR",
    "VARCHAR",
)))  # fmt: skip
#: A dry run's what-if preview of the intent (:meth:`Ledger.record_what_if`).
_WHAT_IF_COLUMNS = ("what_if_init_margin", "what_if_maint_margin", "what_if_commission", "what_if_currency")
#: Set from the broker's answers (:meth:`Ledger.record_broker_order`).
_BROKER_COLUMNS = (
    "perm_id", "broker_order_id", "filled_quantity", "avg_fill_price", "commission", "status_reason",
    "submitted_at",
)
INTENT_COLUMNS = (
    "order_ref", "strategy", "session", "instrument", "seq", "quantity", "side", "order_type",
    "reference_price", "target_position", "position_before", "verdict", "deny_reason", "status",
    "mode", "run_id", "limit_price", "account", "code_version", "input_hash", *_BROKER_COLUMNS,
    "parent_ref", "fallback_at", *_WHAT_IF_COLUMNS, "created_at", "updated_at",
)
FILL_COLUMNS = (
    "fill_id", "order_ref", "broker", "session", "instrument", "quantity", "price", "commission",
    "slippage_cost", "filled_at", "perm_id",
)
EVENT_COLUMNS = (
    "order_ref", "event_at", "status", "perm_id", "broker_order_id", "filled_quantity", "remaining",
    "avg_fill_price", "detail", "run_id",
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS order_intents (
    order_ref VARCHAR PRIMARY KEY,
    strategy VARCHAR NOT NULL,
    session DATE NOT NULL,
    instrument VARCHAR NOT NULL,
    seq INTEGER NOT NULL CHECK (seq >= 1),
    quantity DOUBLE NOT NULL,
    side VARCHAR NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type VARCHAR NOT NULL CHECK (order_type IN {ORDER_TYPES}),
    reference_price DOUBLE,
    target_position DOUBLE,
    position_before DOUBLE,
    verdict VARCHAR CHECK (verdict IN ('ACCEPTED', 'DENIED')),
    deny_reason VARCHAR,
    status VARCHAR NOT NULL CHECK (status IN {INTENT_STATUSES}),
    mode VARCHAR NOT NULL CHECK (mode IN {MODES}),
    run_id VARCHAR,
    limit_price DOUBLE,
    account VARCHAR,
    code_version VARCHAR,
    input_hash VARCHAR,
    perm_id BIGINT,
    broker_order_id BIGINT,
    filled_quantity DOUBLE,
    avg_fill_price DOUBLE,
    commission DOUBLE,
    status_reason VARCHAR,
    submitted_at TIMESTAMPTZ,
    parent_ref VARCHAR,
    fallback_at TIMESTAMPTZ,
    what_if_init_margin DOUBLE,
    what_if_maint_margin DOUBLE,
    what_if_commission DOUBLE,
    what_if_currency VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS order_events (
    order_ref VARCHAR NOT NULL,
    event_at TIMESTAMPTZ NOT NULL,
    status VARCHAR NOT NULL,
    perm_id BIGINT,
    broker_order_id BIGINT,
    filled_quantity DOUBLE,
    remaining DOUBLE,
    avg_fill_price DOUBLE,
    detail VARCHAR,
    run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS fills (
    fill_id VARCHAR PRIMARY KEY,
    order_ref VARCHAR NOT NULL,
    broker VARCHAR NOT NULL,
    session DATE NOT NULL,
    instrument VARCHAR NOT NULL,
    quantity DOUBLE NOT NULL,
    price DOUBLE NOT NULL,
    commission DOUBLE NOT NULL,
    slippage_cost DOUBLE NOT NULL,
    filled_at TIMESTAMPTZ NOT NULL,
    perm_id BIGINT
);
CREATE TABLE IF NOT EXISTS trading_state_log (
    changed_at TIMESTAMPTZ NOT NULL,
    state VARCHAR NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
    reason VARCHAR NOT NULL,
    changed_by VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    kind VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    subject VARCHAR,
    message VARCHAR NOT NULL,
    dedupe_key VARCHAR UNIQUE
);
CREATE TABLE IF NOT EXISTS quarantine_releases (
    session DATE NOT NULL,
    instrument VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    released_by VARCHAR NOT NULL,
    released_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session, instrument, rule)
);
"""


def _needs_upgrade(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``order_intents`` exists with an older layout (no ``submitted_at`` column)."""
    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'order_intents'"
    ).fetchall()}
    return bool(cols) and "submitted_at" not in cols


def _upgrade_intents(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuild ``order_intents`` with the current schema (CHECK constraints cannot be altered in
    DuckDB), copying every row; runs inside :meth:`Ledger.init`'s transaction."""
    old = [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'order_intents'"
    ).fetchall()]
    con.execute("ALTER TABLE order_intents RENAME TO order_intents_previous")
    con.execute(_SCHEMA)
    common = ", ".join(c for c in old if c in INTENT_COLUMNS)
    con.execute(f"INSERT INTO order_intents ({common}) SELECT {common} FROM order_intents_previous")
    con.execute("DROP TABLE order_intents_previous")


def _insert_fill(con: duckdb.DuckDBPyConnection, fill: "Fill") -> int:
    return con.execute(
        f"INSERT INTO fills ({', '.join(FILL_COLUMNS)}) VALUES ({', '.join('?' * len(FILL_COLUMNS))}) "
        "ON CONFLICT DO NOTHING",
        [
            fill.fill_id, fill.order_ref, fill.broker, _session_date(fill.session), fill.instrument,
            float(fill.quantity), float(fill.price), float(fill.commission),
            float(fill.slippage_cost), pd.Timestamp(fill.filled_at).to_pydatetime(),
            getattr(fill, "perm_id", None),
        ],
    ).fetchone()[0]


def _settle_fills(con: duckdb.DuckDBPyConnection, order_ref: str) -> None:
    """Sum an open intent's fills onto it; FILLED when they cover its quantity (1e-9 units)."""
    con.execute(
        "UPDATE order_intents AS i SET filled_quantity = f.qty, avg_fill_price = f.px, commission = f.comm, "
        "status = CASE WHEN abs(f.qty) >= abs(i.quantity) - 1e-9 THEN 'FILLED' ELSE 'PARTIALLY_FILLED' END, "
        "submitted_at = coalesce(i.submitted_at, current_timestamp), updated_at = current_timestamp "
        "FROM (SELECT sum(quantity) AS qty, sum(quantity * price) / nullif(sum(quantity), 0) AS px, "
        "sum(commission) AS comm FROM fills WHERE order_ref = ?) AS f "
        f"WHERE i.order_ref = ? AND i.status IN {OPEN_STATUSES} AND f.qty IS NOT NULL",
        [order_ref, order_ref],
    )


class LedgerError(ValueError):
    """The ledger cannot be read or written; the message names the file and what to do."""


class LedgerLockedError(LedgerError):
    """Another process holds the DuckDB write lock and did not release it in time."""


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("could not set" in text or "conflicting" in text)


def _session_date(session: Any) -> dt.date:
    """A session given as str, date or Timestamp, as a ``datetime.date``."""
    return pd.Timestamp(session).date()


class Ledger:
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

    def __init__(self, path: Path | str, *, lock_retries: int = 6, lock_backoff: float = 0.05) -> None:
        self.path = Path(path)
        self.lock_retries = max(1, int(lock_retries))
        self.lock_backoff = float(lock_backoff)
        self._anchor: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def at_lake(cls, lake_root: Path | str, **kwargs: Any) -> "Ledger":
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
    def hold(self) -> Iterator["Ledger"]:
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

    def init(self) -> "Ledger":
        """Create the folder, the file and the tables if missing (idempotent). Returns self.

        A ledger written by an earlier version is upgraded in the same transaction: the
        ``order_intents`` table is rebuilt with the current statuses, order types and columns
        (every row kept), ``fills`` gains its ``perm_id`` column and ``order_intents`` its
        market-fallback columns ``parent_ref`` and ``fallback_at`` and its ``what_if_*`` columns.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as con:
            if _needs_upgrade(con):
                _upgrade_intents(con)
            con.execute(_SCHEMA)
            con.execute("ALTER TABLE fills ADD COLUMN IF NOT EXISTS perm_id BIGINT")
            con.execute("ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS parent_ref VARCHAR")
            con.execute("ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS fallback_at TIMESTAMPTZ")
            for col in _WHAT_IF_COLUMNS:
                kind = "VARCHAR" if col == "what_if_currency" else "DOUBLE"
                con.execute(f"ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS {col} {kind}")
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

    # -- order intents ---------------------------------------------------------------------

    def record_intents(self, df: pd.DataFrame) -> int:
        """Append order intents in one transaction (all or none). Returns the rows written.

        Parameters
        ----------
        df : DataFrame
            One row per intent with at least the columns ``order_ref, strategy, session,
            instrument, seq, quantity, side, order_type, reference_price, target_position,
            position_before, status, mode``; optional ``verdict, deny_reason, run_id,
            limit_price, account, code_version, input_hash, parent_ref`` (the limit intent a
            market fallback replaces). ``session`` is a date (str, date
            or Timestamp); quantities and positions in units, signed; prices in price points.
            ``created_at``/``updated_at`` are set to now (UTC).

        Raises
        ------
        LedgerError
            A column is missing, an ``order_ref`` is already in the ledger (an intent is never
            overwritten: a new economic intent needs a new ``seq``), or a value breaks a
            constraint (side, status, mode, order type, verdict); nothing is written then.
        """
        if df.empty:
            return 0
        missing = [c for c in _REQUIRED if c not in df.columns]
        if missing:
            raise LedgerError(f"record_intents: columns {missing} missing from the intents frame")
        rows = df.loc[:, [c for c in _WRITTEN if c in df.columns]].copy()
        for col in _WRITTEN:
            if col not in rows.columns:
                rows[col] = None
        rows = rows[list(_WRITTEN)]
        rows["session"] = [_session_date(s) for s in rows["session"]]
        cols = ", ".join(_WRITTEN)
        casts = ", ".join(f"CAST({c} AS {_TYPES[c]})" for c in _WRITTEN)
        try:
            with self._transaction() as con:
                con.register("new_intents", rows)
                con.execute(
                    f"INSERT INTO order_intents ({cols}, created_at, updated_at) "
                    f"SELECT {casts}, current_timestamp, current_timestamp FROM new_intents"
                )
        except duckdb.ConstraintException as exc:
            refs = list(rows["order_ref"])
            raise LedgerError(
                f"ledger {self.path}: intents {refs} not recorded, a constraint failed ({exc}); "
                "an order_ref is never reused, so plan the next seq from the ledger's intents"
            ) from exc
        return len(rows)

    def update_status(
        self,
        order_ref: str,
        status: str,
        *,
        verdict: str | None = None,
        deny_reason: str | None = None,
        status_reason: str | None = None,
    ) -> None:
        """Set an intent's status (and optionally its verdict, denial reason, status reason).

        Raises
        ------
        LedgerError
            ``status`` is not one of ``INTENT_STATUSES``, or no intent has this ``order_ref``.
        """
        if status not in INTENT_STATUSES:
            raise LedgerError(f"update_status({order_ref!r}): status {status!r} is not one of {INTENT_STATUSES}")
        sets = ["status = ?", "updated_at = current_timestamp"]
        params: list[Any] = [status]
        if verdict is not None:
            sets.append("verdict = ?")
            params.append(verdict)
        if deny_reason is not None:
            sets.append("deny_reason = ?")
            params.append(deny_reason)
        if status_reason is not None:
            sets.append("status_reason = ?")
            params.append(status_reason)
        with self._transaction() as con:
            changed = con.execute(
                f"UPDATE order_intents SET {', '.join(sets)} WHERE order_ref = ?", [*params, order_ref]
            ).fetchone()[0]
        if changed == 0:
            raise LedgerError(f"update_status: no intent with order_ref {order_ref!r} in {self.path}")

    def record_what_if(self, preview: Any) -> None:
        """Store a what-if preview on its intent: ``what_if_init_margin`` and
        ``what_if_maint_margin`` (the change of the margin requirements), ``what_if_commission``
        and ``what_if_currency`` (the currency of the three amounts).

        Parameters
        ----------
        preview : pipeline.broker.base.OrderPreview
            ``order_ref``, ``init_margin_change``, ``maint_margin_change``, ``commission``,
            ``currency`` (NaN amounts are stored as NULL).

        Raises
        ------
        LedgerError
            No intent has this ``order_ref``.
        """
        def value(x: float | None) -> float | None:
            return None if x is None or pd.isna(x) else float(x)

        with self._transaction() as con:
            changed = con.execute(
                "UPDATE order_intents SET what_if_init_margin = ?, what_if_maint_margin = ?, what_if_commission = ?, "
                "what_if_currency = ?, updated_at = current_timestamp WHERE order_ref = ?",
                [value(preview.init_margin_change), value(preview.maint_margin_change), value(preview.commission),
                 preview.currency or None, preview.order_ref],
            ).fetchone()[0]
        if changed == 0:
            raise LedgerError(f"record_what_if: no intent with order_ref {preview.order_ref!r} in {self.path}")

    def start_fallback(self, order_ref: str) -> None:
        """Mark the limit intent ``order_ref`` as being replaced by a market order (its
        ``fallback_at``, set once, before the limit order is cancelled).

        From then on the order path owes the intent a market fallback for whatever the limit
        order leaves unfilled: a run that crashed after the cancel completes it, exactly once
        (:func:`pipeline.orders.execute_orders`, "Market fallback").

        Raises
        ------
        LedgerError
            No intent has this ``order_ref``.
        """
        with self._transaction() as con:
            changed = con.execute(
                "UPDATE order_intents SET fallback_at = coalesce(fallback_at, current_timestamp), "
                "updated_at = current_timestamp WHERE order_ref = ?",
                [order_ref],
            ).fetchone()[0]
        if changed == 0:
            raise LedgerError(f"start_fallback: no intent with order_ref {order_ref!r} in {self.path}")

    def intents(self, session: Any = None, instrument: str | None = None) -> pd.DataFrame:
        """Order intents, optionally of one session and/or instrument.

        Returns
        -------
        DataFrame
            One row per intent with the columns of ``order_intents`` (see the module's
            ``INTENT_COLUMNS``), ordered by session, instrument, seq; ``session`` as
            datetime64 (midnight), timestamps tz-aware UTC. Empty (with the columns) if none.
        """
        where, params = [], []
        if session is not None:
            where.append("session = ?")
            params.append(_session_date(session))
        if instrument is not None:
            where.append("instrument = ?")
            params.append(instrument)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._read(
            f"SELECT {', '.join(INTENT_COLUMNS)} FROM order_intents {clause} ORDER BY session, instrument, seq",
            params,
        )

    # -- fills -----------------------------------------------------------------------------

    def record_fill(self, fill: "Fill") -> bool:
        """Store a fill and settle its intent's filled quantity, in one transaction (idempotent).

        A fill whose ``fill_id`` is already stored is not written again (the primary key makes
        a duplicate fill impossible). The intent with the fill's ``order_ref``, if still open,
        gets the sums of its fills (``filled_quantity``, ``avg_fill_price``, ``commission``) and
        becomes FILLED once they cover its quantity, PARTIALLY_FILLED before that.

        Returns
        -------
        bool
            True if the fill was new, False if it was already in the ledger.
        """
        with self._transaction() as con:
            inserted = _insert_fill(con, fill)
            _settle_fills(con, fill.order_ref)
        return bool(inserted)

    def record_broker_order(self, order: Any, run_id: str | None = None) -> str:
        """Store what the broker says about an order: its fills, status, ids and an event.

        One transaction: every fill of ``order.fills`` (idempotent, as :meth:`record_fill`),
        then the intent's ``status`` (never moved back from a final one), ``perm_id``,
        ``broker_order_id``, ``status_reason``, ``submitted_at`` (first time only), and a row
        in ``order_events`` when the status, the filled quantity or the ids changed.

        Parameters
        ----------
        order : pipeline.broker.base.BrokerOrder
            ``order_ref``, ``status`` (one of ``INTENT_STATUSES`` from SUBMITTED on),
            ``fills``, ``perm_id``, ``order_id``, ``filled``, ``remaining``, ``reason``.
        run_id : str, optional
            The run that learned it (stored on the event).

        Returns
        -------
        str
            The intent's status after the update.

        Raises
        ------
        LedgerError
            Unknown status, or no intent with this order_ref.
        """
        if order.status not in INTENT_STATUSES:
            raise LedgerError(f"record_broker_order({order.order_ref!r}): status {order.status!r} unknown")
        with self._transaction() as con:
            before = con.execute(
                "SELECT status, perm_id, filled_quantity FROM order_intents WHERE order_ref = ?", [order.order_ref]
            ).fetchone()
            if before is None:
                raise LedgerError(f"record_broker_order: no intent with order_ref {order.order_ref!r} in {self.path}")
            for fill in order.fills:
                _insert_fill(con, fill)
            _settle_fills(con, order.order_ref)
            final = before[0] not in OPEN_STATUSES
            status = before[0] if final else order.status
            if not final and status in ("SUBMITTED", "ACKNOWLEDGED", "PARTIALLY_FILLED", "FILLED"):
                # the fills decide between PARTIALLY_FILLED and FILLED once there are any
                settled = con.execute(
                    "SELECT status FROM order_intents WHERE order_ref = ?", [order.order_ref]
                ).fetchone()[0]
                if settled in ("PARTIALLY_FILLED", "FILLED") and status != "FILLED":
                    status = settled
            con.execute(
                "UPDATE order_intents SET status = ?, perm_id = coalesce(?, perm_id), "
                "broker_order_id = coalesce(?, broker_order_id), status_reason = coalesce(?, status_reason), "
                "submitted_at = coalesce(submitted_at, current_timestamp), updated_at = current_timestamp "
                "WHERE order_ref = ?",
                [status, order.perm_id, order.order_id, order.reason, order.order_ref],
            )
            after = con.execute(
                "SELECT status, perm_id, filled_quantity, avg_fill_price FROM order_intents WHERE order_ref = ?",
                [order.order_ref],
            ).fetchone()
            if tuple(after[:3]) != tuple(before):
                con.execute(
                    f"INSERT INTO order_events ({', '.join(EVENT_COLUMNS)}) "
                    "VALUES (?, current_timestamp, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [order.order_ref, after[0], after[1], order.order_id, after[2], order.remaining, after[3],
                     order.reason, run_id],
                )
        return str(after[0])

    def order_events(self, order_ref: str | None = None) -> pd.DataFrame:
        """The audit trail of broker answers (columns ``EVENT_COLUMNS``), oldest first."""
        clause, params = ("WHERE order_ref = ?", [order_ref]) if order_ref else ("", [])
        return self._read(f"SELECT {', '.join(EVENT_COLUMNS)} FROM order_events {clause} ORDER BY event_at, rowid", params)

    def submitted_since(self, since: pd.Timestamp) -> int:
        """How many intents were first given to a broker at or after ``since`` (tz-aware)."""
        df = self._read(
            "SELECT count(*) AS n FROM order_intents WHERE submitted_at >= ?",
            [pd.Timestamp(since).to_pydatetime()],
        )
        return int(df["n"].iloc[0])

    def fills(self, *, broker: str | None = None, order_ref: str | None = None) -> pd.DataFrame:
        """Fills, optionally of one broker and/or order_ref, ordered by ``filled_at``.

        Returns
        -------
        DataFrame
            Columns ``FILL_COLUMNS``; quantity signed in units, price in price points,
            commission and slippage_cost in the instrument's currency, ``filled_at`` UTC.
        """
        where, params = [], []
        if broker is not None:
            where.append("broker = ?")
            params.append(broker)
        if order_ref is not None:
            where.append("order_ref = ?")
            params.append(order_ref)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._read(f"SELECT {', '.join(FILL_COLUMNS)} FROM fills {clause} ORDER BY filled_at, fill_id", params)

    def net_fills(self, *, broker: str | None = None) -> pd.Series:
        """Signed sum of fill quantities per instrument: the position the ledger implies.

        Returns
        -------
        Series
            Index ``instrument`` (sorted), values units, named ``position``; instruments whose
            fills net to zero are kept (value 0.0). Empty when there are no fills.
        """
        clause, params = ("WHERE broker = ?", [broker]) if broker is not None else ("", [])
        df = self._read(
            f"SELECT instrument, SUM(quantity) AS position FROM fills {clause} GROUP BY instrument ORDER BY instrument",
            params,
        )
        out = pd.Series(df["position"].to_numpy(dtype=float), index=pd.Index(df["instrument"], name="instrument"))
        return out.rename("position")

    # -- quarantine releases ---------------------------------------------------------------

    def release_quarantined(self, session: Any, instrument: str, rule: str, reason: str, released_by: str) -> bool:
        """Release a quarantined bar for one rule after a manual check (the next clean_bars run
        keeps it, with a WARN that names the release). Returns False if it was already released.

        Raises
        ------
        LedgerError
            ``reason`` or ``released_by`` is empty: a release must say why and who.
        """
        if not reason or not released_by:
            raise LedgerError("release_quarantined: give a reason and who checked the bar")
        with self._transaction() as con:
            exists = con.execute(
                "SELECT count(*) FROM quarantine_releases WHERE session = ? AND instrument = ? AND rule = ?",
                [_session_date(session), instrument, rule],
            ).fetchone()[0]
            if exists:
                return False
            con.execute(
                "INSERT INTO quarantine_releases VALUES (?, ?, ?, ?, ?, current_timestamp)",
                [_session_date(session), instrument, rule, reason, released_by],
            )
        return True

    def quarantine_releases(self) -> pd.DataFrame:
        """Released (session, instrument, rule) triples with reason, who and when."""
        return self._read("SELECT * FROM quarantine_releases ORDER BY session, instrument, rule")

    # -- kill switch -----------------------------------------------------------------------

    def set_trading_state(self, state: TradingState | str, reason: str, changed_by: str) -> None:
        """Append a kill-switch change (the log is never updated in place).

        Raises
        ------
        LedgerError
            ``state`` is not ACTIVE / REDUCING / HALTED, or ``reason`` or ``changed_by`` is empty
            (a kill switch change must say why and who).
        """
        try:
            state = TradingState(state)
        except ValueError as exc:
            raise LedgerError(f"set_trading_state: {state!r} is not one of ACTIVE, REDUCING, HALTED") from exc
        if not reason or not changed_by:
            raise LedgerError("set_trading_state: give a reason and who changed the state")
        with self._transaction() as con:
            con.execute(
                "INSERT INTO trading_state_log VALUES (current_timestamp, ?, ?, ?)",
                [state.value, reason, changed_by],
            )

    def trading_state(self) -> TradingState:
        """The current kill-switch state: the latest logged change, ACTIVE if none."""
        df = self._read("SELECT state FROM trading_state_log ORDER BY changed_at DESC, rowid DESC LIMIT 1")
        return TradingState(df["state"].iloc[0]) if len(df) else TradingState.ACTIVE

    def trading_state_log(self) -> pd.DataFrame:
        """All kill-switch changes, oldest first (columns changed_at, state, reason, changed_by)."""
        return self._read("SELECT * FROM trading_state_log ORDER BY changed_at, rowid")

    # -- alerts ----------------------------------------------------------------------------

    def add_alert(
        self,
        kind: str,
        severity: str,
        subject: str | None,
        message: str,
        dedupe_key: str | None = None,
    ) -> bool:
        """Store an alert unless one with the same ``dedupe_key`` exists.

        Parameters
        ----------
        kind : str
            What happened, e.g. ``order_denied``, ``broker_error``, ``quality``.
        severity : str
            E.g. ``INFO``, ``WARN``, ``ERROR`` (free text; the delivery sensor decides routing).
        subject : str or None
            What it is about (an order_ref, an instrument, an asset).
        message : str
            Human-readable text: what, where and what to do.
        dedupe_key : str, optional
            Alerts sharing a key are stored once; None never de-duplicates.

        Returns
        -------
        bool
            True if stored, False if an alert with this ``dedupe_key`` already exists.
        """
        with self._transaction() as con:
            inserted = con.execute(
                "INSERT INTO alerts VALUES (?, current_timestamp, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [uuid.uuid4().hex, kind, severity, subject, message, dedupe_key],
            ).fetchone()[0]
        return bool(inserted)

    def alerts(self) -> pd.DataFrame:
        """All alerts, oldest first (columns alert_id, created_at, kind, severity, subject,
        message, dedupe_key)."""
        return self._read("SELECT * FROM alerts ORDER BY created_at, rowid")
