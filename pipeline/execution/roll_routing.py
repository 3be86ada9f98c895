"""Futures orders to dated contracts: the planned instrument trades routed by roll state.

:func:`pipeline.execution.intents.plan_orders` plans one trade per instrument (target - position -
working). For a futures instrument with roll parameters that trade is split by the instrument's
roll state (:func:`pipeline.futures.roll_orders.split_by_roll_state`) into orders to dated
contracts, each with its own deterministic order reference naming the contract
(``strategy:session:instrument:contract:seq``; a calendar spread ``...:PRICED_FORWARD:seq``), its
contract's own reference price (a spread's: forward - priced) and the roll state it was routed
under. The part of a trade the state does not allow becomes a DENIED intent naming the state.
Everything else in the plan is left as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.futures.roll_orders import ROUTE_COLUMNS, split_by_roll_state
from pipeline.trading import OrderError, check_ref_field, session_day

#: Columns a routed plan adds to :data:`pipeline.execution.intents.PLAN_COLUMNS`.
ROUTED_COLUMNS = ("contract", "spread_contract", "contract_price", "roll_state", "route_denial")
_EPS = 1e-9


def _held(series: pd.Series, instruments: pd.Index, contracts: pd.Series) -> np.ndarray:
    """Units of ``series`` (MultiIndex instrument, contract) in each instrument's given contract (0 if none)."""
    keys = pd.MultiIndex.from_arrays([instruments.astype(str), contracts.fillna("").astype(str).to_numpy()])
    if series.empty:
        return np.zeros(len(instruments))
    return series.reindex(keys).fillna(0.0).to_numpy(dtype=float)


def route_futures_orders(
    plan: pd.DataFrame,
    targets: pd.Series,
    routes: pd.DataFrame,
    positions: pd.Series,
    working: pd.Series,
    session: Any,
    strategy: str,
    prior_intents: pd.DataFrame,
) -> pd.DataFrame:
    """Replace the plan's rows of futures instruments with roll parameters by their contract orders.

    Parameters
    ----------
    plan : pd.DataFrame
        The instrument plan (:func:`pipeline.execution.intents.plan_orders` after
        :func:`pipeline.execution.intents.clip_plan`).
    targets : pd.Series
        Index instrument; the session's targets (signed units; NaN: no order, no roll either).
    routes : pd.DataFrame
        Index instrument: the futures instruments routed to dated contracts; columns
        :data:`pipeline.futures.roll_orders.ROUTE_COLUMNS` (roll state, the order path's priced and
        forward contracts and their prices, :func:`pipeline.futures.roll_orders.order_contracts`).
    positions, working : pd.Series
        MultiIndex ``(instrument, contract)``: signed units held and working at the broker.
    session : date-like
    strategy : str
    prior_intents : pd.DataFrame
        The session's intents already in the ledger (for the next ``seq`` of each instrument).

    Returns
    -------
    pd.DataFrame
        The plan's other rows unchanged, then, per routed instrument with a target, in sending
        order: the outright in the priced contract, the calendar spread, the outright in the
        forward, and the refused part (``route_denial`` the reason; the order path records it
        DENIED). Columns of ``plan`` plus :data:`ROUTED_COLUMNS`. ``seq`` continues the
        instrument's sequence of the session over all its contracts; ``position_before`` is the
        instrument's position (held + working) before each order, cumulating the outrights before
        it (a spread leaves it unchanged). A Force spread is planned even when the instrument's
        own trade is zero.

    Raises
    ------
    OrderError
        ``routes`` lacks a column, or a contract label contains ':'.
    """
    missing = [c for c in ROUTE_COLUMNS if c not in routes.columns]
    if missing:
        raise OrderError(f"route_futures_orders: routes lack column(s) {', '.join(missing)}")
    session = session_day(session)
    routed = routes.index.intersection(targets.index[targets.notna()]).sort_values()
    rest = plan[~plan["instrument"].isin(routed)].copy()
    for column in ROUTED_COLUMNS:
        rest[column] = None if column != "contract_price" else np.nan
    if routed.empty:
        return rest.reset_index(drop=True)
    r = routes.loc[routed]
    mine = plan[plan["instrument"].isin(routed)].set_index("instrument")
    total = positions.groupby(level=0).sum().add(working.groupby(level=0).sum(), fill_value=0.0) \
        if len(positions) or len(working) else pd.Series(dtype=float)
    frame = pd.DataFrame({
        "state": r["state"].to_numpy(dtype=object),
        "trade": mine["quantity"].reindex(routed).fillna(0.0).to_numpy(dtype=float),
        "priced_position": _held(positions, routed, r["priced_contract"]) + _held(working, routed, r["priced_contract"]),
        "forward_position": _held(positions, routed, r["forward_contract"]) + _held(working, routed, r["forward_contract"]),
    }, index=routed)
    split = split_by_roll_state(frame)
    priced, forward = r["priced_contract"], r["forward_contract"]
    no_priced = priced.isna().to_numpy()
    no_forward = forward.isna().to_numpy() & ((split["spread"].abs() > _EPS) | (split["forward_trade"].abs() > _EPS)).to_numpy()
    blocked = no_priced | no_forward  # fail closed: a contract the multiple prices do not name is never guessed
    why = np.where(no_priced, "no priced contract in the multiple prices for the session",
                   "no forward contract in the multiple prices for the session")
    legs = {  # kind -> (quantity, contract, spread_contract, reference price, contract price)
        "priced": (split["priced_trade"], priced, None, r["priced_price"], np.nan),
        "spread": (split["spread"], priced, forward, r["forward_price"] - r["priced_price"], r["priced_price"]),
        "forward": (split["forward_trade"], forward, None, r["forward_price"], np.nan),
        "refused": (split["refused"], priced, None, r["priced_price"], np.nan),
    }
    parts = []
    for order, (kind, (qty, contract, spread, price, leg)) in enumerate(legs.items()):  # four kinds of order
        q = np.where(blocked, split["trade"].to_numpy() if kind == "refused" else 0.0, qty.to_numpy(dtype=float))
        part = pd.DataFrame({
            "instrument": routed.astype(str), "order": order, "quantity": q,
            "contract": contract.to_numpy(dtype=object),
            "spread_contract": spread.to_numpy(dtype=object) if spread is not None else None,
            "reference_price": np.asarray(price, dtype=float), "contract_price": np.asarray(leg, dtype=float),
            "route_denial": np.where(blocked, why, split["reason"].to_numpy(dtype=object)) if kind == "refused" else None,
        })
        parts.append(part[np.abs(q) > _EPS])
    rows = pd.concat(parts, ignore_index=True).sort_values(["instrument", "order"], kind="stable")
    rows["contract"] = rows["contract"].where(rows["contract"].notna(), rows["instrument"].map(priced))
    if rows.empty:
        return rest.reset_index(drop=True)
    named = rows["contract"].fillna("unknown").astype(str)
    label = np.where(rows["spread_contract"].notna(), named + "_" + rows["spread_contract"].astype(str), named)
    for value in set(label):
        check_ref_field("contract", value)
    last = pd.Series(dtype=float)
    if prior_intents is not None and not prior_intents.empty:
        same = prior_intents[pd.to_datetime(prior_intents["session"]) == session]
        last = same.groupby("instrument")["seq"].max().astype(float)
    seq = last.reindex(rows["instrument"]).fillna(0).to_numpy(dtype=int) + rows.groupby("instrument").cumcount().to_numpy() + 1
    outright = np.where(rows["spread_contract"].isna() & rows["route_denial"].isna(), rows["quantity"], 0.0)
    before = total.reindex(rows["instrument"]).fillna(0.0).to_numpy() + (
        pd.Series(outright).groupby(rows["instrument"].to_numpy()).cumsum().to_numpy() - outright)
    day = session.date().isoformat()
    extra = mine.reindex(rows["instrument"])
    out = pd.DataFrame({
        "order_ref": [f"{strategy}:{day}:{i}:{c}:{n}" for i, c, n in zip(rows["instrument"], label, seq)],
        "strategy": strategy, "session": session, "instrument": rows["instrument"].to_numpy(), "seq": seq,
        "quantity": rows["quantity"].to_numpy(dtype=float),
        "side": np.where(rows["quantity"].to_numpy() > 0, "BUY", "SELL"), "order_type": "MKT",
        "reference_price": rows["reference_price"].to_numpy(dtype=float),
        "target_position": targets.reindex(rows["instrument"]).to_numpy(dtype=float), "position_before": before,
        "planned_quantity": extra["planned_quantity"].to_numpy(dtype=float) if "planned_quantity" in extra else np.nan,
        "adjust_reason": extra["adjust_reason"].to_numpy(dtype=object) if "adjust_reason" in extra else None,
        "contract": rows["contract"].to_numpy(dtype=object),
        "spread_contract": rows["spread_contract"].to_numpy(dtype=object),
        "contract_price": rows["contract_price"].to_numpy(dtype=float),
        "roll_state": rows["instrument"].map(r["state"]).to_numpy(dtype=object),
        "route_denial": rows["route_denial"].to_numpy(dtype=object),
    })
    out["order_ref"] = pd.array(out["order_ref"], dtype="str")
    out["instrument"] = pd.array(out["instrument"], dtype="str")
    return pd.concat([rest, out[[c for c in out.columns if c in rest.columns or c in ROUTED_COLUMNS]]],
                     ignore_index=True)[list(rest.columns)]
