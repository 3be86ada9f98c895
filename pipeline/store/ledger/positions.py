"""Positions in the ledger: what the ledger expects each broker to hold, the *position breaks*
where the broker disagrees, and the adjustments a person adopts after checking the account.

The account is the truth (DESIGN, "Futures positions ..."; reliability.md §2): the ledger's
expected position of an instrument is the sum of its recorded fills at that broker plus every
adjustment adopted by hand. A difference is a break, kept in ``position_breaks`` from the first
check that saw it until a later check finds the two agreeing again (``cleared``) or a person
adopts the broker's position (``adopted``, with a reason, in ``position_adjustments``).

``contract`` is the broker's key of the position: the dated contract month (``YYYYMM`` or
``YYYYMMDD``, as multiple prices label it) of a futures instrument with roll parameters, whose
orders and fills name it; the symbol for stocks, FX and futures without roll parameters (their
fills carry no contract). Two months of one future are two positions.
"""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd

from pipeline.store.ledger.connection import LedgerConnection, LedgerError
from pipeline.store.ledger.schema import _session_date

BREAK_COLUMNS = (
    "break_id", "broker", "instrument", "contract", "session", "last_session", "expected", "broker_position",
    "difference", "first_seen", "last_seen", "run_id", "resolved_at", "resolution", "resolved_by", "reason",
)
ADJUSTMENT_COLUMNS = (
    "adjusted_at", "broker", "instrument", "contract", "quantity", "expected_before", "broker_position",
    "adopted_by", "reason", "break_id",
)


class PositionTables(LedgerConnection):
    """``position_breaks`` and ``position_adjustments`` of the ledger."""

    def expected_positions(self, broker: str) -> pd.Series:
        """Signed units the ledger expects ``broker`` to hold, per instrument.

        Returns
        -------
        pd.Series
            Index ``instrument`` (sorted), name ``expected``: net fills at ``broker`` plus the
            adopted adjustments; instruments netting to zero are left out.
        """
        out = self._read(
            "SELECT instrument, sum(quantity) AS expected FROM ("
            "  SELECT instrument, quantity FROM fills WHERE broker = ?"
            "  UNION ALL SELECT instrument, quantity FROM position_adjustments WHERE broker = ?"
            ") GROUP BY instrument ORDER BY instrument",
            [broker, broker],
        )
        expected = out.set_index("instrument")["expected"].astype(float)
        return expected[expected.abs() > 1e-9]

    def expected_contract_positions(self, broker: str) -> pd.Series:
        """Signed units the ledger expects ``broker`` to hold, per (instrument, contract).

        The per-contract view of :meth:`expected_positions` (whose per-instrument sums the sizing
        path keeps using): fills grouped by their ``contract`` (the instrument's symbol for fills
        without one) plus the adjustments adopted for that contract.

        Returns
        -------
        pd.Series
            MultiIndex ``(instrument, contract)`` (sorted), name ``expected``, units; positions
            netting to zero are left out.
        """
        out = self._read(
            "SELECT instrument, contract, sum(quantity) AS expected FROM ("
            "  SELECT instrument, coalesce(contract, instrument) AS contract, quantity FROM fills WHERE broker = ?"
            "  UNION ALL SELECT instrument, contract, quantity FROM position_adjustments WHERE broker = ?"
            ") GROUP BY instrument, contract ORDER BY instrument, contract",
            [broker, broker],
        )
        index = pd.MultiIndex.from_frame(out[["instrument", "contract"]].astype(str))
        expected = pd.Series(out["expected"].to_numpy(dtype=float), index=index, name="expected")
        return expected[expected.abs() > 1e-9]

    def record_position_check(self, broker: str, differences: pd.DataFrame, session: Any,
                              run_id: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Record one reconciliation of ``broker``'s positions against the ledger's.

        Parameters
        ----------
        broker : str
            The broker's name (``ib``, ``paper``).
        differences : pd.DataFrame
            One row per position that disagrees: columns ``instrument, contract, expected,
            broker_position, difference`` (units, signed; difference = broker - expected). Empty
            when every position agrees.
        session : date-like
            The session of the order step that checked.
        run_id : str, optional
            The Dagster run of the check.

        Returns
        -------
        (open_breaks, new_breaks) : tuple of pd.DataFrame
            Every unresolved break of ``broker`` after this check (columns :data:`BREAK_COLUMNS`),
            and those first seen by it. A break seen before keeps its ``break_id`` and
            ``first_seen`` and gets this check's numbers; an open break this check did not see is
            resolved as ``cleared``.
        """
        day = _session_date(session)
        now = pd.Timestamp.now(tz="UTC").to_pydatetime()
        new_ids: list[str] = []
        with self._transaction() as con:
            open_rows = con.execute(
                "SELECT break_id, instrument, contract FROM position_breaks WHERE broker = ? AND resolved_at IS NULL",
                [broker],
            ).fetchall()
            open_by_key = {(i, c): b for b, i, c in open_rows}
            seen: set[str] = set()
            for r in differences.itertuples(index=False):  # a handful of breaks, not rows of data
                key = (str(r.instrument), str(r.contract))
                values = [day, float(r.expected), float(r.broker_position), float(r.difference), now, run_id]
                if key in open_by_key:
                    seen.add(open_by_key[key])
                    con.execute(
                        "UPDATE position_breaks SET last_session = ?, expected = ?, broker_position = ?, "
                        "difference = ?, last_seen = ?, run_id = ? WHERE break_id = ?",
                        [*values, open_by_key[key]],
                    )
                else:
                    break_id = uuid.uuid4().hex
                    new_ids.append(break_id)
                    con.execute(
                        "INSERT INTO position_breaks (break_id, broker, instrument, contract, session, last_session, "
                        "expected, broker_position, difference, first_seen, last_seen, run_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [break_id, broker, *key, day, *values[:4], now, now, run_id],
                    )
            for break_id in set(open_by_key.values()) - seen:
                con.execute(
                    "UPDATE position_breaks SET resolved_at = ?, resolution = 'cleared', resolved_by = 'reconciliation', "
                    "reason = 'the broker and the ledger agree again' WHERE break_id = ?",
                    [now, break_id],
                )
        open_breaks = self.open_position_breaks(broker)
        return open_breaks, open_breaks[open_breaks["break_id"].isin(new_ids)].reset_index(drop=True)

    def open_position_breaks(self, broker: str | None = None) -> pd.DataFrame:
        """Unresolved breaks (columns :data:`BREAK_COLUMNS`), of ``broker`` or of every broker."""
        where = "resolved_at IS NULL" + (" AND broker = ?" if broker else "")
        return self._read(f"SELECT * FROM position_breaks WHERE {where} ORDER BY instrument, contract",
                          [broker] if broker else None)

    def position_breaks(self) -> pd.DataFrame:
        """Every break ever recorded, open and resolved, oldest first."""
        return self._read("SELECT * FROM position_breaks ORDER BY first_seen, instrument")

    def adopt_broker_position(self, broker: str, instrument: str, broker_position: float, reason: str,
                              adopted_by: str, contract: str | None = None) -> float:
        """Take the broker's position of ``instrument`` as the truth, after a person checked it.

        Writes an adjustment of ``broker_position - expected`` to ``position_adjustments`` (so the
        expected position equals the broker's from now on) and resolves the instrument's open
        break as ``adopted``, in one transaction. ``contract`` names the dated month of a futures
        position (default: the instrument's symbol, the key of stocks); ``expected`` and
        ``broker_position`` are then that contract's.

        Returns
        -------
        float
            The adjustment, in signed units.

        Raises
        ------
        LedgerError
            ``reason`` or ``adopted_by`` is empty, or ``instrument`` has no open break at ``broker``
            (there is nothing to adopt: the positions agree).
        """
        if not reason.strip() or not adopted_by.strip():
            raise LedgerError("adopting a broker position needs a reason and who checked it")
        contract = contract or instrument
        expected = float(self.expected_contract_positions(broker).get((instrument, contract), 0.0))
        now = pd.Timestamp.now(tz="UTC").to_pydatetime()
        with self._transaction() as con:
            row = con.execute(
                "SELECT break_id FROM position_breaks WHERE broker = ? AND instrument = ? AND contract = ? "
                "AND resolved_at IS NULL",
                [broker, instrument, contract],
            ).fetchone()
            if row is None:
                raise LedgerError(
                    f"{instrument} ({contract}) has no open position break at broker {broker}: the ledger and the "
                    "broker agree, there is nothing to adopt"
                )
            adjustment = float(broker_position) - expected
            con.execute(
                f"INSERT INTO position_adjustments ({', '.join(ADJUSTMENT_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(ADJUSTMENT_COLUMNS))})",
                [now, broker, instrument, contract, adjustment, expected, float(broker_position), adopted_by,
                 reason, row[0]],
            )
            con.execute(
                "UPDATE position_breaks SET resolved_at = ?, resolution = 'adopted', resolved_by = ?, reason = ? "
                "WHERE break_id = ?",
                [now, adopted_by, reason, row[0]],
            )
        return adjustment

    def position_adjustments(self) -> pd.DataFrame:
        """Every adopted adjustment (columns :data:`ADJUSTMENT_COLUMNS`), oldest first."""
        return self._read("SELECT * FROM position_adjustments ORDER BY adjusted_at")
