"""Order intents and planning: from target positions to the orders that reach them.

Every order carries a deterministic reference ``strategy:session:instrument:seq`` (IB's
``orderRef``). A run orders only the residual ``target - position - working``
(pysystemtrade's netting of new targets against unfilled orders,
``sysexecution/order_stacks/instrument_order_stack.py``), gated and written to the ledger
before anything is sent; a planned order identical to the latest untraded intent of its
instrument is *unchanged* and not written again. :func:`record_intents_without_sending` plans,
gates and records many sessions at once for a backfill, sending nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import RiskLimits
from pipeline.execution.gate import clip_trades
from pipeline.execution.run_gate import gate_plan
from pipeline.store.ledger import Ledger
from pipeline.trading import OrderError, check_ref_field, session_day

#: Columns of :func:`plan_orders`' result.
PLAN_COLUMNS = (
    "order_ref", "strategy", "session", "instrument", "seq", "quantity", "side", "order_type",
    "reference_price", "target_position", "position_before",
)


#: Residuals smaller than this (units) are float noise, not orders.
ZERO_QUANTITY = 1e-9


def as_instrument_series(x: pd.Series | None, what: str) -> pd.Series:
    """``x`` checked as a Series indexed by instrument (None: empty); raises :class:`OrderError`
    naming ``what`` for another type or an instrument listed twice."""
    if x is None:
        return pd.Series(dtype=float)
    if not isinstance(x, pd.Series):
        raise OrderError(f"{what} must be a pandas Series indexed by instrument, got {type(x).__name__}")
    if not x.index.is_unique:
        raise OrderError(f"{what}: instruments listed twice: {sorted(set(x.index[x.index.duplicated()]))}")
    return x.astype(float)


def plan_orders(
    targets: pd.Series,
    positions: pd.Series,
    working: pd.Series,
    reference_prices: pd.Series,
    session: Any,
    strategy: str,
    prior_intents: pd.DataFrame,
) -> pd.DataFrame:
    """The orders that take positions to their targets: ``target - position - working``.

    Parameters
    ----------
    targets : Series
        Index instrument; target position in signed units for ``session``. NaN means "no
        target" (no order, whatever the position: an unknown target is not zero).
    positions : Series
        Index instrument; signed units held now (missing instrument = flat).
    working : Series
        Index instrument; signed units of orders sent but not yet filled (missing = none).
    reference_prices : Series
        Index instrument; price points used to value each order (e.g. the session close);
        missing gives NaN, which the pre-trade gate denies.
    session : date-like
        The session the orders are for.
    strategy : str
        First field of the order_ref.
    prior_intents : DataFrame
        Intents already in the ledger (``Ledger.intents``; only ``session``, ``instrument``
        and ``seq`` are used); may be empty.

    Returns
    -------
    DataFrame
        One row per order (instruments with a target and a non-zero residual, sorted), columns
        ``PLAN_COLUMNS``: ``seq`` = 1 + the highest seq already used for (session,
        instrument) in ``prior_intents``; ``quantity`` the signed residual, rounded to whole
        units when the target is whole (removes float noise of positions stored as DOUBLE);
        ``position_before`` = position + working (what the position will be before this
        order); ``order_type`` 'MKT'. Residuals below 1e-9 units are no order.

    Raises
    ------
    OrderError
        An input repeats an instrument, a position or working quantity is NaN (an unusable
        broker answer, fail closed), a target is infinite, or strategy / an instrument
        contains ':'.

    Notes
    -----
    Residual netting: pysystemtrade ``instrument_order_stack.py``; reliability.md §2 step 1.
    """
    session = session_day(session)
    check_ref_field("strategy", strategy)
    targets = as_instrument_series(targets, "targets")
    positions = as_instrument_series(positions, "positions")
    working = as_instrument_series(working, "working")
    reference_prices = as_instrument_series(reference_prices, "reference_prices")
    for what, s in (("positions", positions), ("working", working)):
        if s.isna().any():
            raise OrderError(
                f"plan_orders: {what} of {sorted(s.index[s.isna()])} are NaN; a broker answer with "
                "unknown positions cannot be netted (fail closed): fix the broker data and re-run"
            )
    if np.isinf(targets.to_numpy()).any():
        raise OrderError(f"plan_orders: infinite targets for {sorted(targets.index[np.isinf(targets)])}")

    instruments = targets.index.union(positions.index).union(working.index).sort_values()
    t = targets.reindex(instruments)
    held = positions.reindex(instruments).fillna(0.0) + working.reindex(instruments).fillna(0.0)
    residual = t - held
    whole = t.notna() & (t == t.round())
    residual = residual.where(~whole, residual.round())
    residual = residual.where(residual.abs() >= ZERO_QUANTITY, 0.0)
    keep = t.notna() & (residual != 0)
    inst = instruments[keep.to_numpy()]
    for name in inst:
        check_ref_field("instrument", str(name))

    last_seq = pd.Series(dtype=float)
    if prior_intents is not None and not prior_intents.empty:
        same = prior_intents[pd.to_datetime(prior_intents["session"]) == session]
        last_seq = same.groupby("instrument")["seq"].max().astype(float)
    seq = (last_seq.reindex(inst).fillna(0).astype(int) + 1).to_numpy()
    qty = residual[keep].to_numpy(dtype=float)
    day = session.date().isoformat()
    refs = [f"{strategy}:{day}:{i}:{n}" for i, n in zip(inst, seq)]
    return pd.DataFrame(
        {
            "order_ref": pd.array(refs, dtype="str"),
            "strategy": strategy,
            "session": session,
            "instrument": pd.array(list(inst), dtype="str"),
            "seq": seq.astype(int),
            "quantity": qty,
            "side": np.where(qty > 0, "BUY", "SELL"),
            "order_type": "MKT",
            "reference_price": reference_prices.reindex(inst).to_numpy(dtype=float),
            "target_position": t[keep].to_numpy(dtype=float),
            "position_before": held[keep].to_numpy(dtype=float),
        },
        columns=list(PLAN_COLUMNS),
    )


def order_keys(frame: pd.DataFrame) -> pd.Series:
    """What an order trades: the instrument, and for a dated futures contract its contract (a
    calendar spread both legs), e.g. ``"AAPL"``, ``"MCL 202312"``, ``"MCL 202312_202401"``."""
    key = frame["instrument"].astype(str)
    if "contract" not in frame.columns:
        return key
    contract = frame["contract"].astype(object)
    spread = frame["spread_contract"].astype(object) if "spread_contract" in frame.columns else None
    label = contract.where(contract.notna(), "").astype(str)
    if spread is not None:
        label = label.where(spread.isna(), label + "_" + spread.astype(str))
    return key.where(contract.isna(), key + " " + label)


def unchanged_intents(plan: pd.DataFrame, prior: pd.DataFrame, mode: str) -> np.ndarray:
    """Which planned orders repeat the latest untraded intent of their instrument (of their dated
    contract, for futures routed by roll state; see :func:`execute_orders`, "Idempotency")."""
    if plan.empty or prior.empty:
        return np.zeros(len(plan), dtype=bool)
    same_mode = prior[prior["mode"] == mode]
    latest = same_mode.assign(key=order_keys(same_mode)).sort_values("seq").groupby("key").tail(1).set_index("key")
    m = latest.reindex(order_keys(plan).to_numpy())
    same = (
        m["status"].isin(["RECORDED", "DENIED"]).to_numpy()
        & np.isclose(m["target_position"].to_numpy(dtype=float), plan["target_position"].to_numpy(dtype=float))
        & np.isclose(m["quantity"].to_numpy(dtype=float), plan["quantity"].to_numpy(dtype=float))
        & (m["verdict"].to_numpy(dtype=object) == plan["verdict"].to_numpy(dtype=object))
        & (m["deny_reason"].fillna("").to_numpy(dtype=object) == plan["deny_reason"].fillna("").to_numpy(dtype=object))
    )
    return np.asarray(same, dtype=bool)


def clip_plan(plan: pd.DataFrame, limits: RiskLimits) -> pd.DataFrame:
    """``plan`` with each trade clipped to the position limit (:func:`pipeline.execution.gate.clip_trades`).

    A clipped row keeps what was planned in ``planned_quantity`` and says why in ``adjust_reason``;
    a trade the limit allows none of is left whole, for the gate to deny (``max_position``).
    """
    planned = plan["quantity"].to_numpy(dtype=float)
    clipped = clip_trades(plan["position_before"].to_numpy(dtype=float), planned, limits.max_position)
    changed = (clipped != planned) & (clipped != 0)
    out = plan.copy()
    out["quantity"] = np.where(changed, clipped, planned)
    out["planned_quantity"] = np.where(changed, planned, np.nan)
    reasons = [f"max_position: trade clipped from {p:g} to {c:g} (|position| at most {limits.max_position:g})"
               for p, c in zip(planned[changed], clipped[changed])]
    out["adjust_reason"] = pd.array([None] * len(out), dtype="str")
    out.loc[changed, "adjust_reason"] = reasons
    return out


def record_intents_without_sending(
    targets: pd.DataFrame,
    reference_prices: pd.DataFrame,
    sessions: pd.DatetimeIndex,
    *,
    ledger: Ledger,
    limits: RiskLimits,
    point_sizes: dict[str, float],
    strategy: str,
    run_id: str | None,
) -> pd.DataFrame:
    """Record-only intents for one or many sessions (a backfill, an older session, a dry run).

    Nothing is ever sent.

    For each session the position before is the last earlier target (flat before the first
    target; a session without a target holds it), so the intents are the trades the system would
    have made. Every session is
    planned and gated as :func:`execute_orders` does with ``submit=False`` (same order_refs,
    same residual rounding, same "unchanged" idempotency rule, same verdicts), but all sessions
    at once: the residuals of the whole (session x instrument) frame in one array operation,
    the next seq and the "unchanged" test by one join against the ledger's intents of the
    range, the ledger read once and written in one transaction. Only the pre-trade gate runs
    per order (:func:`pipeline.execution.gate.pre_trade_check`, a few microseconds each; no throttle and
    no earlier rejections in a record-only run, so each verdict depends on its order alone).

    Parameters
    ----------
    targets, reference_prices : DataFrame
        Index session, columns instrument; target positions (signed units, NaN = no target)
        and reference prices (price points) covering ``sessions`` and the session before.
    sessions : DatetimeIndex
        The sessions to record (each must be in ``targets.index``).
    ledger, limits, point_sizes, strategy, run_id
        As :func:`execute_orders`.

    Returns
    -------
    DataFrame
        The intents written (``PLAN_COLUMNS`` plus verdict, deny_reason, status, mode, run_id).

    Raises
    ------
    OrderError
        A session of ``sessions`` has no row in ``targets``, a target is infinite, or
        ``strategy`` / an instrument that trades contains ':'.
    """
    sessions = pd.DatetimeIndex(sessions)
    missing = sessions.difference(targets.index)
    if len(missing):
        raise OrderError(f"record_intents_without_sending: no target positions for {[str(d.date()) for d in missing[:5]]}")
    check_ref_field("strategy", strategy)
    columns = [*PLAN_COLUMNS, "verdict", "deny_reason", "status", "mode", "run_id"]
    state = ledger.trading_state()
    instruments = targets.columns.sort_values()
    wide = targets.reindex(columns=instruments).astype(float)
    t = wide.loc[sessions].to_numpy()
    if np.isinf(t).any():
        bad = sorted(set(instruments[np.isinf(t).any(axis=0)]))
        raise OrderError(f"record_intents_without_sending: infinite targets for {bad}")
    # the last target before each session: a session an instrument was left out of (no bar, a flagged
    # print) holds its position, so the next session trades from it, not from flat
    held = wide.ffill().shift(1).fillna(0.0).loc[sessions].to_numpy()
    with np.errstate(invalid="ignore"):
        residual = t - held
        whole = ~np.isnan(t) & (t == np.round(t))
        residual = np.where(whole, np.round(residual), residual)
        residual = np.where(np.abs(residual) >= ZERO_QUANTITY, residual, 0.0)
        keep = ~np.isnan(t) & (residual != 0)
    rows, cols = np.nonzero(keep)  # row-major: by session, then instrument (sorted), as plan_orders
    with ledger.hold():
        if not len(rows):
            return pd.DataFrame(columns=columns)
        for name in instruments[np.unique(cols)]:
            check_ref_field("instrument", str(name))
        day = np.asarray(sessions.strftime("%Y-%m-%d"), dtype=object)[rows]
        inst = np.asarray(instruments, dtype=object)[cols]
        plan = pd.DataFrame({"session": sessions[rows], "instrument": inst})
        prior = ledger.intents()
        prior = prior[prior["session"].isin(sessions)]
        seq = np.ones(len(plan), dtype=int)
        if len(prior):
            last = prior.groupby(["session", "instrument"])["seq"].max().rename("last_seq")
            seq += plan.join(last, on=["session", "instrument"])["last_seq"].fillna(0).to_numpy(dtype=int)
        qty = residual[rows, cols]
        prices = reference_prices.reindex(index=sessions, columns=instruments).to_numpy(dtype=float)
        refs = strategy + ":" + day + ":" + inst + ":" + seq.astype(str).astype(object)
        plan = pd.DataFrame(
            {
                "order_ref": pd.array(refs, dtype="str"),
                "strategy": strategy,
                "session": plan["session"].dt.normalize().dt.as_unit("s"),  # as session_day gives
                "instrument": pd.array(inst, dtype="str"),
                "seq": seq.astype(int),
                "quantity": qty,
                "side": np.where(qty > 0, "BUY", "SELL"),
                "order_type": "MKT",
                "reference_price": prices[rows, cols],
                "target_position": t[rows, cols],
                "position_before": held[rows, cols],
            },
            columns=list(PLAN_COLUMNS),
        )
        plan = clip_plan(plan, limits)
        verdicts = gate_plan(plan, state, limits, point_sizes)
        plan["verdict"] = pd.array(["ACCEPTED" if v.accepted else "DENIED" for v in verdicts], dtype="str")
        plan["deny_reason"] = pd.array([v.reason for v in verdicts], dtype="str")
        out = plan[~_unchanged_by_session(plan, prior, "record_only")].reset_index(drop=True)
        out["status"] = np.where(out["verdict"] == "ACCEPTED", "RECORDED", "DENIED")
        out["mode"] = "record_only"
        out["run_id"] = run_id
        if len(out):
            ledger.record_intents(out)
    return out


def _unchanged_by_session(plan: pd.DataFrame, prior: pd.DataFrame, mode: str) -> np.ndarray:
    """:func:`unchanged_intents` for a plan of many sessions: each planned order against the latest
    intent of its own (session, instrument) in ``mode``."""
    if plan.empty or prior.empty:
        return np.zeros(len(plan), dtype=bool)
    latest = prior[prior["mode"] == mode].sort_values("seq").groupby(["session", "instrument"]).tail(1)
    m = plan[["session", "instrument"]].merge(
        latest[["session", "instrument", "status", "target_position", "quantity", "verdict", "deny_reason"]],
        on=["session", "instrument"], how="left",
    )
    same = (
        m["status"].isin(["RECORDED", "DENIED"]).to_numpy()
        & np.isclose(m["target_position"].to_numpy(dtype=float), plan["target_position"].to_numpy(dtype=float))
        & np.isclose(m["quantity"].to_numpy(dtype=float), plan["quantity"].to_numpy(dtype=float))
        & (m["verdict"].to_numpy(dtype=object) == plan["verdict"].to_numpy(dtype=object))
        & (m["deny_reason"].fillna("").to_numpy(dtype=object) == plan["deny_reason"].fillna("").to_numpy(dtype=object))
    )
    return np.asarray(same, dtype=bool)
