"""Targets to orders, exactly once: order refs, residual planning, and execute_orders against a
real DuckDB ledger and the real PaperBroker. Expected numbers are hand-computed in comments."""

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import CostModel, RiskLimits
from pipeline.execution import execute_orders, plan_orders
from pipeline.execution.paper_broker import PaperBroker
from pipeline.store.ledger import LEDGER_FILE, Ledger
from pipeline.trading import (
    BrokerError,
    BrokerOrder,
    OrderError,
    OrderRef,
    TradingState,
    empty_working_orders,
    order_ref,
    parse_order_ref,
)

SESSION = "2024-01-02"
POINT_SIZES = {"ES": 50.0, "AAPL": 1.0, "MSFT": 1.0}
COSTS = {s: CostModel(slippage=0.0) for s in POINT_SIZES}
PRICES = pd.Series({"ES": 4500.0, "AAPL": 190.0, "MSFT": 370.0})
LIMITS = RiskLimits(max_order_quantity=1000, max_order_notional=10_000_000, max_position=2000)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / LEDGER_FILE).init()


@pytest.fixture
def broker(ledger):
    return PaperBroker(ledger, COSTS, POINT_SIZES)


def run(ledger, broker, targets, *, session=SESSION, submit=True, limits=LIMITS, prices=PRICES, run_id="run-1"):
    return execute_orders(
        pd.Series(targets, dtype=float), prices, session, ledger=ledger, broker=broker, limits=limits,
        point_sizes=POINT_SIZES, strategy="carver", submit=submit, run_id=run_id,
    )


# -- order references -------------------------------------------------------------------------


def test_order_ref_is_strategy_session_instrument_seq():
    assert order_ref("carver", pd.Timestamp("2022-12-28"), "AAPL", 1) == "carver:2022-12-28:AAPL:1"


def test_parse_order_ref_is_the_inverse_of_order_ref():
    assert parse_order_ref("carver:2022-12-28:EUR.USD:12") == OrderRef("carver", pd.Timestamp("2022-12-28"), "EUR.USD", 12)


@pytest.mark.parametrize("ref", ["carver:2022-12-28:AAPL", "carver:not-a-date:AAPL:1", "carver:2022-12-28:AAPL:0", "carver:2022-12-28:AAPL:01"])
def test_parse_order_ref_rejects_malformed_refs(ref):
    with pytest.raises(OrderError):
        parse_order_ref(ref)


def test_order_ref_rejects_a_colon_inside_a_field():
    with pytest.raises(OrderError, match="no ':'"):
        order_ref("carver", SESSION, "ES:H4", 1)


# -- planning ---------------------------------------------------------------------------------


def test_plan_orders_nets_target_against_position_and_working():
    targets = pd.Series({"A": 10.0, "B": -5.0, "C": math.nan, "D": 0.0})
    positions = pd.Series({"A": 3.0, "C": 7.0, "D": 2.0, "E": 4.0})
    working = pd.Series({"A": 2.0})
    prices = pd.Series({"A": 1.0, "B": 2.0, "D": 4.0})
    prior = pd.DataFrame(
        {"session": pd.to_datetime([SESSION, SESSION, "2024-01-01"]), "instrument": ["A", "A", "B"], "seq": [1, 2, 5]}
    )
    plan = plan_orders(targets, positions, working, prices, SESSION, "carver", prior)
    # A: 10 - 3 - 2 = 5 (seq 3 after 1, 2); B: -5 - 0 = -5 (seq 1: seq 5 was another session);
    # C: NaN target -> no order; D: 0 - 2 = -2; E: no target -> no order
    assert list(plan["instrument"]) == ["A", "B", "D"]
    assert list(plan["quantity"]) == [5.0, -5.0, -2.0]
    assert list(plan["side"]) == ["BUY", "SELL", "SELL"]
    assert list(plan["seq"]) == [3, 1, 1]
    assert list(plan["order_ref"]) == ["carver:2024-01-02:A:3", "carver:2024-01-02:B:1", "carver:2024-01-02:D:1"]
    assert list(plan["position_before"]) == [5.0, 0.0, 2.0]
    assert list(plan["reference_price"]) == [1.0, 2.0, 4.0]


def test_plan_orders_rounds_to_whole_units_when_the_target_is_whole():
    # 10 - 2.9999999999 = 7.0000000001 -> 7; a fractional target 2.5 - 1 = 1.5 stays fractional
    plan = plan_orders(
        pd.Series({"A": 10.0, "B": 2.5}), pd.Series({"A": 2.9999999999, "B": 1.0}), pd.Series(dtype=float),
        pd.Series(dtype=float), SESSION, "carver", pd.DataFrame(),
    )
    assert list(plan["quantity"]) == [7.0, 1.5]


def test_plan_orders_makes_no_order_when_already_at_target():
    plan = plan_orders(pd.Series({"A": 4.0}), pd.Series({"A": 4.0}), pd.Series(dtype=float), pd.Series(dtype=float), SESSION, "carver", pd.DataFrame())
    assert plan.empty and list(plan.columns)[:2] == ["order_ref", "strategy"]


def test_plan_orders_refuses_an_unknown_position():
    with pytest.raises(OrderError, match="fail closed"):
        plan_orders(pd.Series({"A": 4.0}), pd.Series({"A": math.nan}), pd.Series(dtype=float), pd.Series(dtype=float), SESSION, "carver", pd.DataFrame())


# -- execution --------------------------------------------------------------------------------


def test_execute_orders_fills_the_residual(ledger, broker):
    report = run(ledger, broker, {"ES": 2, "AAPL": -100})
    assert broker.positions().to_dict() == {"AAPL": -100.0, "ES": 2.0}
    assert report.counts["sent"] == 2 and report.counts["filled"] == 2
    intents = ledger.intents(session=SESSION)
    assert list(intents["status"]) == ["FILLED", "FILLED"]
    assert list(intents["order_ref"]) == ["carver:2024-01-02:AAPL:1", "carver:2024-01-02:ES:1"]
    assert set(report.intents["action"]) == {"new"}


class LedgerWitnessBroker(PaperBroker):
    """The real paper broker, noting at each submit what the ledger already holds for the order."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen_at_submit = {}

    def submit(self, intent, fill_price):
        row = self.ledger.intents(session=intent.session, instrument=intent.instrument).set_index("order_ref")
        self.seen_at_submit[intent.order_ref] = row.loc[intent.order_ref, "status"] if intent.order_ref in row.index else None
        return super().submit(intent, fill_price)


def test_every_intent_is_in_the_ledger_before_it_is_submitted(ledger):
    broker = LedgerWitnessBroker(ledger, COSTS, POINT_SIZES)
    run(ledger, broker, {"ES": 2, "AAPL": -100})
    assert broker.seen_at_submit == {"carver:2024-01-02:AAPL:1": "INTENT", "carver:2024-01-02:ES:1": "INTENT"}


def test_rerunning_the_same_session_and_targets_sends_nothing_new(ledger, broker):
    run(ledger, broker, {"ES": 2, "AAPL": -100})
    report = run(ledger, broker, {"ES": 2, "AAPL": -100}, run_id="run-2")
    assert report.counts["sent"] == 0 and report.counts["planned"] == 0
    assert len(ledger.fills()) == 2
    assert len(ledger.intents()) == 2


def test_a_changed_target_sends_only_the_difference_with_the_next_seq(ledger, broker):
    run(ledger, broker, {"ES": 2})
    report = run(ledger, broker, {"ES": 5}, run_id="run-2")
    # 5 - 2 = 3 more, under seq 2
    assert list(report.intents["order_ref"]) == ["carver:2024-01-02:ES:2"]
    assert list(report.intents["quantity"]) == [3.0]
    assert broker.positions().to_dict() == {"ES": 5.0}


def test_an_intent_written_but_never_sent_is_resent_once_with_the_same_order_ref(ledger, broker):
    # Simulate a crash between step 4 (intent written) and step 6 (submit).
    plan = plan_orders(pd.Series({"ES": 2.0}), pd.Series(dtype=float), pd.Series(dtype=float), PRICES, SESSION, "carver", pd.DataFrame())
    plan["status"], plan["mode"], plan["verdict"] = "INTENT", "submit", "ACCEPTED"
    ledger.record_intents(plan)

    report = run(ledger, broker, {"ES": 2}, run_id="run-2")
    fills = ledger.fills()
    assert list(fills["order_ref"]) == ["carver:2024-01-02:ES:1"]  # exactly one order, the same ref
    assert report.counts["resent"] == 1 and report.counts["sent"] == 1 and report.counts["planned"] == 0
    assert list(report.intents["action"]) == ["resent"]
    assert list(ledger.intents()["status"]) == ["FILLED"]
    assert broker.positions().to_dict() == {"ES": 2.0}


def test_an_intent_filled_at_the_broker_but_not_marked_is_adopted_not_resent(ledger, broker):
    run(ledger, broker, {"ES": 2})
    ledger.update_status("carver:2024-01-02:ES:1", "SUBMITTED")  # crash before the status write
    report = run(ledger, broker, {"ES": 2}, run_id="run-2")
    assert report.counts["adopted"] == 1 and report.counts["sent"] == 0
    assert len(ledger.fills()) == 1
    assert ledger.intents()["status"].iloc[0] == "FILLED"


class WorkingOnlyBroker:
    """A fake of the Broker protocol whose orders stay working (never fill), like a resting IB order."""

    name = "fake"

    def __init__(self):
        self.working = empty_working_orders()
        self.submitted = []

    def positions(self):
        return pd.Series(dtype=float, index=pd.Index([], name="instrument"))

    def working_orders(self):
        return self.working

    def submit(self, intent, fill_price):
        self.submitted.append(intent.order_ref)
        row = pd.DataFrame({"order_ref": [intent.order_ref], "instrument": [intent.instrument], "quantity": [intent.quantity]})
        self.working = pd.concat([self.working, row], ignore_index=True)
        return BrokerOrder(intent.order_ref, "ACKNOWLEDGED", remaining=intent.quantity, perm_id=7)

    def lookup(self, order_ref):
        hit = self.working[self.working["order_ref"] == order_ref]
        return None if hit.empty else BrokerOrder(order_ref, "ACKNOWLEDGED", remaining=float(hit["quantity"].iloc[0]), perm_id=7)

    def cancel(self, order_ref):
        return None


def test_a_working_order_is_neither_resent_nor_ordered_again(ledger):
    broker = WorkingOnlyBroker()
    run(ledger, broker, {"ES": 2})
    report = run(ledger, broker, {"ES": 2}, run_id="run-2")
    # reconcile finds ES:1 working; residual 2 - 0 - 2 = 0
    assert broker.submitted == ["carver:2024-01-02:ES:1"]
    assert report.counts["sent"] == 0 and report.counts["planned"] == 0
    assert list(report.intents["action"]) == ["working"]
    assert ledger.intents()["status"].iloc[0] == "ACKNOWLEDGED"
    assert ledger.intents()["perm_id"].iloc[0] == 7


def test_record_only_runs_never_create_fills(ledger, broker):
    report = run(ledger, broker, {"ES": 2, "AAPL": -100}, submit=False)
    assert ledger.fills().empty
    assert report.mode == "record_only"
    assert list(ledger.intents()["status"]) == ["RECORDED", "RECORDED"]
    assert set(ledger.intents()["mode"]) == {"record_only"}


def test_record_only_rerun_adds_no_second_intent_but_a_changed_target_does(ledger):
    # no broker: a backfill netting against assumed (default flat) positions
    run(ledger, None, {"ES": 2}, submit=False)
    again = run(ledger, None, {"ES": 2}, submit=False, run_id="run-2")
    assert again.counts["unchanged"] == 1 and again.counts["recorded"] == 0
    changed = run(ledger, None, {"ES": 3}, submit=False, run_id="run-3")
    # the earlier intent was never executed: the new one is the whole target 3 - 0, seq 2
    assert list(changed.intents["order_ref"]) == ["carver:2024-01-02:ES:2"]
    assert list(changed.intents["quantity"]) == [3.0]
    assert len(ledger.intents()) == 2 and ledger.fills().empty


def test_record_only_without_a_broker_nets_against_assumed_positions(ledger):
    report = execute_orders(
        pd.Series({"ES": 5.0}), PRICES, SESSION, ledger=ledger, broker=None, limits=LIMITS, point_sizes=POINT_SIZES,
        strategy="carver", submit=False, run_id="bf", assumed_positions=pd.Series({"ES": 2.0}),
    )
    assert list(report.intents["quantity"]) == [3.0]  # 5 - 2
    assert list(report.intents["position_before"]) == [2.0]


def test_submit_without_a_broker_is_refused(ledger):
    with pytest.raises(OrderError, match="needs a broker"):
        run(ledger, None, {"ES": 2})


def test_halted_denies_every_order_and_records_the_reason(ledger, broker):
    ledger.set_trading_state(TradingState.HALTED, "manual stop", "ops")
    report = run(ledger, broker, {"ES": 2, "AAPL": 10})
    intents = ledger.intents()
    assert list(intents["status"]) == ["DENIED", "DENIED"]
    assert intents["deny_reason"].str.startswith("kill_switch: trading state is HALTED").all()
    assert ledger.fills().empty and report.counts["denied"] == 2
    assert set(ledger.alerts()["kind"]) == {"order_denied"}
    # a re-run while still halted does not pile up identical denials
    assert run(ledger, broker, {"ES": 2, "AAPL": 10}, run_id="run-2").counts["recorded"] == 0


def test_reducing_lets_a_reducing_order_through_and_denies_an_increasing_one(ledger, broker):
    run(ledger, broker, {"ES": 10, "AAPL": 10})
    ledger.set_trading_state(TradingState.REDUCING, "wind down", "ops")
    report = run(ledger, broker, {"ES": 4, "AAPL": 15}, run_id="run-2")
    by_instrument = report.intents.set_index("instrument")
    assert by_instrument.loc["ES", "status"] == "FILLED"
    assert by_instrument.loc["AAPL", "status"] == "DENIED"
    assert by_instrument.loc["AAPL", "deny_reason"].startswith("reduce_only")
    assert broker.positions().to_dict() == {"AAPL": 10.0, "ES": 4.0}


def test_a_limit_breach_is_denied_with_its_numbers_and_nothing_is_sent(ledger, broker):
    limits = RiskLimits(max_order_quantity=5, max_order_notional=1_000_000, max_position=2000)
    run(ledger, broker, {"AAPL": 6}, limits=limits)
    assert ledger.intents()["deny_reason"].iloc[0] == "max_order_quantity: |6| > 5"
    assert ledger.fills().empty


def test_a_missing_reference_price_fails_closed(ledger, broker):
    run(ledger, broker, {"ES": 1}, prices=pd.Series({"AAPL": 190.0}))
    assert ledger.intents()["deny_reason"].iloc[0].startswith("invalid_reference_price")
    assert ledger.fills().empty


class UnreachableBroker(WorkingOnlyBroker):
    """A fake of the Broker protocol whose connection is down."""

    def positions(self):
        raise BrokerError("not connected")


def test_a_broker_error_reading_positions_stops_the_run_before_any_intent(ledger):
    broker = UnreachableBroker()
    with pytest.raises(BrokerError, match="not connected"):
        run(ledger, broker, {"ES": 2})
    assert ledger.intents().empty and broker.submitted == []


class NoneBroker(WorkingOnlyBroker):
    """A fake broker that answers None for positions (an 'empty' answer, not a Series)."""

    def positions(self):
        return None


def test_a_non_answer_from_the_broker_is_not_read_as_flat(ledger):
    with pytest.raises(BrokerError, match="not a Series"):
        run(ledger, NoneBroker(), {"ES": 2})
    assert ledger.intents().empty


class NoRefsBroker(WorkingOnlyBroker):
    """A fake broker whose working orders lack the order_ref column."""

    def working_orders(self):
        return pd.DataFrame({"instrument": ["ES"], "quantity": [2.0]})


def test_working_orders_without_order_refs_stop_the_reconciliation(ledger):
    plan = plan_orders(pd.Series({"ES": 2.0}), pd.Series(dtype=float), pd.Series(dtype=float), PRICES, SESSION, "carver", pd.DataFrame())
    plan["status"], plan["mode"] = "SUBMITTED", "submit"
    ledger.record_intents(plan)
    broker = NoRefsBroker()
    with pytest.raises(BrokerError, match="order_ref"):
        run(ledger, broker, {"ES": 2})
    assert broker.submitted == []


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.dictionaries(st.sampled_from(["ES", "AAPL", "MSFT"]), st.integers(-20, 20), max_size=3),
    second=st.dictionaries(
        st.sampled_from(["ES", "AAPL", "MSFT"]), st.one_of(st.integers(-20, 20), st.just(math.nan)), max_size=3
    ),
)
def test_after_a_submit_run_broker_positions_equal_the_targets(first, second):
    # Property: ACTIVE, generous limits -> after each run, position == target for every
    # instrument with a target; instruments without one (NaN or absent) keep their position.
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / LEDGER_FILE).init()
        broker = PaperBroker(ledger, COSTS, POINT_SIZES)
        run(ledger, broker, first, session="2024-01-02")
        after_first = broker.positions().reindex(list(POINT_SIZES)).fillna(0.0)
        run(ledger, broker, second, session="2024-01-03", run_id="run-2")
        positions = broker.positions().reindex(list(POINT_SIZES)).fillna(0.0)
        for instrument in POINT_SIZES:
            target = second.get(instrument, math.nan)
            expected = after_first[instrument] if math.isnan(target) else float(round(target))
            assert positions[instrument] == expected


# --- record-only intents over many sessions (backfills) ---------------------------------------

def _wide(rows, sessions):
    return pd.DataFrame(rows, index=pd.DatetimeIndex(sessions, name="session"), columns=["AAA", "BBB"], dtype=float)


def test_backfill_intents_are_the_trades_between_successive_targets(ledger):
    from pipeline.execution import record_intents_without_sending

    days = ["2022-12-27", "2022-12-28", "2022-12-29"]
    targets = _wide([[10, -5], [10, -8], [4, float("nan")]], days)
    prices = _wide([[100, 50]] * 3, days)
    out = record_intents_without_sending(targets, prices, targets.index, ledger=ledger, limits=LIMITS,
                                         point_sizes={"AAA": 1.0, "BBB": 1.0}, strategy="carver", run_id="bf")
    got = {(r.order_ref, r.quantity) for r in out.itertuples()}
    # Day 1 from flat; day 2 only BBB moves (-8 - -5 = -3); day 3 AAA 4 - 10 = -6, BBB has no target.
    assert got == {("carver:2022-12-27:AAA:1", 10.0), ("carver:2022-12-27:BBB:1", -5.0),
                   ("carver:2022-12-28:BBB:1", -3.0), ("carver:2022-12-29:AAA:1", -6.0)}
    assert set(ledger.intents()["status"]) == {"RECORDED"} and ledger.fills().empty
    # Re-running the same backfill records nothing new.
    again = record_intents_without_sending(targets, prices, targets.index, ledger=ledger, limits=LIMITS,
                                           point_sizes={"AAA": 1.0, "BBB": 1.0}, strategy="carver", run_id="bf2")
    assert again.empty and len(ledger.intents()) == 4


def test_backfill_intents_go_through_the_gate(ledger):
    from pipeline.execution import record_intents_without_sending

    days = ["2022-12-27", "2022-12-28"]
    targets = _wide([[10, 5000], [10, 5000]], days)  # 5000 > max_order_quantity 1000
    prices = _wide([[100, 50]] * 2, days)
    out = record_intents_without_sending(targets, prices, targets.index, ledger=ledger, limits=LIMITS,
                                         point_sizes={"AAA": 1.0, "BBB": 1.0}, strategy="carver", run_id="bf")
    denied = out[out["status"] == "DENIED"]
    assert list(denied["instrument"]) == ["BBB"] and denied["deny_reason"].str.startswith("max_order_quantity").all()


def test_backfills_and_record_only_runs_are_not_throttled(ledger):
    from pipeline.execution import record_intents_without_sending

    days = ["2022-12-27", "2022-12-28"]
    limits = LIMITS.model_copy(update={"max_orders_per_window": 1, "order_window_seconds": 3600.0})
    out = record_intents_without_sending(_wide([[10, -5], [20, -8]], days), _wide([[100, 50]] * 2, days),
                                         pd.DatetimeIndex(days), ledger=ledger, limits=limits,
                                         point_sizes={"AAA": 1.0, "BBB": 1.0}, strategy="carver", run_id="bf")
    assert len(out) == 4 and set(out["status"]) == {"RECORDED"}


def test_a_submit_run_is_throttled_across_runs_by_the_ledgers_submission_times(ledger, broker):
    limits = LIMITS.model_copy(update={"max_orders_per_window": 2, "order_window_seconds": 3600.0})
    run(ledger, broker, {"ES": 1, "AAPL": 1}, limits=limits)  # two sent within the hour
    report = run(ledger, broker, {"ES": 2}, limits=limits, run_id="run-2")
    assert report.counts["sent"] == 0
    assert report.intents["deny_reason"].tolist() == ["order_rate: 2 orders within 3600 s >= 2"]


def _record_one_session_at_a_time(targets, reference_prices, sessions, *, ledger, limits, point_sizes, strategy, run_id):
    """The former backfill path, kept as the reference: plan_orders and the gate session by
    session, exactly as execute_orders(submit=False) plans one session."""
    from pipeline.execution import PLAN_COLUMNS
    from pipeline.execution.gate import clip_to_position_limit
    from pipeline.execution.intents import unchanged_intents as _unchanged
    from pipeline.execution.run_gate import gate_plan as _gate

    state = ledger.trading_state()
    previous = targets.shift(1).fillna(0.0)
    prior_all = ledger.intents()
    plans = []
    for session in sessions:
        prior = prior_all[prior_all["session"] == session]
        plan = plan_orders(targets.loc[session], previous.loc[session], pd.Series(dtype=float),
                           reference_prices.loc[session], session, strategy, prior)
        if plan.empty:
            continue
        # the position limit clips each trade (the scalar rule, pysystemtrade's), recorded on the intent
        planned = plan["quantity"].tolist()
        possible = [clip_to_position_limit(b, limits.max_position, q) for b, q in zip(plan["position_before"], planned)]
        clipped = [c not in (q, 0.0) for c, q in zip(possible, planned)]
        plan["quantity"] = [c if k else q for c, q, k in zip(possible, planned, clipped)]
        plan["planned_quantity"] = [q if k else np.nan for q, k in zip(planned, clipped)]
        plan["adjust_reason"] = pd.array(
            [f"max_position: trade clipped from {q:g} to {c:g} (|position| at most {limits.max_position:g})" if k
             else None for c, q, k in zip(possible, planned, clipped)], dtype="str")
        verdicts = _gate(plan, state, limits, point_sizes)
        plan["verdict"] = pd.array(["ACCEPTED" if v.accepted else "DENIED" for v in verdicts], dtype="str")
        plan["deny_reason"] = pd.array([v.reason for v in verdicts], dtype="str")
        plans.append(plan[~_unchanged(plan, prior, "record_only")])
    if not plans:
        return pd.DataFrame(columns=[*PLAN_COLUMNS, "planned_quantity", "adjust_reason", "verdict", "deny_reason",
                                     "status", "mode", "run_id"])
    out = pd.concat(plans, ignore_index=True)
    out["status"] = out["verdict"].map({"ACCEPTED": "RECORDED", "DENIED": "DENIED"})
    out["mode"] = "record_only"
    out["run_id"] = run_id
    if len(out):
        ledger.record_intents(out)
    return out


def _sample_targets(years: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trend-following targets on the bundled sample's closes: long or short 50,000 / close
    units by the sign of close minus its 64-session mean (NaN before that), whole units except
    one instrument held in fractions; with missing closes and holes as real data has."""
    bars = pd.read_parquet(Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample_bars.parquet")
    close = bars.pivot(index="session", columns="instrument", values="close").sort_index()
    close = close[close.index > close.index[-1] - pd.DateOffset(years=years)]
    sign = np.sign(close - close.rolling(64, min_periods=64).mean())
    targets = (sign * (50_000 / close)).round()
    first = targets.columns[0]
    targets[first] = sign[first] * 50_000 / close[first]  # fractional units: never rounded
    targets.index.name = "session"
    return targets, close


def test_the_vectorised_backfill_writes_what_planning_one_session_at_a_time_wrote(tmp_path):
    from pipeline.execution import record_intents_without_sending

    targets, prices = _sample_targets(years=2)
    point_sizes = dict.fromkeys(targets.columns, 1.0)
    limits = LIMITS.model_copy(update={"max_order_notional": 60_000.0, "max_position": 1_500})  # some denials
    ledgers = {name: Ledger(tmp_path / name / LEDGER_FILE).init() for name in ("old", "new")}
    recorders = {"old": _record_one_session_at_a_time, "new": record_intents_without_sending}
    changed = targets.copy()
    changed.iloc[-100:, :5] += 3  # a re-run after a change: new intents with the next seq ...
    sessions = targets.index[63:]
    outputs = {}
    for name, record in recorders.items():
        kwargs = {"ledger": ledgers[name], "limits": limits, "point_sizes": point_sizes, "strategy": "carver",
                  "run_id": "bf"}
        outputs[name] = [
            record(targets, prices, sessions, **kwargs),
            record(changed, prices, sessions, **kwargs),
            record(changed, prices, sessions[-150:], **kwargs),  # ... and nothing for unchanged ones
        ]
    old, new = outputs["old"], outputs["new"]
    assert len(old[0]) > 5_000 and (old[0]["status"] == "DENIED").sum() > 100 and old[0]["quantity"].mod(1).ne(0).any()
    assert 0 < len(old[1]) < len(old[0]) and old[1]["seq"].max() == 2 and old[2].empty
    for o, n in zip(old, new):
        pd.testing.assert_frame_equal(n.reset_index(drop=True), o.reset_index(drop=True), check_dtype=False,
                                      check_index_type=False)
        if len(o):
            assert n["session"].dtype == o["session"].dtype and n["seq"].dtype == o["seq"].dtype
    stored = [ledgers[k].intents().drop(columns=["created_at", "updated_at"]) for k in ("old", "new")]
    pd.testing.assert_frame_equal(stored[1], stored[0])


def test_a_trade_beyond_the_position_limit_is_clipped_to_it_and_recorded(ledger):
    limits = LIMITS.model_copy(update={"max_position": 3})
    broker = PaperBroker(ledger, costs=dict.fromkeys(POINT_SIZES, CostModel()), point_sizes=POINT_SIZES)
    report = execute_orders(pd.Series({"AAPL": 4.0, "MSFT": -2.0}), pd.Series({"AAPL": 100.0, "MSFT": 100.0}), SESSION,
                            ledger=ledger, broker=broker, limits=limits, point_sizes=POINT_SIZES, strategy="carver",
                            submit=True, run_id="r1")
    rows = report.intents.set_index("instrument")
    assert rows.loc["AAPL", ["quantity", "planned_quantity", "status"]].tolist() == [3.0, 4.0, "FILLED"]
    assert rows.loc["AAPL", "adjust_reason"] == "max_position: trade clipped from 4 to 3 (|position| at most 3)"
    assert pd.isna(rows.loc["MSFT", "planned_quantity"]) and rows.loc["MSFT", "quantity"] == -2.0
    assert broker.positions().to_dict() == {"AAPL": 3.0, "MSFT": -2.0}


def test_orders_beyond_the_sessions_trade_count_are_denied(ledger):
    limits = LIMITS.model_copy(update={"max_trades_per_session": 2})
    broker = PaperBroker(ledger, costs=dict.fromkeys(POINT_SIZES, CostModel()), point_sizes=POINT_SIZES)
    targets = pd.Series({"AAPL": 1.0, "ES": 1.0, "MSFT": 1.0})
    prices = pd.Series({"AAPL": 100.0, "ES": 100.0, "MSFT": 100.0})
    report = execute_orders(targets, prices, SESSION, ledger=ledger, broker=broker, limits=limits,
                            point_sizes=POINT_SIZES, strategy="carver", submit=True, run_id="r1")
    assert report.counts["sent"] == 2
    (denied,) = report.intents[report.intents["status"] == "DENIED"]["deny_reason"]
    assert denied == "max_trades_per_session: 2 orders already sent for this session >= 2"
    again = execute_orders(targets, prices, SESSION, ledger=ledger, broker=broker, limits=limits,
                           point_sizes=POINT_SIZES, strategy="carver", submit=True, run_id="r2")
    assert again.counts["sent"] == 0  # the two sent earlier count against the session's limit
