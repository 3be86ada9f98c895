"""The capital each daily run sized with (``capital``), one row per session.

A backfill or backtest over sessions that have a recorded capital sizes with it, so it reproduces
what the daily runs did; sessions before the first record use the configured number
(:func:`pipeline.portfolio.capital.capital_series`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.store.ledger.connection import LedgerConnection
from pipeline.store.ledger.schema import _session_date

CAPITAL_COLUMNS = ("session", "capital", "source", "net_liquidation", "fraction", "base_currency", "recorded_at",
                   "run_id", "note")


class CapitalTable(LedgerConnection):
    """``capital`` of the ledger."""

    def record_capital(self, session: Any, capital: float, source: str, base_currency: str, *,
                       net_liquidation: float | None = None, fraction: float | None = None,
                       run_id: str | None = None, note: str | None = None) -> None:
        """Record the capital ``session`` was sized with (base currency); a re-run replaces it."""
        with self._transaction() as con:
            con.execute("DELETE FROM capital WHERE session = ?", [_session_date(session)])
            con.execute(
                f"INSERT INTO capital ({', '.join(CAPITAL_COLUMNS)}) VALUES ({', '.join('?' * len(CAPITAL_COLUMNS))})",
                [_session_date(session), float(capital), source, net_liquidation, fraction, base_currency,
                 pd.Timestamp.now(tz="UTC").to_pydatetime(), run_id, note],
            )

    def capital_records(self) -> pd.DataFrame:
        """Every recorded capital (columns :data:`CAPITAL_COLUMNS`), by session."""
        return self._read("SELECT * FROM capital ORDER BY session")

    def recorded_capital(self) -> pd.Series:
        """Index ``session`` (datetime64), the capital each recorded session was sized with."""
        rows = self.capital_records()
        return pd.Series(rows["capital"].to_numpy(dtype=float), index=pd.DatetimeIndex(rows["session"], name="session"),
                         name="capital")
