"""Missing bars in the ledger (``missing_bars``): the (session, instrument) pairs of the sessions
``clean_bars`` wrote that have no clean bar, with the reason, the policy and the action taken
(:mod:`pipeline.quality.missing`). A re-run of a session replaces its rows."""

from __future__ import annotations

import pandas as pd

from pipeline.store.ledger.connection import LedgerConnection

#: Columns of ``missing_bars``.
MISSING_BAR_COLUMNS = ("session", "instrument", "reason", "policy", "action", "last_bar", "run_id", "recorded_at")


class MissingBarTable(LedgerConnection):
    """``missing_bars`` of the ledger."""

    def record_missing_bars(self, gaps: pd.DataFrame, sessions: pd.DatetimeIndex, run_id: str | None) -> int:
        """Replace the rows of ``sessions`` with ``gaps``; returns the number of rows written.

        Parameters
        ----------
        gaps : DataFrame
            :func:`pipeline.quality.missing.classify_missing_bars` output (columns ``session,
            instrument, reason, policy, action, last_bar``), sessions within ``sessions``.
        sessions : DatetimeIndex
            The sessions the run classified: their old rows are deleted first (so a gap filled
            since the last run disappears).
        run_id : str or None
            The Dagster run.
        """
        days = pd.DataFrame({"session": pd.DatetimeIndex(sessions).date})
        rows = pd.DataFrame({
            "session": pd.DatetimeIndex(gaps["session"]).date,
            "instrument": gaps["instrument"].astype("str").to_numpy(),
            "reason": gaps["reason"].astype("str").to_numpy(),
            "policy": gaps["policy"].astype("str").to_numpy(),
            "action": gaps["action"].astype("str").to_numpy(),
            "last_bar": pd.Series(pd.DatetimeIndex(gaps["last_bar"]).date, dtype=object).where(
                gaps["last_bar"].notna().to_numpy(), None).to_numpy(),
            "run_id": run_id,
            "recorded_at": pd.Timestamp.now(tz="UTC"),
        }, columns=list(MISSING_BAR_COLUMNS))
        with self._transaction() as con:
            con.register("run_days", days)
            con.execute("DELETE FROM missing_bars WHERE session IN (SELECT CAST(session AS DATE) FROM run_days)")
            if len(rows):
                con.register("new_rows", rows)
                con.execute("INSERT INTO missing_bars SELECT CAST(session AS DATE), instrument, reason, policy, "
                            "action, CAST(last_bar AS DATE), run_id, recorded_at FROM new_rows")
            con.unregister("run_days")
        return len(rows)

    def missing_bars(self, session: object | None = None) -> pd.DataFrame:
        """Rows of ``missing_bars`` (columns :data:`MISSING_BAR_COLUMNS`) by session and instrument,
        all or those of ``session``."""
        if session is None:
            return self._read("SELECT * FROM missing_bars ORDER BY session, instrument")
        return self._read("SELECT * FROM missing_bars WHERE session = ? ORDER BY instrument",
                          [pd.Timestamp(session).date()])
