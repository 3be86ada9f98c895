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
        Index instrument; signed units the ledger expects (missing: 0).
    held : pd.Series
        Index instrument; signed units the broker reports (missing: 0).
    tolerance : float
        Differences up to this many units are agreement.

    Returns
    -------
    pd.DataFrame
        Columns :data:`DIFFERENCE_COLUMNS` (``contract`` is the instrument's symbol: positions are
        keyed by symbol until futures orders go to dated contracts), one row per instrument whose
        ``broker_position - expected`` exceeds ``tolerance`` in absolute value, sorted by instrument.
    """
    instruments = expected.index.union(held.index)
    exp = expected.reindex(instruments).fillna(0.0).astype(float)
    brk = held.reindex(instruments).fillna(0.0).astype(float)
    diff = brk - exp
    out = pd.DataFrame({"instrument": instruments.astype(str), "contract": instruments.astype(str),
                        "expected": exp.to_numpy(), "broker_position": brk.to_numpy(), "difference": diff.to_numpy()})
    return out[diff.abs().to_numpy() > tolerance].sort_values("instrument").reset_index(drop=True)


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
        f"run `trading-pipeline positions adopt {row.instrument} --reason ...` to take the broker's position"
    )


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
        Index instrument; signed units the broker reports now (flat instruments may be missing).
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
    expected = ledger.expected_positions(broker_name)
    differences = position_differences(expected, held)
    open_breaks, new_breaks = ledger.record_position_check(broker_name, differences, session, run_id)
    for r in new_breaks.itertuples(index=False):
        notify(ledger, "position_break", "ERROR", r.instrument, break_reason(r), f"position_break:{r.break_id}")
    if held.abs().sum() == 0 and len(expected):
        message = (
            f"broker {broker_name} reported no positions while the ledger expects {len(expected)} "
            f"({', '.join(f'{i} {q:g}' for i, q in expected.items())}); an empty answer is not flat, so no order "
            "is sent. Check the account: if it really is flat, adopt each position with "
            "`trading-pipeline positions adopt INSTRUMENT --reason ...`"
        )
        notify(ledger, "position_break", "ERROR", "positions", message,
               f"empty_positions:{broker_name}:{pd.Timestamp(session).date()}")
        raise BrokerError(message)
    return PositionCheck(open_breaks=open_breaks, new_breaks=new_breaks)
