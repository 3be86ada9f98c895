"""Inputs a bar source could not read (``source_errors``): one row per unreadable file version and
per universe instrument no readable input holds, from the run that first saw it until it is gone."""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd

from pipeline.store.ledger.connection import LedgerConnection
from pipeline.store.ledger.schema import _session_date

#: Columns of ``source_errors``.
SOURCE_ERROR_COLUMNS = (
    "error_id", "source", "item", "file", "instrument", "kind", "reason", "fingerprint", "first_seen", "last_seen",
    "first_run_id", "last_run_id", "fetch_start", "fetch_end", "resolved_at",
)
#: The ``kind`` of a universe instrument that no readable input holds.
NOT_IN_SOURCE = "not_in_source"


class SourceErrorTable(LedgerConnection):
    """``source_errors`` of the ledger."""

    def record_source_errors(self, source: str, unreadable: pd.DataFrame, missing: list[str], *,
                             run_id: str | None, start: Any, end: Any) -> pd.DataFrame:
        """Record what one fetch could not read; return the problems not open before this fetch.

        Parameters
        ----------
        source : str
            The source's name (``files``).
        unreadable : DataFrame
            :attr:`pipeline.bars.SourceReport.unreadable`: columns ``file, instrument, kind, reason,
            fingerprint``.
        missing : list of str
            Universe instruments no readable input holds (kind :data:`NOT_IN_SOURCE`).
        run_id : str or None
            The Dagster run of the fetch.
        start, end : date-like
            The fetched range.

        Returns
        -------
        DataFrame
            The rows inserted (columns :data:`SOURCE_ERROR_COLUMNS`): a file version or an
            instrument with no open row. One already open only gets ``last_seen``, ``last_run_id``
            and the range updated; open rows of ``source`` not in this fetch get ``resolved_at``.

        Notes
        -----
        A file is identified by its path and fingerprint (size and modification time), so a
        file replaced by another bad version is a new problem; an instrument by its symbol.
        """
        now = pd.Timestamp.now(tz="UTC").to_pydatetime()
        files = unreadable.assign(item="file:" + unreadable["file"] + ":" + unreadable["fingerprint"])
        instruments = pd.DataFrame({
            "item": [f"instrument:{i}" for i in missing], "file": None, "instrument": list(missing),
            "kind": NOT_IN_SOURCE, "reason": [f"{source}: no readable input holds {i}" for i in missing],
            "fingerprint": "",
        })
        seen = pd.concat([files[instruments.columns], instruments], ignore_index=True)
        s, e = _session_date(start), _session_date(end)
        with self._transaction() as con:
            open_items = {r[0] for r in con.execute(
                "SELECT item FROM source_errors WHERE source = ? AND resolved_at IS NULL", [source]).fetchall()}
            new = seen[~seen["item"].isin(open_items)].assign(
                error_id=[uuid.uuid4().hex for _ in range(int((~seen["item"].isin(open_items)).sum()))],
                source=source, first_seen=now, last_seen=now, first_run_id=run_id, last_run_id=run_id,
                fetch_start=s, fetch_end=e, resolved_at=None)
            new = new[list(SOURCE_ERROR_COLUMNS)]
            still = [[now, run_id, s, e, source, item] for item in seen["item"] if item in open_items]
            if still:
                con.executemany(
                    "UPDATE source_errors SET last_seen = ?, last_run_id = ?, fetch_start = ?, fetch_end = ? "
                    "WHERE source = ? AND item = ? AND resolved_at IS NULL", still)
            gone = [[now, source, item] for item in sorted(open_items - set(seen["item"]))]
            if gone:
                con.executemany("UPDATE source_errors SET resolved_at = ? WHERE source = ? AND item = ? "
                                "AND resolved_at IS NULL", gone)
            if len(new):
                con.executemany(
                    f"INSERT INTO source_errors ({', '.join(SOURCE_ERROR_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(SOURCE_ERROR_COLUMNS))})",
                    new.astype(object).where(new.notna(), None).to_numpy().tolist())
        return new.reset_index(drop=True)

    def source_errors(self, *, open_only: bool = False, run_id: str | None = None) -> pd.DataFrame:
        """Rows of ``source_errors`` (columns :data:`SOURCE_ERROR_COLUMNS`), oldest first; only the
        unresolved ones with ``open_only``, only those the run ``run_id`` saw with ``run_id``."""
        where, params = [], []
        if open_only:
            where.append("resolved_at IS NULL")
        if run_id is not None:
            where.append("last_run_id = ?")
            params.append(run_id)
        sql = "SELECT * FROM source_errors" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._read(sql + " ORDER BY first_seen, file NULLS LAST, instrument", params)
