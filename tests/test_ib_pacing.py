"""The shared IB pacing budget: IB's three historical-data rules, on a fake clock (no sleeping).

Rules (IB API docs, "Historical Data Limitations"): no identical request within 15 s; fewer than
six requests for the same contract, exchange and bar type within 2 s; at most 60 requests in any
10 minutes.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.adapters.ib.fake_gateway import FakeClock
from pipeline.adapters.ib.pacing import (
    HistoricalRequest,
    PacingBudget,
    PacingBudgetExceeded,
    shared_budget,
)


def req(contract="AAPL", what="TRADES", end="20240628-23:59:59") -> HistoricalRequest:
    return HistoricalRequest(contract, "SMART", what, (end, "5 D", "1 day", True))


def test_first_request_goes_at_once():
    clock = FakeClock(start=100.0)
    budget = PacingBudget(clock=clock)
    assert budget.acquire(req(), sleep=clock.sleep) == 0.0
    assert clock.sleeps == []


def test_identical_request_waits_until_15_s_after_the_first():
    clock = FakeClock(start=100.0)
    budget = PacingBudget(clock=clock)
    budget.acquire(req(), sleep=clock.sleep)
    clock.t += 4.0
    assert budget.wait_time(req()) == pytest.approx(11.0)  # 15 - 4
    assert budget.acquire(req(), sleep=clock.sleep) == pytest.approx(11.0)
    assert clock.t == pytest.approx(115.0)


def test_identical_rule_does_not_apply_to_a_different_end_date():
    clock = FakeClock(start=100.0)
    budget = PacingBudget(clock=clock)
    budget.acquire(req(end="20240628-23:59:59"), sleep=clock.sleep)
    assert budget.wait_time(req(end="20240627-23:59:59")) == 0.0


def test_identical_request_after_15_s_goes_at_once():
    clock = FakeClock(start=100.0)
    budget = PacingBudget(clock=clock)
    budget.record(req())
    clock.t += 15.0
    assert budget.wait_time(req()) == 0.0


def test_sixth_request_for_one_contract_within_2_s_waits():
    clock = FakeClock(start=100.0)
    budget = PacingBudget(clock=clock)
    for i in range(5):  # five distinct requests at t = 100.0, 100.1, ..., 100.4
        budget.record(req(end=f"2024060{i + 1}-23:59:59"))
        clock.t += 0.1
    # At t=100.5 the oldest of the five (t=100.0) leaves the 2 s window at t=102.0: wait 1.5 s.
    assert budget.wait_time(req(end="20240610-23:59:59")) == pytest.approx(1.5)
    # Another contract is not limited by AAPL's requests.
    assert budget.wait_time(req(contract="MSFT")) == 0.0
    # Nor is another bar type of the same contract.
    assert budget.wait_time(req(what="MIDPOINT")) == 0.0


def test_61st_request_in_10_minutes_waits_for_the_oldest_to_expire():
    clock = FakeClock(start=100.0)
    budget = PacingBudget(clock=clock)
    for i in range(60):  # 60 contracts, one request every 5 s: t = 100 .. 395
        budget.record(req(contract=f"C{i}"))
        clock.t += 5.0
    # t = 400; the first request (t=100) leaves the 600 s window at t=700.
    assert budget.wait_time(req(contract="NEW")) == pytest.approx(300.0)
    budget.acquire(req(contract="NEW"), sleep=clock.sleep)
    assert clock.sleeps == [pytest.approx(300.0)]


def test_wait_beyond_max_wait_raises():
    clock = FakeClock(start=100.0)
    budget = PacingBudget(clock=clock, global_max=1)
    budget.record(req(contract="A"))
    with pytest.raises(PacingBudgetExceeded, match="more than the 60 s allowed"):
        budget.acquire(req(contract="B"), sleep=clock.sleep, max_wait=60.0)
    assert clock.sleeps == []


def test_concurrent_acquires_never_exceed_the_limit():
    # 8 threads race for a budget of 5 per window with a frozen clock: exactly 5 get through
    # at once, the others must wait (their sleep raises, so they record nothing).
    clock = FakeClock(start=100.0)
    budget = PacingBudget(clock=clock, global_max=5)
    admitted: list[int] = []
    lock = threading.Lock()

    def frozen_sleep(_: float) -> None:
        raise TimeoutError("would wait")

    def worker(i: int) -> None:
        try:
            budget.acquire(req(contract=f"C{i}"), sleep=frozen_sleep)
        except TimeoutError:
            return
        with lock:
            admitted.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(admitted) == 5


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 30.0), st.sampled_from(["A", "B"]), st.sampled_from(["d1", "d2", "d3"])),
        min_size=1,
        max_size=40,
    )
)
def test_requests_through_acquire_satisfy_all_three_rules(steps):
    # Whatever the arrival pattern, the send times acquire produces obey every rule (checked
    # here naively from the list of send times).
    clock = FakeClock(start=100.0)
    budget = PacingBudget(clock=clock, global_max=10, global_window=60.0)
    sent: list[tuple[float, HistoricalRequest]] = []
    for gap, contract, end in steps:
        clock.t += gap
        r = req(contract=contract, end=end)
        budget.acquire(r, sleep=clock.sleep)
        sent.append((clock.t, r))
    eps = 1e-9
    for i, (t, r) in enumerate(sent):
        earlier = [(u, q) for u, q in sent[:i]]
        assert all(t - u >= 15.0 - eps for u, q in earlier if q == r)
        assert sum(1 for u, q in earlier if q.series == r.series and t - u < 2.0 - eps) < 5
        assert sum(1 for u, _ in earlier if t - u < 60.0 - eps) < 10


def test_shared_budget_is_one_object_per_process():
    assert shared_budget() is shared_budget()
