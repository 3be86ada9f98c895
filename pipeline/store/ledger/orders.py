"""Orders in the ledger: order intents (with the broker's answers, market fallback and what-if
preview columns), their broker events and the fills.

The ledger is the write-ahead log of the order path (reliability.md §2): an intent is committed
here before it is sent, and every fill is kept here because brokers return a limited execution
history.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd

from pipeline.store.ledger.connection import LedgerConnection, LedgerError
from pipeline.store.ledger.schema import (
    _REQUIRED,
    _TYPES,
    _WRITTEN,
    EVENT_COLUMNS,
    FILL_COLUMNS,
    INTENT_COLUMNS,
    INTENT_STATUSES,
    OPEN_STATUSES,
    _session_date,
)
from pipeline.trading import Fill


def _insert_fill(con: duckdb.DuckDBPyConnection, fill: Fill) -> int:
    return con.execute(
        f"INSERT INTO fills ({', '.join(FILL_COLUMNS)}) VALUES ({', '.join('?' * len(FILL_COLUMNS))}) "
        "ON CONFLICT DO NOTHING",
        [
            fill.fill_id, fill.order_ref, fill.broker, _session_date(fill.session), fill.instrument,
            float(fill.quantity), float(fill.price), float(fill.commission),
            float(fill.slippage_cost), pd.Timestamp(fill.filled_at).to_pydatetime(),
            getattr(fill, "perm_id", None), getattr(fill, "contract", None),
        ],
    ).fetchone()[0]


def _settle_fills(con: duckdb.DuckDBPyConnection, order_ref: str) -> None:
    """Sum an open intent's fills onto it; FILLED when they cover its quantity (1e-9 units).

    A calendar spread (``spread_contract`` set) fills leg by leg: its filled quantity is that of
    its forward leg (the fills in ``spread_contract``), its average price the spread's
    (``sum(quantity x price)`` over both legs / the forward leg's quantity = forward - priced).
    """
    con.execute(
        "UPDATE order_intents AS i SET filled_quantity = f.qty, avg_fill_price = f.px, commission = f.comm, "
        "status = CASE WHEN abs(f.qty) >= abs(i.quantity) - 1e-9 THEN 'FILLED' ELSE 'PARTIALLY_FILLED' END, "
        "submitted_at = coalesce(i.submitted_at, current_timestamp), updated_at = current_timestamp "
        "FROM (SELECT sum(CASE WHEN s.leg IS NULL OR x.contract = s.leg THEN x.quantity ELSE 0 END) AS qty, "
        "sum(x.quantity * x.price) / nullif(sum(CASE WHEN s.leg IS NULL OR x.contract = s.leg THEN x.quantity "
        "ELSE 0 END), 0) AS px, sum(x.commission) AS comm FROM fills AS x, "
        "(SELECT max(spread_contract) AS leg FROM order_intents WHERE order_ref = ?) AS s WHERE x.order_ref = ?) AS f "
        f"WHERE i.order_ref = ? AND i.status IN {OPEN_STATUSES} AND f.qty IS NOT NULL",
        [order_ref, order_ref, order_ref],
    )


class OrderTables(LedgerConnection):
    """``order_intents``, ``order_events`` and ``fills`` of the ledger."""

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
            market fallback replaces), ``planned_quantity, adjust_reason`` (a trade the position
            limit clipped: the quantity planned and why), ``contract, spread_contract,
            contract_price, roll_state`` (a futures order to a dated contract, see
            :class:`pipeline.trading.OrderIntent`). ``session`` is a date (str, date
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
        preview : pipeline.trading.OrderPreview
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
        (:func:`pipeline.execution.submit.execute_orders`, "Market fallback").

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

    def record_fill(self, fill: Fill) -> bool:
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
        order : pipeline.trading.BrokerOrder
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

    def net_fills(self, *, broker: str | None = None, by_contract: bool = False) -> pd.Series:
        """Signed sum of fill quantities per instrument: the position the ledger implies.

        Parameters
        ----------
        broker : str, optional
            Only this broker's fills.
        by_contract : bool
            Per (instrument, contract) instead: a MultiIndex ``(instrument, contract)`` whose
            contract is the fill's dated contract, or the instrument's symbol for fills without
            one (stocks, FX, futures without roll parameters).

        Returns
        -------
        Series
            Index ``instrument`` (sorted; or the MultiIndex above), values units, named
            ``position``; positions netting to zero are kept (value 0.0). Empty when there are no fills.
        """
        clause, params = ("WHERE broker = ?", [broker]) if broker is not None else ("", [])
        if by_contract:
            df = self._read(
                "SELECT instrument, coalesce(contract, instrument) AS contract, SUM(quantity) AS position FROM fills "
                f"{clause} GROUP BY ALL ORDER BY instrument, contract",
                params,
            )
            index = pd.MultiIndex.from_frame(df[["instrument", "contract"]].astype(str))
            return pd.Series(df["position"].to_numpy(dtype=float), index=index, name="position")
        df = self._read(
            f"SELECT instrument, SUM(quantity) AS position FROM fills {clause} GROUP BY instrument ORDER BY instrument",
            params,
        )
        out = pd.Series(df["position"].to_numpy(dtype=float), index=pd.Index(df["instrument"], name="instrument"))
        return out.rename("position")
