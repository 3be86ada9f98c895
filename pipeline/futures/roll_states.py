"""Roll states of a futures instrument, the roll policy that moves them, and the trades each allows.

A futures position sits in one dated contract. Each instrument has a **roll state** (pysystemtrade
``sysobjects/production/roll_state.py``) that says which orders the order path may send while its
position moves from the *priced* contract (the one whose price drives forecasts and P&L, the
``PRICE_CONTRACT`` of multiple prices) to the *forward* contract (the next one in the hold cycle,
``FORWARD_CONTRACT``). :class:`RollState` lists them with their meaning for orders;
:func:`allowed_trades` is that meaning as a rule the order path applies.

:func:`roll_policy` is the automatic part (pysystemtrade ``sysproduction/update_roll_adjusted_prices``
and its auto-roll script, ``interactive_update_roll_status.py``): per instrument and session, from
the planned roll date, the close-out date of the priced contract, the current state, how long a
Force spread has been working and the positions, the next state and why. A person can set any state
(``trading-pipeline futures roll``); ``Close`` and ``No_Open`` are only ever set by hand and the
policy keeps them.

Sessions are counted as business days (weekdays less the ``holidays`` given, numpy's business-day
calendar, as in :mod:`pipeline.futures.roll_calendar`): ``sessions_to_close_out`` is the number of
sessions from the session (included) to the close-out date (excluded), i.e. the sessions left to
trade out of the contract; ``sessions_to_roll`` likewise up to the planned roll date (0 or less:
the roll date is reached).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from pipeline.futures.roll_calendar import business_days_between, roll_calendar
from pipeline.futures.rolls import FuturesDataError, RollParameters

if TYPE_CHECKING:
    from pipeline.config import Instrument

__all__ = [
    "MANUAL_STATES",
    "POLICY_INPUT_COLUMNS",
    "ROLLING_STATES",
    "RollPolicy",
    "RollState",
    "TradeVerdict",
    "allowed_trade",
    "allowed_trades",
    "nearest_roll",
    "parse_roll_state",
    "planned_contracts",
    "roll_parameters_of",
    "roll_policy",
]


class RollState(str, Enum):
    """The roll state of an instrument: which orders the order path may send.

    =================  ==========================================================================
    state              orders allowed (pysystemtrade ``roll_state.py`` and its order spawning)
    =================  ==========================================================================
    ``No_Roll``        normal trading, in the priced contract only
    ``Passive``        trades that reduce the priced position (never past zero); anything else
                       (opening, adding) in the forward contract: the position drifts across
    ``Force``          the roll as one calendar spread order: sell the priced contract and buy
                       the forward in equal size (or the reverse for a short), the instrument's
                       position unchanged; the instrument's own trade goes to the forward
    ``Force_Outright`` the same roll sent as two outright orders (when the spread does not fill)
    ``Close``          only trades that close (reduce) the priced contract; nothing in the forward
    ``No_Open``        only trades that reduce a position, in either contract; nothing new opened
                       (near the roll while the forward is illiquid)
    ``Roll_Adjusted``  the position is in the forward (or flat) and the priced contract is switched
                       to it: trades go to the new priced contract only; kept until the multiple
                       prices price it (the planned roll out of the priced contract lies ahead),
                       then ``No_Roll``
    =================  ==========================================================================
    """

    No_Roll = "No_Roll"
    Passive = "Passive"
    Force = "Force"
    Force_Outright = "Force_Outright"
    Close = "Close"
    No_Open = "No_Open"
    Roll_Adjusted = "Roll_Adjusted"

    @property
    def meaning(self) -> str:
        """One line: the orders this state allows."""
        return _MEANING[self]


_MEANING = {
    RollState.No_Roll: "normal trading in the priced contract only",
    RollState.Passive: "reduce the priced contract, open new positions in the forward contract",
    RollState.Force: "roll now with a calendar spread (priced out, forward in, same size); other trades in the forward",
    RollState.Force_Outright: "roll now with two outright orders (priced out, forward in); other trades in the forward",
    RollState.Close: "only close the priced contract; nothing in the forward",
    RollState.No_Open: "no new position: only trades that reduce a position",
    RollState.Roll_Adjusted: "the priced contract is switched to the forward: trade only the new priced contract",
}
#: States only a person sets; :func:`roll_policy` keeps them.
MANUAL_STATES = (RollState.Close, RollState.No_Open)
#: States in which the position is moving out of the priced contract.
ROLLING_STATES = (RollState.Passive, RollState.Force, RollState.Force_Outright, RollState.Close, RollState.No_Open)
#: Columns :func:`roll_policy` needs (``spread_sessions``, ``force_sessions``, ``outright_after`` optional).
POLICY_INPUT_COLUMNS = ("session", "roll_date", "close_out", "state", "priced_position", "forward_position")
_NAMES = {s.value.lower(): s for s in RollState}


def parse_roll_state(value: object) -> RollState:
    """``value`` (a :class:`RollState` or its name in any case, e.g. ``"passive"``) as a RollState.

    Raises FuturesDataError naming the value and the states there are.
    """
    if isinstance(value, RollState):
        return value
    state = _NAMES.get(str(value).strip().lower())
    if state is None:
        raise FuturesDataError(f"unknown roll state {value!r}; one of {', '.join(s.value for s in RollState)}")
    return state


@dataclass(frozen=True)
class RollPolicy:
    """Thresholds of :func:`roll_policy` (per instrument: ``instruments[].rolls`` of the configuration).

    Attributes
    ----------
    force_sessions : int
        Go ``Force`` when the priced contract, still held, is this many sessions or fewer from its
        close-out date (AFTS ch. 5: roll well before expiry; the expiry guard's default is 5).
    outright_after : int
        A ``Force`` spread unfilled for this many sessions becomes ``Force_Outright``.
    """

    force_sessions: int = 10
    outright_after: int = 3


def _states(values: pd.Series, what: str) -> np.ndarray:
    """State names as an object array of canonical names; FuturesDataError naming the first bad row."""
    canonical = values.astype("string").str.strip().str.lower().map({k: s.value for k, s in _NAMES.items()})
    bad = canonical.isna().to_numpy()
    if bad.any():
        first = values.index[bad][0]
        raise FuturesDataError(
            f"{what}, {first}: unknown roll state {values[bad].iloc[0]!r}; one of {', '.join(s.value for s in RollState)}"
        )
    return canonical.to_numpy(dtype=object)


def _dates(frame: pd.DataFrame, column: str) -> pd.Series:
    values = pd.to_datetime(frame[column], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        raise FuturesDataError(
            f"roll policy, {frame.index[bad][0]}: {column} {frame[column][bad].iloc[0]!r} is not a date; "
            f"{int(bad.sum())} such rows"
        )
    return values.dt.normalize()


def roll_policy(frame: pd.DataFrame, policy: RollPolicy = RollPolicy(), holidays: Sequence[object] = ()) -> pd.DataFrame:
    """The next roll state of each instrument for one session, and the reason.

    Parameters
    ----------
    frame : pd.DataFrame
        Index ``instrument`` (unique). Columns: ``session`` (the session decided for), ``roll_date``
        (the planned roll out of the priced contract, from the roll calendar), ``close_out`` (the
        priced contract's close-out date, :mod:`pipeline.futures.expiry`), ``state`` (the current
        state, a :class:`RollState` name), ``priced_position`` and ``forward_position`` (signed
        contracts). Optional: ``spread_sessions`` (sessions a Force spread has been working
        unfilled; 0 if absent), ``force_sessions`` and ``outright_after`` (per-instrument
        thresholds instead of ``policy``'s), ``priced_moved`` (bool: the multiple prices'
        ``PRICE_CONTRACT`` is no longer the contract the current state's roll is out of, i.e. the
        priced contract of the session the state was set for; absent: a reached roll date stands
        for "not moved", as with a source whose prices roll after the planned date) and
        ``rolled_out_position`` (signed contracts still held in that contract; 0 if absent),
        ``prices_roll_on_plan`` (bool: the multiple prices are built on the planned roll calendar,
        :mod:`pipeline.futures.from_contracts`, so ``PRICE_CONTRACT`` moves on ``roll_date``; Force
        then counts the sessions to the earlier of the close-out and the roll date).
    policy : RollPolicy
        The default thresholds.
    holidays : sequence of date-like
        Non-business weekdays for the session counts.

    Returns
    -------
    pd.DataFrame
        Same index; columns ``state`` (the new state, name), ``previous_state``, ``changed``
        (bool), ``reason`` (str), ``sessions_to_roll`` and ``sessions_to_close_out`` (int).

    Raises
    ------
    FuturesDataError
        A missing column, an unknown state, a date that is not a date, or a repeated instrument.

    Notes
    -----
    The rules, first match wins (pysystemtrade ``sysproduction/interactive_update_roll_status.py``,
    ``suggest_roll_state_for_instrument``, and the transitions of ``roll_state.py``):

    0. A ``Passive``, ``Force``, ``Force_Outright`` or ``Roll_Adjusted`` whose roll the multiple
       prices have adopted (``priced_moved``, nothing left in the contract rolled out of) is over:
       the rules below are applied from ``No_Roll`` (pysystemtrade: ``Roll_Adjusted`` -> ``No_Roll``
       once the adjusted prices are rolled), so a stale state never rolls the new priced contract.
    1. ``Close`` and ``No_Open`` are kept (set by hand).
    2. ``Roll_Adjusted`` -> ``No_Roll`` once the multiple prices price the forward (``priced_moved``;
       without that column: the planned roll out of the priced contract, ``roll_date``, lies after
       the session); kept while they have not moved, so the order path keeps trading the contract
       rolled into (:func:`pipeline.futures.roll_orders.order_contracts`), even when the position was
       rolled (Force near the close-out) before the planned roll date.
    3. no priced position in ``Passive``, ``Force`` or ``Force_Outright``, or in ``No_Roll`` once
       the roll date is reached -> ``Roll_Adjusted``.
    4. ``Force_Outright`` with a priced position is kept (never de-escalated).
    5. ``Force`` with ``spread_sessions >= outright_after`` -> ``Force_Outright``; else kept.
    6. a priced position ``force_sessions`` or fewer sessions from the close-out (or from the roll
       date, if earlier, where ``prices_roll_on_plan``: the position must leave the priced contract
       before the multiple prices move off it, or it is left in neither priced nor forward) -> ``Force``.
    7. a priced position on or after the roll date -> ``Passive``; ``Passive`` set early is kept.
    8. otherwise ``No_Roll``.

    Vectorised over instruments (``np.select``); the table is small, one row per instrument.
    """
    missing = [c for c in POLICY_INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise FuturesDataError(f"roll policy: missing column(s) {', '.join(missing)} (found {', '.join(frame.columns)})")
    if frame.index.has_duplicates:
        raise FuturesDataError(f"roll policy: instrument {frame.index[frame.index.duplicated()][0]!r} appears twice")
    recorded = _states(frame["state"], "roll policy")
    moved = (frame["priced_moved"].fillna(False).astype(bool).to_numpy() if "priced_moved" in frame.columns
             else None)
    left = (pd.to_numeric(frame["rolled_out_position"], errors="coerce").fillna(0.0).to_numpy()
            if "rolled_out_position" in frame.columns else np.zeros(len(frame)))
    # a roll the multiple prices have already adopted (PRICE_CONTRACT moved off the contract rolled out of,
    # nothing left in it) is over: the instrument is decided afresh from No_Roll in its new priced contract
    over = (np.zeros(len(frame), dtype=bool) if moved is None else
            moved & np.isin(recorded, [s.value for s in (*ROLLING_STATES, RollState.Roll_Adjusted)])
            & ~np.isin(recorded, [s.value for s in MANUAL_STATES]) & (np.abs(left) < 1e-9))
    state = np.where(over, RollState.No_Roll.value, recorded).astype(object)
    session, roll_date, close_out = (_dates(frame, c) for c in ("session", "roll_date", "close_out"))
    priced = pd.to_numeric(frame["priced_position"], errors="coerce").fillna(0.0).to_numpy()

    def column(name: str, default: int) -> np.ndarray:  # an optional column; blanks take the default
        values = frame[name] if name in frame.columns else pd.Series(default, index=frame.index)
        return pd.to_numeric(values, errors="coerce").fillna(default).astype(int).to_numpy()

    working = column("spread_sessions", 0)
    force_at = column("force_sessions", policy.force_sessions)
    outright_at = column("outright_after", policy.outright_after)
    to_roll = business_days_between(session, roll_date, holidays).astype(int)
    to_close = business_days_between(session, close_out, holidays).astype(int)
    # multiple prices built on the planned calendar move PRICE_CONTRACT on the roll date: the roll must be
    # done before it, so Force counts the sessions to the earlier of the close-out and the roll date
    on_plan = (frame["prices_roll_on_plan"].fillna(False).astype(bool).to_numpy()
               if "prices_roll_on_plan" in frame.columns else np.zeros(len(frame), dtype=bool))
    by_roll = on_plan & (to_roll < to_close)
    to_deadline = np.where(by_roll, to_roll, to_close)

    held = np.abs(priced) > 1e-9
    is_ = {s: state == s.value for s in RollState}
    rolling = is_[RollState.Passive] | is_[RollState.Force] | is_[RollState.Force_Outright]
    manual = is_[RollState.Close] | is_[RollState.No_Open]

    def text(words: str) -> pd.Series:
        return pd.Series(words, index=frame.index, dtype=object)

    roll_day, close_day = roll_date.dt.strftime("%Y-%m-%d"), close_out.dt.strftime("%Y-%m-%d")
    n_roll, n_close = pd.Series(to_roll, index=frame.index).astype(str), pd.Series(to_close, index=frame.index).astype(str)
    position = pd.Series(priced, index=frame.index).map("{:g}".format)
    rules = [
        (manual, state, text("set by hand: kept until a person changes it")),
        (is_[RollState.Roll_Adjusted] & ((to_roll > 0) if moved is None else moved), RollState.No_Roll.value,
         text("the multiple prices price the contract rolled into (adjusted prices re-stitched on it)")),
        (is_[RollState.Roll_Adjusted], RollState.Roll_Adjusted.value,
         "waiting for the multiple prices to price the forward (roll date " + roll_day
         + pd.Series(np.where(to_roll <= 0, " reached", " ahead"), index=frame.index)
         + ", PRICE_CONTRACT not moved): orders go to the contract rolled into"),
        ((rolling | (is_[RollState.No_Roll] & (to_roll <= 0))) & ~held, RollState.Roll_Adjusted.value,
         "no position left in the priced contract (roll date " + roll_day + "): switch it to the forward"),
        (is_[RollState.Force_Outright] & held, RollState.Force_Outright.value,
         "rolling with two outright orders; " + position + " still in the priced contract"),
        (is_[RollState.Force] & held & (working >= outright_at), RollState.Force_Outright.value,
         "the Force spread has not filled in " + pd.Series(working, index=frame.index).astype(str)
         + " sessions (limit " + pd.Series(outright_at, index=frame.index).astype(str) + "): two outright orders"),
        (is_[RollState.Force] & held, RollState.Force.value,
         "calendar spread working for " + pd.Series(working, index=frame.index).astype(str) + " sessions"),
        (held & (to_deadline <= force_at), RollState.Force.value,
         pd.Series(np.where(by_roll, n_roll + " sessions to the roll date " + roll_day + " (the multiple prices move "
                            "PRICE_CONTRACT then)", n_close + " sessions to the priced contract's close-out "
                            + close_day), index=frame.index)
         + " (Force at " + pd.Series(force_at, index=frame.index).astype(str) + "): roll now with a calendar spread"),
        (held & (to_roll <= 0), RollState.Passive.value,
         "roll date " + roll_day + " reached: reduce the priced contract, open in the forward"),
        (is_[RollState.Passive], RollState.Passive.value,
         text("Passive set before the roll date: kept")),
    ]
    conditions = [np.asarray(c, dtype=bool) for c, _, _ in rules]
    new_state = np.select(conditions, [np.broadcast_to(np.asarray(s, dtype=object), len(frame)) for _, s, _ in rules],
                          default=RollState.No_Roll.value)
    default_reason = (n_roll + " sessions to the roll date " + roll_day).to_numpy(dtype=object)
    reason = np.select(conditions, [r.to_numpy(dtype=object) for _, _, r in rules], default=default_reason)
    reason = np.where(over, "the multiple prices price the contract rolled into (the " + pd.Series(recorded, dtype=object)
                      .to_numpy() + " roll is complete); " + reason.astype(str), reason)
    return pd.DataFrame(
        {
            "state": new_state.astype(object),
            "previous_state": recorded,
            "changed": new_state != recorded,
            "reason": reason.astype(object),
            "sessions_to_roll": to_roll,
            "sessions_to_close_out": to_close,
        },
        index=frame.index,
    )


class TradeVerdict(NamedTuple):
    """What :func:`allowed_trade` says about one instrument's trade pair."""

    allowed: bool
    order: str  # "none", "outright", "spread" or "outright_legs"
    reason: str


def _reduces(position: np.ndarray, trade: np.ndarray) -> np.ndarray:
    """The trade is zero or moves the position towards zero without passing it."""
    return (np.abs(trade) < 1e-9) | ((np.sign(trade) == -np.sign(position)) & (np.abs(trade) <= np.abs(position) + 1e-9))


def allowed_trades(state: Iterable[object], priced_position: Iterable[float], trade_in_priced: Iterable[float],
                   trade_in_forward: Iterable[float], forward_position: Iterable[float] | None = None) -> pd.DataFrame:
    """Whether the order path may send each pair of trades (priced contract, forward contract).

    Parameters
    ----------
    state : iterable of RollState or names
        Each instrument's roll state.
    priced_position, forward_position : iterable of float
        Signed contracts held in the priced and forward contracts (``forward_position`` defaults
        to 0; only ``No_Open`` reads it).
    trade_in_priced, trade_in_forward : iterable of float
        Signed contracts to trade in each.

    Returns
    -------
    pd.DataFrame
        One row per input (a RangeIndex); columns ``allowed`` (bool), ``order`` (``"none"`` when
        both trades are zero, ``"outright"``, ``"spread"`` in ``Force``, ``"outright_legs"`` in
        ``Force_Outright``) and ``reason`` (why a pair is refused; empty when allowed).

    Raises
    ------
    FuturesDataError
        An unknown state, or inputs of different lengths.

    Notes
    -----
    The rules of :class:`RollState` (pysystemtrade ``sysexecution/stack_handler/
    spawn_children_from_instrument_orders.py`` and ``roll_orders.py``). A pair of zero trades is
    always allowed (nothing is sent). In ``Close`` and ``No_Open`` no allowed trade increases the
    absolute position of any contract.
    """
    states = np.asarray([parse_roll_state(s).value for s in state], dtype=object)
    p = np.asarray(list(priced_position), dtype=float)
    tp = np.asarray(list(trade_in_priced), dtype=float)
    tf = np.asarray(list(trade_in_forward), dtype=float)
    f = np.zeros(len(p)) if forward_position is None else np.asarray(list(forward_position), dtype=float)
    if not len(states) == len(p) == len(tp) == len(tf) == len(f):
        raise FuturesDataError(
            f"allowed_trades: inputs of different lengths (states {len(states)}, priced positions {len(p)}, "
            f"priced trades {len(tp)}, forward trades {len(tf)}, forward positions {len(f)})"
        )
    nothing = (np.abs(tp) < 1e-9) & (np.abs(tf) < 1e-9)
    no_forward = np.abs(tf) < 1e-9
    roll_pair = (np.abs(tp) > 1e-9) & (np.abs(tp + tf) < 1e-9) & _reduces(p, tp)
    rules = {
        RollState.No_Roll.value: (no_forward, "outright", "No_Roll trades the priced contract only"),
        RollState.Passive.value: (_reduces(p, tp), "outright",
                                  "Passive may only reduce the priced contract (not past zero); open in the forward"),
        RollState.Force.value: (roll_pair, "spread", (
            "Force sends only the roll: a calendar spread of equal size out of the priced and into the forward "
            "contract, at most the priced position")),
        RollState.Force_Outright.value: (roll_pair, "outright_legs", (
            "Force_Outright sends only the roll: equal outright legs out of the priced and into the forward "
            "contract, at most the priced position")),
        RollState.Close.value: (_reduces(p, tp) & no_forward, "outright",
                                "Close allows only trades that close the priced contract, nothing in the forward"),
        RollState.No_Open.value: (_reduces(p, tp) & _reduces(f, tf), "outright",
                                  "No_Open allows only trades that reduce a position"),
        RollState.Roll_Adjusted.value: (no_forward, "outright",
                                        "Roll_Adjusted trades the (switched) priced contract only"),
    }
    names = list(rules)
    which = [states == n for n in names]
    ok = np.select(which, [rules[n][0] for n in names], default=False) | nothing
    order = np.where(nothing, "none", np.select(which, [rules[n][1] for n in names], default="none"))
    reason = np.where(ok, "", np.select(which, [rules[n][2] for n in names], default=""))
    return pd.DataFrame({"allowed": ok.astype(bool), "order": order.astype(object), "reason": reason.astype(object)})


def allowed_trade(state: object, priced_position: float, trade_in_priced: float, trade_in_forward: float,
                  forward_position: float = 0.0) -> TradeVerdict:
    """:func:`allowed_trades` for one instrument: a :class:`TradeVerdict` (allowed, order kind, reason).

    Example: ``allowed_trade("Passive", 5, -2, 0)`` -> allowed (reduces the priced contract);
    ``allowed_trade("Passive", 5, 1, 0)`` -> refused; ``allowed_trade("Force", 5, -5, 5)`` ->
    allowed as a spread. Raises FuturesDataError for an unknown state.
    """
    row = allowed_trades([state], [priced_position], [trade_in_priced], [trade_in_forward], [forward_position]).iloc[0]
    return TradeVerdict(bool(row["allowed"]), str(row["order"]), str(row["reason"]))


def roll_parameters_of(instrument: Instrument) -> RollParameters:
    """The :class:`RollParameters` of a configured instrument (``instruments[].rolls``).

    Raises FuturesDataError naming the instrument if it has no ``rolls`` section.
    """
    rolls = instrument.rolls
    if rolls is None:
        raise FuturesDataError(
            f"instrument {instrument.symbol}: no roll parameters; add instruments[].rolls (hold_roll_cycle, "
            "priced_roll_cycle, roll_offset_days, carry_offset, expiry_offset) to the configuration"
        )
    return RollParameters(
        hold_roll_cycle=rolls.hold_roll_cycle, priced_roll_cycle=rolls.priced_roll_cycle,
        roll_offset_days=rolls.roll_offset_days, carry_offset=rolls.carry_offset, expiry_offset=rolls.expiry_offset,
    )


def planned_contracts(params: RollParameters, sessions: Iterable[object], expiries: Mapping[object, object] | None = None,
                      holidays: Sequence[object] = ()) -> pd.DataFrame:
    """The priced and forward contract the planned roll calendar holds on each session, and its roll date.

    Parameters
    ----------
    params : RollParameters
        The instrument's roll parameters.
    sessions : iterable of date-like
        The sessions asked about (any order, repeats allowed).
    expiries : mapping contract id -> date, optional
        Exact expiries (they move the planned roll dates).
    holidays : sequence of date-like
        Non-business weekdays of the calendar.

    Returns
    -------
    pd.DataFrame
        Index the sessions (normalised); columns ``priced_contract`` (held on the session),
        ``forward_contract`` (the next held contract), ``carry_contract`` and ``roll_date`` (the
        planned first session in the forward contract, after the session), ids ``YYYYMM``.

    Raises
    ------
    FuturesDataError
        A session that is not a date, or a roll calendar that cannot be planned (see
        :func:`pipeline.futures.roll_calendar.roll_calendar`).

    Notes
    -----
    Source: pysystemtrade ``sysobjects/roll_calendars.py`` (the approximate calendar); the row of
    the first roll after the session gives both contracts (``np.searchsorted``).
    """
    index = pd.DatetimeIndex(pd.to_datetime(list(sessions), errors="coerce")).normalize()
    if index.isna().any():
        raise FuturesDataError(f"planned contracts: {list(sessions)[int(np.flatnonzero(index.isna())[0])]!r} is not a date")
    if index.empty:
        return pd.DataFrame(columns=["priced_contract", "forward_contract", "carry_contract", "roll_date"], index=index)
    calendar = roll_calendar(params, index.min() - pd.Timedelta(days=1), index.max() + pd.Timedelta(days=4 * 366),
                             expiries=expiries, holidays=holidays)
    row = np.searchsorted(calendar.index.values, index.values.astype(calendar.index.values.dtype), side="right")
    return _contracts_of(calendar.iloc[row], index)


def nearest_roll(params: RollParameters, sessions: Iterable[object], expiries: Mapping[object, object] | None = None,
                 holidays: Sequence[object] = ()) -> pd.DataFrame:
    """The planned roll nearest to each session: the roll a state set on that session is about.

    A roll that is under way (``Passive`` from the roll date, ``Force`` near the close-out, or an
    early ``Passive`` a few sessions before the roll date) started near its planned roll date;
    the planned calendar alone cannot say whether a session just after a roll date still rolls out
    of the old contract, so the roll nearest (in business days) to the session the roll started
    is taken.

    Returns
    -------
    pd.DataFrame
        Index the sessions (normalised); columns ``priced_contract`` (the contract rolled out of),
        ``forward_contract`` (rolled into), ``carry_contract`` and ``roll_date``; a tie goes to the
        upcoming roll.

    Raises
    ------
    FuturesDataError
        As :func:`planned_contracts`.
    """
    index = pd.DatetimeIndex(pd.to_datetime(list(sessions), errors="coerce")).normalize()
    if index.isna().any() or index.empty:
        return planned_contracts(params, sessions, expiries, holidays)
    calendar = roll_calendar(params, index.min() - pd.Timedelta(days=4 * 366), index.max() + pd.Timedelta(days=4 * 366),
                             expiries=expiries, holidays=holidays)
    after = np.searchsorted(calendar.index.values, index.values.astype(calendar.index.values.dtype), side="right")
    before = np.maximum(after - 1, 0)
    to_next = business_days_between(index, calendar.index[after], holidays)
    since_last = business_days_between(calendar.index[before], index, holidays)
    row = np.where((after > 0) & (since_last < to_next), before, after)
    return _contracts_of(calendar.iloc[row], index)


def _contracts_of(picked: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """The roll-calendar rows picked for each session, as (priced, forward, carry contract, roll date)."""
    return pd.DataFrame(
        {
            "priced_contract": picked["current_contract"].to_numpy(dtype=object),
            "forward_contract": picked["next_contract"].to_numpy(dtype=object),
            "carry_contract": picked["carry_contract"].to_numpy(dtype=object),
            "roll_date": picked.index.to_numpy(),
        },
        index=index.rename("session"),
    )
