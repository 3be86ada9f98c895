"""The kill switch in the ledger: the append-only log of trading-state changes
(``trading_state_log``) and the current state, ACTIVE / REDUCING / HALTED."""

from __future__ import annotations

import pandas as pd

from pipeline.store.ledger.connection import LedgerConnection, LedgerError
from pipeline.trading import TradingState


class TradingStateTable(LedgerConnection):
    """``trading_state_log`` of the ledger."""

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
