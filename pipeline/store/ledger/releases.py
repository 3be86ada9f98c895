"""Quarantine releases in the ledger: a quarantined bar released for one rule after a manual
check (``quarantine_releases``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.store.ledger.connection import LedgerConnection, LedgerError
from pipeline.store.ledger.schema import _session_date


class QuarantineReleaseTable(LedgerConnection):
    """``quarantine_releases`` of the ledger."""

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
