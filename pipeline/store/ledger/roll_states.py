"""Roll states in the ledger (``roll_states``): the roll state of each futures instrument, with its
history. Append-only: every change is a new row (instrument, state, reason, set_by, set_at,
session); the current state of an instrument is its latest row, ``No_Roll`` when it has none.

The states and their meaning are :class:`pipeline.futures.roll_states.RollState`; the table's
CHECK holds the same names (:data:`pipeline.store.ledger.schema.ROLL_STATES`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.store.ledger.connection import LedgerConnection, LedgerError
from pipeline.store.ledger.schema import ROLL_STATES

#: Columns of ``roll_states``.
ROLL_STATE_COLUMNS = ("instrument", "state", "reason", "set_by", "set_at", "session")
#: The state of an instrument that has no row.
DEFAULT_ROLL_STATE = "No_Roll"
_LATEST = (
    "SELECT instrument, state, reason, set_by, set_at, session FROM roll_states "
    "QUALIFY row_number() OVER (PARTITION BY instrument ORDER BY set_at DESC, rowid DESC) = 1"
)


class RollStateTable(LedgerConnection):
    """``roll_states`` of the ledger."""

    def set_roll_states(self, states: pd.DataFrame, set_by: str, session: Any | None = None) -> int:
        """Append one row per instrument of ``states``; returns the number of rows written.

        Parameters
        ----------
        states : pd.DataFrame
            Columns ``instrument``, ``state`` (one of :data:`ROLL_STATES`), ``reason`` (non-empty);
            e.g. the changed rows of :func:`pipeline.futures.roll_states.roll_policy` with the index
            reset.
        set_by : str
            Who set them: a person, or the process (``roll_policy``).
        session : date-like, optional
            The session the states were decided for.

        Raises
        ------
        LedgerError
            An unknown state, an empty reason or ``set_by``, or a missing column; nothing is written.
        """
        missing = [c for c in ("instrument", "state", "reason") if c not in states.columns]
        if missing:
            raise LedgerError(f"set_roll_states: missing column(s) {', '.join(missing)}")
        bad = ~states["state"].isin(ROLL_STATES)
        if bad.any():
            raise LedgerError(f"set_roll_states: unknown roll state {states.loc[bad, 'state'].iloc[0]!r} for "
                              f"{states.loc[bad, 'instrument'].iloc[0]}; one of {', '.join(ROLL_STATES)}")
        blank = states["reason"].fillna("").astype(str).str.strip().eq("") | states["instrument"].fillna("").eq("")
        if blank.any() or not str(set_by or "").strip():
            raise LedgerError("set_roll_states: every row needs an instrument and a reason, and set_by says who")
        rows = pd.DataFrame({
            "instrument": states["instrument"].astype(str).to_numpy(),
            "state": states["state"].astype(str).to_numpy(),
            "reason": states["reason"].astype(str).to_numpy(),
            "set_by": set_by,
            "set_at": pd.Timestamp.now(tz="UTC"),
            "session": pd.Timestamp(session).normalize() if session is not None else pd.NaT,
        }, columns=list(ROLL_STATE_COLUMNS))
        if rows.empty:
            return 0
        with self._transaction() as con:
            con.register("new_roll_states", rows)
            con.execute("INSERT INTO roll_states SELECT instrument, state, reason, set_by, set_at, "
                        "CAST(session AS DATE) FROM new_roll_states")
            con.unregister("new_roll_states")
        return len(rows)

    def set_roll_state(self, instrument: str, state: str, reason: str, set_by: str, session: Any | None = None) -> None:
        """Append one state of ``instrument`` (see :meth:`set_roll_states`; LedgerError on bad input)."""
        self.set_roll_states(pd.DataFrame({"instrument": [instrument], "state": [state], "reason": [reason]}),
                             set_by=set_by, session=session)

    def current_roll_states(self) -> pd.DataFrame:
        """The latest row of each instrument that has one (columns :data:`ROLL_STATE_COLUMNS`), by instrument."""
        return self._read(f"{_LATEST} ORDER BY instrument")

    def roll_state(self, instrument: str) -> str:
        """The current roll state of ``instrument``: its latest row's, else :data:`DEFAULT_ROLL_STATE`."""
        rows = self._read(f"SELECT state FROM ({_LATEST}) WHERE instrument = ?", [instrument])
        return str(rows["state"].iloc[0]) if len(rows) else DEFAULT_ROLL_STATE

    def roll_state_history(self, instrument: str | None = None) -> pd.DataFrame:
        """Every row (columns :data:`ROLL_STATE_COLUMNS`), oldest first, of ``instrument`` or of all."""
        if instrument is None:
            return self._read("SELECT * FROM roll_states ORDER BY set_at, rowid")
        return self._read("SELECT * FROM roll_states WHERE instrument = ? ORDER BY set_at, rowid", [instrument])
