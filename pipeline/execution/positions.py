"""Position reconciliation before every order step: the account is the truth.

The broker's positions are compared with the ledger's expected ones (its fills at that broker
plus adopted adjustments, :meth:`pipeline.store.ledger.Ledger.expected_positions`). Each
difference is a *position break*: recorded in the ledger's ``position_breaks`` table, alerted
once (ERROR), and, by default, no order is sent for that instrument until the break clears or a
person adopts the broker's position (``trading-pipeline positions adopt``); the other instruments
trade. An answer with no position at all while the ledger expects some is not read as "flat": the
whole order step stops (DESIGN rule 5). pysystemtrade's ``reconcile`` report and
nautilus_trader's position reconciliation work the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.adapters.alerts import notify
from pipeline.store.ledger import Ledger
from pipeline.trading import BrokerError

#: Positions within this many units of each other agree (float sums of fills).
TOLERANCE = 1e-6
DIFFERENCE_COLUMNS = ("instrument", "contract", "expected", "broker_position", "difference")


def position_differences(expected: pd.Series, held: pd.Series, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """The positions where the broker and the ledger disagree.

    Parameters
    ----------
    expected : pd.Series
        Signed units the ledger expects (missing: 0): index instrument, or a MultiIndex
        ``(instrument, contract)`` (:meth:`pipeline.store.ledger.Ledger.expected_contract_positions`).
    held : pd.Series
        Signed units the broker reports (missing: 0), indexed as ``expected``.
    tolerance : float
        Differences up to this many units are agreement.

    Returns
    -------
    pd.DataFrame
        Columns :data:`DIFFERENCE_COLUMNS`, one row per position whose ``broker_position -
        expected`` exceeds ``tolerance`` in absolute value, sorted by instrument and contract.
        Per contract, two months of one future are two positions and a break names its month;
        with a plain instrument index ``contract`` is the instrument's symbol.
    """
    per_contract = isinstance(expected.index, pd.MultiIndex) or isinstance(held.index, pd.MultiIndex)
    if per_contract:
        expected, held = (s if isinstance(s.index, pd.MultiIndex) or s.empty else
                          s.set_axis(pd.MultiIndex.from_arrays([s.index, s.index])) for s in (expected, held))
        keys = expected.index.union(held.index) if len(expected) and len(held) else (
            expected.index if len(expected) else held.index)
    else:
        keys = expected.index.union(held.index)
    exp = expected.reindex(keys).fillna(0.0).astype(float)
    brk = held.reindex(keys).fillna(0.0).astype(float)
    diff = brk - exp
    instruments = keys.get_level_values(0) if per_contract else keys
    contracts = keys.get_level_values(1) if per_contract else keys
    out = pd.DataFrame({"instrument": instruments.astype(str), "contract": contracts.astype(str),
                        "expected": exp.to_numpy(), "broker_position": brk.to_numpy(), "difference": diff.to_numpy()})
    return out[diff.abs().to_numpy() > tolerance].sort_values(["instrument", "contract"]).reset_index(drop=True)


@dataclass(frozen=True)
class PositionCheck:
    """The outcome of :func:`reconcile_positions`.

    Attributes
    ----------
    open_breaks : pd.DataFrame
        Every unresolved break at the broker after the check (the ledger's ``position_breaks`` rows).
    new_breaks : pd.DataFrame
        The breaks this check saw first (alerted).
    """

    open_breaks: pd.DataFrame
    new_breaks: pd.DataFrame

    def blocked(self) -> dict[str, str]:
        """instrument -> the reason no order is sent for it (its open break)."""
        return {r.instrument: break_reason(r) for r in self.open_breaks.itertuples(index=False)}


def break_reason(row: Any) -> str:
    """A break in words: what differs, since when, and what to do."""
    since = pd.Timestamp(row.first_seen).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"position_break: the broker holds {row.broker_position:g} of {row.instrument} ({row.contract}) where the "
        f"ledger expects {row.expected:g} (difference {row.difference:+g}) since {since}; check the account, then "
        f"run `trading-pipeline positions adopt {row.instrument}"
        + ("" if row.contract == row.instrument else f" --contract {row.contract}")
        + " --reason ...` to take the broker's position"
    )


def _name(key: Any) -> str:
    """A position's key in words: ``AAPL``, or ``MCL 202312`` for a dated contract."""
    if isinstance(key, tuple):
        return key[0] if key[0] == key[1] else f"{key[0]} {key[1]}"
    return str(key)


def reconcile_positions(ledger: Ledger, broker_name: str, held: pd.Series, session: Any,
                        run_id: str | None = None) -> PositionCheck:
    """Compare the broker's positions with the ledger's, record the breaks and alert new ones.

    Parameters
    ----------
    ledger : Ledger
        The initialised ledger.
    broker_name : str
        The broker's name (``ib``, ``paper``): whose fills count as expected.
    held : pd.Series
        Signed units the broker reports now (flat positions may be missing): per (instrument,
        contract) (a MultiIndex, :func:`pipeline.execution.broker_io.broker_contract_positions`),
        compared with the ledger's per-contract view, so two months of one future are two
        positions; or per instrument (a plain index), compared with the per-instrument sums.
    session : date-like
        The session of the order step.
    run_id : str, optional
        The Dagster run.

    Returns
    -------
    PositionCheck

    Raises
    ------
    BrokerError
        The broker reported no position at all while the ledger expects some: an empty answer
        is not "flat" (DESIGN rule 5). The breaks are recorded and alerted first; nothing is sent.
    """
    per_contract = isinstance(held.index, pd.MultiIndex)
    expected = ledger.expected_contract_positions(broker_name) if per_contract else ledger.expected_positions(broker_name)
    differences = position_differences(expected, held)
    open_breaks, new_breaks = ledger.record_position_check(broker_name, differences, session, run_id)
    for r in new_breaks.itertuples(index=False):
        notify(ledger, "position_break", "ERROR", r.instrument, break_reason(r), f"position_break:{r.break_id}")
    if held.abs().sum() == 0 and len(expected):
        message = (
            f"broker {broker_name} reported no positions while the ledger expects {len(expected)} "
            f"({', '.join(f'{_name(i)} {q:g}' for i, q in expected.items())}); an empty answer is not flat, so no order "
            "is sent. Check the account: if it really is flat, adopt each position with "
            "`trading-pipeline positions adopt INSTRUMENT --reason ...`"
        )
        notify(ledger, "position_break", "ERROR", "positions", message,
               f"empty_positions:{broker_name}:{pd.Timestamp(session).date()}")
        raise BrokerError(message)
    return PositionCheck(open_breaks=open_breaks, new_breaks=new_breaks)
