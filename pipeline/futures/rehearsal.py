"""What a rehearsal of rolls found: rolls, orphans, expiry breaches and duplicate orders, from the
positions per contract a broker held at the end of each session and the orders it received.

``trading-pipeline rehearse`` plays the daily job session by session against a fake gateway and
records, per session, the broker's position in every dated contract and every order it got; these
functions turn those records into the report's lists. Plain pandas; no Dagster, no broker.

Inputs (long frames):

* ``positions``: ``session`` (datetime64), ``instrument``, ``contract`` (``YYYYMM``), ``position``
  (signed contracts at the end of the session; zeros may be left out);
* ``contracts``: ``session``, ``instrument``, ``priced_contract``, ``forward_contract`` (``YYYYMM``,
  from the multiple prices of that session);
* ``months``: ``instrument``, ``contract``, ``last_trade``, ``close_out`` (the broker's listing);
* ``states``: the ledger's roll-state history (``instrument``, ``state``, ``session``);
* ``orders``: ``order_ref``, ``filled``; ``intents``: ``order_ref``, ``quantity`` (the ledger's).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.futures.roll_states import ROLLING_STATES

__all__ = ["ROLL_COLUMNS", "duplicate_orders", "expiry_breaches", "held_contract", "rehearsal_orphans",
           "rehearsal_rolls"]

#: Columns of :func:`rehearsal_rolls`.
ROLL_COLUMNS = ("instrument", "from", "to", "session", "how")
_ROLLING = [s.value for s in ROLLING_STATES]


def held_contract(positions: pd.DataFrame) -> pd.DataFrame:
    """The contract each instrument mostly holds at the end of each session.

    Returns
    -------
    pd.DataFrame
        Columns ``session``, ``instrument``, ``contract`` (the contract with the largest absolute
        position; on a tie the later month), ``position`` (the instrument's total, signed); only
        sessions where the instrument holds something; sorted by instrument and session.
    """
    held = positions[positions["position"] != 0].assign(size=lambda f: f["position"].abs())
    total = held.groupby(["session", "instrument"])["position"].sum().rename("total")
    top = held.sort_values(["size", "contract"]).groupby(["session", "instrument"]).tail(1)
    out = top.join(total, on=["session", "instrument"])[["session", "instrument", "contract", "total"]]
    return out.rename(columns={"total": "position"}).sort_values(["instrument", "session"], ignore_index=True)


def rehearsal_rolls(positions: pd.DataFrame, states: pd.DataFrame | None = None,
                    settled: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rolls the positions show: an instrument's held contract moving to a later month between two
    sessions in which it holds a position.

    Parameters
    ----------
    positions : pd.DataFrame
        See the module (``session, instrument, contract, position``).
    states : pd.DataFrame, optional
        The ledger's roll-state history (``instrument, state, session``): the roll's ``how`` is the
        last rolling state (Passive, Force, Force_Outright, Close, No_Open) set for a session after
        the instrument's previous roll (on or after its session) and up to the roll's session.
    settled : pd.DataFrame, optional
        ``instrument, contract``: contracts the broker settled at expiry (a roll out of one of them
        without a rolling state is ``how = "expiry"``: the broker closed the position, nobody rolled it).

    Returns
    -------
    pd.DataFrame
        Columns :data:`ROLL_COLUMNS`: ``from`` / ``to`` contracts (``YYYYMM``), ``session`` (the first
        session in the new month), ``how`` (a roll state, ``expiry``, or ``orders``: outright orders
        moved it with no rolling state recorded); sorted by session then instrument.
    """
    held = held_contract(positions)
    previous = held.groupby("instrument")[["contract", "session"]].shift(1)
    moved = held[previous["contract"].notna() & (held["contract"] > previous["contract"].fillna(""))]
    rolls = pd.DataFrame({"instrument": moved["instrument"].to_numpy(), "from": previous.loc[moved.index, "contract"].to_numpy(),
                          "to": moved["contract"].to_numpy(), "session": pd.DatetimeIndex(moved["session"])})
    rolls["after"] = rolls.groupby("instrument")["session"].shift(1).fillna(pd.Timestamp.min)
    rolls["how"] = "orders"
    if settled is not None and len(settled):
        hit = pd.MultiIndex.from_frame(rolls[["instrument", "from"]]).isin(
            pd.MultiIndex.from_frame(settled[["instrument", "contract"]].astype(str)))
        rolls.loc[hit, "how"] = "expiry"
    if states is not None and len(states) and len(rolls):
        rolling = states[states["state"].isin(_ROLLING)].assign(session=lambda f: pd.to_datetime(f["session"]))
        rolling = rolling.dropna(subset=["session"]).sort_values("session")
        window = rolls.reset_index().merge(rolling[["instrument", "state", "session"]], on="instrument",
                                           suffixes=("", "_state"))
        window = window[(window["session_state"] >= window["after"]) & (window["session_state"] <= window["session"])]
        last = window.groupby("index")["state"].last()
        rolls.loc[last.index, "how"] = last.to_numpy()
    return rolls[list(ROLL_COLUMNS)].sort_values(["session", "instrument"], ignore_index=True)


def rehearsal_orphans(positions: pd.DataFrame, contracts: pd.DataFrame) -> pd.DataFrame:
    """Positions, session by session, in a contract that is neither that session's priced nor forward
    contract of the instrument (pysystemtrade's reconcile report; ``pipeline.futures.expiry.orphan_positions``
    for one session).

    Returns
    -------
    pd.DataFrame
        Columns ``session, instrument, contract, position, priced_contract, forward_contract``; a
        session without multiple prices for the instrument makes every position in it an orphan.
    """
    held = positions[positions["position"] != 0]
    table = held.merge(contracts[["session", "instrument", "priced_contract", "forward_contract"]],
                       on=["session", "instrument"], how="left")
    orphan = (table["contract"] != table["priced_contract"]) & (table["contract"] != table["forward_contract"])
    columns = ["session", "instrument", "contract", "position", "priced_contract", "forward_contract"]
    return table.loc[orphan, columns].sort_values(["session", "instrument", "contract"], ignore_index=True)


def expiry_breaches(positions: pd.DataFrame, months: pd.DataFrame, settled: pd.DataFrame | None = None) -> pd.DataFrame:
    """Contracts held at the end of a session on or after their close-out date, or settled by the
    broker at expiry (held into it): one row per contract, at the first session seen so.

    Parameters
    ----------
    positions, months : pd.DataFrame
        See the module.
    settled : pd.DataFrame, optional
        ``instrument, contract, session, position``: positions the broker closed at expiry.

    Returns
    -------
    pd.DataFrame
        Columns ``instrument, contract, session, position, close_out, last_trade, kind``
        (``held_past_close_out`` or ``settled_at_expiry``), sorted by session.
    """
    held = positions[positions["position"] != 0].merge(months[["instrument", "contract", "close_out", "last_trade"]],
                                                        on=["instrument", "contract"], how="left")
    late = held[held["session"] >= held["close_out"]].assign(kind="held_past_close_out")
    parts = [late]
    if settled is not None and len(settled):
        parts.append(settled.merge(months[["instrument", "contract", "close_out", "last_trade"]],
                                   on=["instrument", "contract"], how="left").assign(kind="settled_at_expiry"))
    columns = ["instrument", "contract", "session", "position", "close_out", "last_trade", "kind"]
    out = pd.concat([p[columns] for p in parts], ignore_index=True).sort_values("session", kind="stable")
    return out.drop_duplicates(["instrument", "contract"], keep="first").reset_index(drop=True)


def duplicate_orders(orders: pd.DataFrame, intents: pd.DataFrame) -> pd.DataFrame:
    """Orders the broker got twice (the same orderRef more than once) or that filled more than the
    ledger's intent (DESIGN rule 3: exactly once).

    Parameters
    ----------
    orders : pd.DataFrame
        The broker's orders: ``order_ref``, ``filled`` (units, >= 0); one row per order received.
    intents : pd.DataFrame
        The ledger's intents: ``order_ref``, ``quantity`` (signed units).

    Returns
    -------
    pd.DataFrame
        Columns ``order_ref``, ``received`` (orders with that ref), ``filled`` (their total),
        ``intended`` (|intent quantity|, NaN without an intent), ``reason``.
    """
    per_ref = orders.groupby("order_ref").agg(received=("order_ref", "size"), filled=("filled", "sum"))
    intended = intents.groupby("order_ref")["quantity"].apply(lambda q: float(np.abs(q).sum()))
    per_ref["intended"] = intended.reindex(per_ref.index)
    twice = per_ref["received"] > 1
    over = per_ref["filled"] > per_ref["intended"].fillna(np.inf) + 1e-9
    out = per_ref[twice | over].copy()
    out["reason"] = np.where(twice[twice | over], "orderRef received more than once", "filled more than the intent")
    return out.reset_index()[["order_ref", "received", "filled", "intended", "reason"]]
