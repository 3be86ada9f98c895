"""Alerts in the ledger (``alerts``), de-duplicated by key; the delivery sensor sends them on."""

from __future__ import annotations

import uuid

import pandas as pd

from pipeline.store.ledger.connection import LedgerConnection


class AlertTable(LedgerConnection):
    """``alerts`` of the ledger."""

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
