"""Orders to dated contracts: an instrument's trade split into contract trades by its roll state.

The sizing path decides one trade per instrument (target - position). A futures position sits in
dated contracts, so the order path splits that trade by the instrument's roll state
(:class:`pipeline.futures.roll_states.RollState`; pysystemtrade
``sysexecution/stack_handler/spawn_children_from_instrument_orders.py`` and ``roll_orders.py``):

* :func:`session_roll_states`: the roll policy of one session (planned roll date, close-out, the
  ledger's per-contract positions and current state), with the routes below;
* :func:`order_contracts`: which contracts the order path trades on a session, from the multiple
  prices' priced and forward contracts and the roll state (``Roll_Adjusted`` before the multiple
  prices have moved trades the contract rolled into);
* :func:`split_by_roll_state`: per instrument, the trade in the priced contract, the calendar spread,
  the trade in the forward contract and the part no state allows (refused), checked against
  :func:`pipeline.futures.roll_states.allowed_trades`.

Plain numpy over one row per instrument; no orders are built here (:mod:`pipeline.execution.roll_routing`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.futures.expiry import instrument_close_outs
from pipeline.futures.roll_calendar import business_days_between, roll_calendar
from pipeline.futures.roll_states import (
    ROLLING_STATES,
    RollPolicy,
    RollState,
    allowed_trades,
    nearest_roll,
    roll_parameters_of,
    roll_policy,
)
from pipeline.futures.rolls import FuturesDataError

if TYPE_CHECKING:
    from pipeline.config import Instrument

__all__ = ["ROUTE_COLUMNS", "SPLIT_COLUMNS", "order_contracts", "session_roll_states", "split_by_roll_state"]

#: Columns of :func:`order_contracts` (index ``instrument``).
ROUTE_COLUMNS = ("state", "priced_contract", "forward_contract", "priced_price", "forward_price")
#: Columns :func:`split_by_roll_state` adds.
SPLIT_COLUMNS = ("priced_trade", "spread", "forward_trade", "refused", "reason")
_EPS = 1e-9


def order_contracts(contracts: pd.DataFrame, states: pd.Series, sessions_to_roll: pd.Series,
                    priced_moved: pd.Series | None = None) -> pd.DataFrame:
    """The contracts (and their prices) the order path trades for each futures instrument on a session.

    Parameters
    ----------
    contracts : pd.DataFrame
        Index ``instrument``; ``priced_contract``, ``forward_contract`` (``YYYYMM`` str, None where
        blank) and ``priced_price``, ``forward_price`` (price points: ``PRICE`` and ``FORWARD`` of
        the session's multiple-prices row), as :func:`pipeline.futures.tables.contracts_on` gives them.
    states : pd.Series
        Index ``instrument``; the roll state for the session (a :class:`RollState` name).
    sessions_to_roll : pd.Series
        Index ``instrument``; sessions from the session to the planned roll out of the priced
        contract (:func:`pipeline.futures.roll_states.roll_policy`'s column; <= 0: reached).
    priced_moved : pd.Series, optional
        Index ``instrument``; bool: the multiple prices' ``PRICE_CONTRACT`` has moved off the
        contract the roll was out of (:func:`session_roll_states`). When given it decides whether
        ``Roll_Adjusted`` still waits, instead of ``sessions_to_roll`` (a roll forced before the
        planned roll date waits with the roll date ahead).

    Returns
    -------
    pd.DataFrame
        Index ``instrument`` (those of ``contracts``); columns :data:`ROUTE_COLUMNS`. As the
        multiple prices say, except in ``Roll_Adjusted`` while the roll date is reached (the
        source's ``PRICE_CONTRACT`` has not moved to the forward yet): the order path's priced
        contract is then the forward, at the forward's price, and it has no forward. An instrument
        without a state is ``No_Roll``.

    Notes
    -----
    pysystemtrade switches the priced contract itself when it rolls the adjusted prices
    (``update_roll_adjusted_prices``); here the source's multiple prices decide which contract is
    priced, and until they move, ``Roll_Adjusted`` keeps orders in the contract rolled into.
    """
    out = contracts.reindex(columns=list(ROUTE_COLUMNS[1:])).copy()
    out.insert(0, "state", states.reindex(out.index).fillna(RollState.No_Roll.value).astype(object))
    not_moved = (sessions_to_roll.reindex(out.index).fillna(1).to_numpy() <= 0 if priced_moved is None else
                 ~priced_moved.reindex(out.index).fillna(True).astype(bool).to_numpy())
    waiting = (out["state"] == RollState.Roll_Adjusted.value) & not_moved
    out.loc[waiting, "priced_contract"] = out.loc[waiting, "forward_contract"]
    out.loc[waiting, "priced_price"] = out.loc[waiting, "forward_price"]
    out.loc[waiting, "forward_contract"] = None
    out.loc[waiting, "forward_price"] = np.nan
    return out


def _priced_roll_date(inst: Instrument, priced: str, session: pd.Timestamp, holidays: Sequence[object]) -> pd.Timestamp:
    """The planned roll out of the ``priced`` contract (the roll-calendar row whose current contract it
    is), or, for a contract outside the hold cycle, the planned roll nearest to the session."""
    params = roll_parameters_of(inst)
    plan = roll_calendar(params, session - pd.Timedelta(days=2 * 366), session + pd.Timedelta(days=2 * 366),
                         expiries=inst.rolls.expiries, holidays=holidays)
    rows = plan.index[plan["current_contract"].astype(str) == str(priced)]
    if len(rows):
        return pd.Timestamp(rows[0])
    return pd.Timestamp(nearest_roll(params, [session], inst.rolls.expiries, holidays)["roll_date"].iloc[0])


def session_roll_states(
    instruments: Sequence[Instrument],
    contracts: pd.DataFrame,
    positions: pd.DataFrame,
    current: pd.DataFrame,
    session: object,
    holidays: Mapping[str, Sequence[object]],
    state_priced: pd.Series | None = None,
    prices_roll_on_plan: bool = False,
) -> pd.DataFrame:
    """The roll policy of one session for the futures instruments, with its inputs and the order routes.

    Parameters
    ----------
    instruments : sequence of Instrument
        The futures instruments with roll parameters (``instruments[].rolls``); an instrument
        without ``settlement`` has no close-out date and keeps its state (the expiry guard blocks it).
    contracts : pd.DataFrame
        :func:`pipeline.futures.tables.contracts_on` of the session (index instrument; priced and
        forward contracts and prices). Instruments absent keep their state and get no route.
    positions : pd.DataFrame
        Columns ``instrument``, ``contract``, ``position``: the ledger's positions per contract.
    current : pd.DataFrame
        The ledger's current roll states (``Ledger.current_roll_states``: ``instrument``, ``state``,
        ``session`` the session it was set for); instruments without a row are ``No_Roll``.
    session : date-like
    holidays : mapping calendar code -> non-business weekdays
    state_priced : pd.Series, optional
        Index ``instrument``; the multiple prices' priced contract (``YYYYMM``) on the session each
        instrument's current state was set for: the contract that state's roll is out of. Where
        given (and the state is a rolling one or ``Roll_Adjusted``), the policy sees whether the
        multiple prices have moved off it (``priced_moved``) and what is still held in it
        (``rolled_out_position``); a roll they have adopted is over (``No_Roll``), and
        ``Roll_Adjusted`` routes to the contract rolled into until they move, whatever the
        planned roll date says.
    prices_roll_on_plan : bool
        The multiple prices are built on the planned roll calendar (from contract prices), so their
        ``PRICE_CONTRACT`` moves on the planned roll date: Force is timed to finish the roll before
        it (:func:`pipeline.futures.roll_states.roll_policy`, ``prices_roll_on_plan``).

    Returns
    -------
    pd.DataFrame
        Index ``instrument``; the policy's inputs (``roll_date`` the planned roll out of the priced
        contract, ``close_out`` its close-out, ``priced_position``, ``forward_position``,
        ``spread_sessions``: business days since ``Force`` was set), its result (``state``,
        ``previous_state``, ``changed``, ``reason``, ``sessions_to_roll``,
        ``sessions_to_close_out``) and the routes (:func:`order_contracts`: ``order_priced_contract``,
        ``order_forward_contract``, ``order_priced_price``, ``order_forward_price``) beside the
        multiple prices' ``priced_contract`` and ``forward_contract``.

    Raises
    ------
    FuturesDataError
        A roll calendar that cannot be planned, or a bad state (see :func:`roll_policy`).

    Notes
    -----
    The policy's rules are :func:`pipeline.futures.roll_states.roll_policy`'s (pysystemtrade
    ``interactive_update_roll_status.py``); a Force spread's working sessions are counted from the
    session ``Force`` was set (while the priced position remains, the spread has not moved it).
    """
    day = pd.Timestamp(session).normalize()
    state = current.set_index("instrument")["state"] if len(current) else pd.Series(dtype=object)
    since = current.set_index("instrument")["session"] if len(current) else pd.Series(dtype="datetime64[ns]")
    held = positions.groupby(["instrument", "contract"])["position"].sum() if len(positions) else pd.Series(dtype=float)
    parts = []
    for code in sorted({i.calendar for i in instruments}):  # one policy call per exchange calendar (a few)
        group = [i for i in instruments if i.calendar == code and i.symbol in contracts.index and i.settlement]
        if not group:
            continue
        names = pd.Index([i.symbol for i in group], name="instrument")
        c = contracts.loc[names]
        keys = [pd.MultiIndex.from_arrays([names, c[col].fillna("").astype(str)]) for col in ("priced_contract",
                                                                                                "forward_contract")]
        now = state.reindex(names).fillna(RollState.No_Roll.value)
        forced = (now == RollState.Force.value) & since.reindex(names).notna()
        spread_sessions = np.where(forced, business_days_between(since.reindex(names).fillna(day), [day] * len(names),
                                                                 holidays[code]), 0)
        frame = pd.DataFrame({
            "session": day,
            "roll_date": [_priced_roll_date(i, p, day, holidays[code]) for i, p in zip(group, c["priced_contract"])],
            "close_out": [instrument_close_outs(i, [p], holidays[code]).iloc[0] for i, p in zip(group, c["priced_contract"])],
            "state": now.to_numpy(dtype=object),
            "priced_position": held.reindex(keys[0]).fillna(0.0).to_numpy() if len(held) else 0.0,
            "forward_position": held.reindex(keys[1]).fillna(0.0).to_numpy() if len(held) else 0.0,
            "spread_sessions": np.nan_to_num(spread_sessions).astype(int),
            "force_sessions": [i.rolls.force_sessions for i in group],
            "outright_after": [i.rolls.outright_after for i in group],
            "prices_roll_on_plan": prices_roll_on_plan,
        }, index=names)
        if state_priced is not None:
            rolled_from = state_priced.reindex(names).astype(object)
            known = rolled_from.notna() & now.isin([s.value for s in (*ROLLING_STATES, RollState.Roll_Adjusted)])
            out_of = pd.MultiIndex.from_arrays([names, rolled_from.fillna("").astype(str)])
            frame["priced_moved"] = (known & (rolled_from.astype(str) != c["priced_contract"].astype(str))).to_numpy()
            frame["rolled_out_position"] = np.where(known, held.reindex(out_of).fillna(0.0).to_numpy()
                                                    if len(held) else 0.0, 0.0)
        decided = roll_policy(frame, RollPolicy(), holidays=holidays[code])
        parts.append(frame.drop(columns=["state"]).join(decided))
    if not parts:
        return pd.DataFrame(columns=["state", "changed", "reason"], index=pd.Index([], name="instrument"))
    out = pd.concat(parts)
    routes = order_contracts(contracts.loc[out.index], out["state"], out["sessions_to_roll"],
                             out["priced_moved"] if "priced_moved" in out.columns else None)
    out["priced_contract"] = contracts.loc[out.index, "priced_contract"]
    out["forward_contract"] = contracts.loc[out.index, "forward_contract"]
    for column in ROUTE_COLUMNS[1:]:
        out[f"order_{column}"] = routes[column]
    return out


def _reducing_part(position: np.ndarray, trade: np.ndarray) -> np.ndarray:
    """The part of ``trade`` that moves ``position`` towards zero without passing it."""
    opposite = (np.sign(trade) == -np.sign(position)) & (np.abs(position) > _EPS)
    return np.where(opposite, np.sign(trade) * np.minimum(np.abs(trade), np.abs(position)), 0.0)


def split_by_roll_state(frame: pd.DataFrame) -> pd.DataFrame:
    """Each instrument's trade split into contract trades by its roll state.

    Parameters
    ----------
    frame : pd.DataFrame
        One row per instrument (any index); columns ``state`` (a :class:`RollState` name),
        ``trade`` (the instrument's trade, target - position - working, signed contracts),
        ``priced_position`` and ``forward_position`` (signed contracts held in each, working
        orders included).

    Returns
    -------
    pd.DataFrame
        ``frame`` with :data:`SPLIT_COLUMNS`: ``priced_trade`` (an outright in the priced
        contract), ``spread`` (a calendar spread: + q sells q of the priced and buys q of the
        forward), ``forward_trade`` (an outright in the forward), ``refused`` (the part of the
        trade the state does not allow; not sent) and ``reason`` (why, '' when nothing is refused).

        ==================  ========================================================================
        state               split of the trade T (P the priced position, R the part of T reducing P)
        ==================  ========================================================================
        ``No_Roll``         priced T
        ``Roll_Adjusted``   priced T (the switched priced contract, :func:`order_contracts`)
        ``Passive``         priced R, forward T - R
        ``Force``           spread P (the whole priced position), forward T
        ``Force_Outright``  priced -P, forward P + T (the spread's legs as outrights, netted with T)
        ``Close``           priced R; T - R refused
        ``No_Open``         priced R, forward the part of T - R reducing the forward; the rest refused
        ==================  ========================================================================

    Raises
    ------
    FuturesDataError
        A missing column or an unknown state.

    Notes
    -----
    Every split is checked with :func:`pipeline.futures.roll_states.allowed_trades` (the spread,
    or the two outright legs, as its pair in ``Force`` / ``Force_Outright``; the instrument's own
    trade in the forward there is what ``Passive`` allows); a split it refuses (none should be)
    is refused whole, with its reason: the order path fails closed.
    """
    missing = [c for c in ("state", "trade", "priced_position", "forward_position") if c not in frame.columns]
    if missing:
        raise FuturesDataError(f"split by roll state: missing column(s) {', '.join(missing)}")
    state = np.asarray([str(s) for s in frame["state"]], dtype=object)
    t = frame["trade"].to_numpy(dtype=float)
    p = frame["priced_position"].fillna(0.0).to_numpy(dtype=float)
    f = frame["forward_position"].fillna(0.0).to_numpy(dtype=float)
    r = _reducing_part(p, t)
    rf = _reducing_part(f, t - r)
    s = {x: state == x.value for x in RollState}
    zero = np.zeros(len(t))
    priced = np.select([s[RollState.No_Roll] | s[RollState.Roll_Adjusted], s[RollState.Passive] | s[RollState.Close]
                        | s[RollState.No_Open], s[RollState.Force_Outright]], [t, r, -p], default=zero)
    spread = np.where(s[RollState.Force], p, 0.0)
    forward = np.select([s[RollState.Passive], s[RollState.Force], s[RollState.Force_Outright], s[RollState.No_Open]],
                        [t - r, t, p + t, rf], default=zero)
    refused = np.select([s[RollState.Close], s[RollState.No_Open]], [t - r, t - r - rf], default=zero)
    # the pair allowed_trades judges: the roll's legs in Force / Force_Outright, else the outrights
    rolling = s[RollState.Force] | s[RollState.Force_Outright]
    check = allowed_trades(state, p, np.where(rolling, -p, priced), np.where(rolling, p, forward), f)
    bad = ~check["allowed"].to_numpy()
    meaning = np.asarray([f"roll state {x}: {RollState(x).meaning}" for x in state], dtype=object)
    reason = np.where(np.abs(refused) > _EPS, meaning, "")
    out = frame.copy()
    out["priced_trade"] = np.where(bad, 0.0, priced)
    out["spread"] = np.where(bad, 0.0, spread)
    out["forward_trade"] = np.where(bad, 0.0, forward)
    out["refused"] = np.where(bad, t, refused)
    out["reason"] = np.where(bad, check["reason"].to_numpy(dtype=object), reason).astype(object)
    return out
