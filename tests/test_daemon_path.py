"""The daemon path: a real ``dagster-daemon run`` over the project's ``dagster.yaml`` and code location.

One daemon (module fixture) runs with a temporary ``DAGSTER_HOME`` holding the ``dagster.yaml`` the
CLI writes (:func:`pipeline.definitions.instance_yaml`: the queued run coordinator, one daily run at
a time) and a workspace file loading ``pipeline.definitions:defs`` with a three-instrument
configuration over the bundled sample and its own lake. Everything is observed through the instance.

- ``daily_after_close`` is started with ``dagster schedule start``; the daemon's scheduler evaluates
  it (it records its iteration in the schedule's state). Its cron (17:00 New York) cannot be made to
  fire during a test, so its runs are submitted as it submits them: the schedule's own evaluation
  gives the ``RunRequest`` (partition, tags, run config) for a session, and ``dagster job launch``
  submits it through the instance's run coordinator, which queues it for the daemon to start.
- Two daily runs submitted at once: the second leaves the queue only after the first has ended.
- A run that fails (a session after the sample's last bar: ``raw_bars`` finds nothing) reaches the
  ledger's ``alerts`` table through the ``run_failure_alerts`` sensor the daemon runs (running by
  default: the project declares it so, nobody starts it).

Generous waits (a daemon tick can take a minute on a loaded two-core machine); no timing assertion.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pandas as pd
import pytest
import yaml

from pipeline.config import load_config
from pipeline.definitions import DAILY_JOB, build_definitions, instance_yaml
from pipeline.store.lake import Lake
from pipeline.store.ledger import Ledger, LedgerError
from tests.conftest import write_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UNIVERSE = ["AAPL", "KO", "XOM"]
#: Two years of history: enough for the slowest rule (breakout320) and the instrument weights.
HISTORY_START = "2021-01-04"
SESSIONS = ("2022-12-27", "2022-12-28")
#: A weekday NYSE session after the sample's last bar (2022-12-28): ``raw_bars`` fails on it.
NO_BARS_SESSION = "2023-01-03"
NY = "America/New_York"
#: Seconds to wait for the daemon to do something (start, tick) and for a run to finish.
DAEMON_TIMEOUT = 600
RUN_TIMEOUT = 1200
POLL = 2.0
IN_PROGRESS = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

T = TypeVar("T")


@dataclass(frozen=True)
class Daemon:
    """A running ``dagster-daemon``: its instance folder, workspace file, config, lake and log."""

    process: subprocess.Popen
    home: Path
    workspace: Path
    config: Path
    lake: Path
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = DAEMON_TIMEOUT) -> T:
        """Poll ``probe`` until it returns something not None; AssertionError naming ``what`` (with
        the daemon's log) when the daemon exits or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"dagster-daemon exited while waiting for {what}:\n{self.tail()}"
            found = probe()
            if found is not None:
                return found
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.tail()}"
            time.sleep(POLL)


def _cli(daemon: Daemon, *args: str) -> subprocess.Popen:
    """Start ``dagster ARGS -w <workspace>`` in the daemon's environment (its instance, its config)."""
    return subprocess.Popen([str(BIN / "dagster"), *args, "-w", str(daemon.workspace)], cwd=ROOT,
                            env=_environment(daemon.home, daemon.config), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=DAEMON_TIMEOUT)
    assert process.returncode == 0, out
    return out


def _environment(home: Path, config: Path) -> dict[str, str]:
    env = {**os.environ, "DAGSTER_HOME": str(home), "TRADING_PIPELINE_CONFIG": str(config)}
    for name in list(env):  # the lake of the config, and no alert sent to a real destination
        if name == "TRADING_PIPELINE_LAKE" or name.startswith("TRADING_ALERT_"):
            env.pop(name)
    return env


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Iterator[Daemon]:
    folder = tmp_path_factory.mktemp("daemon_path")
    home = folder / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(home))  # the project's instance, as the CLI writes it
    # Create the instance's SQLite databases before any other process opens them: processes that
    # create them at the same moment can each stamp a schema version ("more than one head present").
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
    config = write_config(folder, symbols=UNIVERSE, history_start=HISTORY_START)
    workspace = folder / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "pipeline.definitions", "attribute": "defs", "location_name": "trading",
        "working_directory": str(ROOT)}}]}))
    log = folder / "daemon.log"
    with open(log, "wb") as out:
        # its own process group: the daemon starts a code server, which starts a worker per run
        process = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], cwd=ROOT,
                                   env=_environment(home, config), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield Daemon(process, home, workspace, config, folder / "lake", log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


@pytest.fixture(scope="module")
def instance(daemon) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(daemon.home)) as inst:
        yield inst


def _scheduled_request(config: Path, session: str) -> dg.RunRequest:
    """The run request ``daily_after_close`` makes at 17:00 New York on ``session``."""
    defs = build_definitions(load_config(config), config_path=str(config))
    when = pd.Timestamp(f"{session} 17:00", tz=NY).to_pydatetime()
    context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    (request,) = defs.resolve_schedule_def("daily_after_close").evaluate_tick(context).run_requests
    return request


def _launch(daemon: Daemon, request: dg.RunRequest) -> subprocess.Popen:
    """Submit ``request`` as the scheduler does: the daily job, its partition tag, its tags and run config."""
    tags = {"dagster/partition": request.partition_key, **request.tags}
    return _cli(daemon, "job", "launch", "-j", DAILY_JOB, "--tags", json.dumps(tags),
                "--config-json", json.dumps(request.run_config))


def _run_of(instance: dg.DagsterInstance, session: str) -> dg.RunRecord | None:
    records = instance.get_run_records(dg.RunsFilter(tags={"trading/session": session}))
    assert len(records) <= 1, records
    return records[0] if records else None


def _state(instance: dg.DagsterInstance, name: str):
    return next((s for s in instance.all_instigator_state() if s.instigator_name == name), None)


def _event_time(instance: dg.DagsterInstance, run_id: str, event: dg.DagsterEventType) -> float:
    (entry,) = instance.all_logs(run_id, of_type=event)
    return entry.timestamp


def test_scheduled_daily_runs_are_queued_and_run_one_at_a_time(daemon, instance):
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)  # the project's dagster.yaml

    # The schedule, started as an operator does; the daemon's scheduler evaluates it.
    out = _finish(_cli(daemon, "schedule", "start", "daily_after_close"))
    assert "Started schedule daily_after_close" in out, out
    schedule = _state(instance, "daily_after_close")
    assert schedule.status.value == "RUNNING"
    started = schedule.instigator_data.start_timestamp
    daemon.wait_for("scheduler iteration over daily_after_close",
                    lambda: _state(instance, "daily_after_close").instigator_data.last_iteration_timestamp)
    assert _state(instance, "daily_after_close").instigator_data.last_iteration_timestamp >= started

    # Two sessions' runs, as the schedule requests them, submitted at the same time.
    requests = [_scheduled_request(daemon.config, s) for s in SESSIONS]
    assert [r.partition_key for r in requests] == list(SESSIONS) and all(r.run_config for r in requests)
    for process in [_launch(daemon, r) for r in requests]:
        _finish(process)
    records = [_run_of(instance, s) for s in SESSIONS]
    assert all(r is not None for r in records)
    assert all(r.dagster_run.tags["trading/job"] == "daily" for r in records)  # the tag the limit counts

    # Poll until both end: never both in progress at once.
    seen: list[dict[str, dg.DagsterRunStatus]] = []

    def both_finished():
        statuses = {s: _run_of(instance, s).dagster_run.status for s in SESSIONS}
        seen.append(statuses)
        assert sum(v in IN_PROGRESS for v in statuses.values()) <= 1, f"two daily runs in progress: {statuses}"
        return statuses if all(v in FINISHED for v in statuses.values()) else None

    final = daemon.wait_for("end of both daily runs", both_finished, timeout=RUN_TIMEOUT)
    assert set(final.values()) == {dg.DagsterRunStatus.SUCCESS}, (final, daemon.tail())
    assert any(dg.DagsterRunStatus.QUEUED in v.values() for v in seen)  # one waited in the queue

    # Both went through the queue; the second left it (the coordinator's launch: RUN_STARTING) only
    # after the first had ended, though it was submitted while the first was still running (else the
    # limit would have been tested on nothing).
    records = sorted((_run_of(instance, s) for s in SESSIONS), key=lambda r: r.start_time)
    first, second = records
    for record in records:
        assert instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
    assert second.create_timestamp.timestamp() < first.end_time
    assert _event_time(instance, second.dagster_run.run_id, dg.DagsterEventType.RUN_STARTING) >= first.end_time
    assert second.start_time >= first.end_time

    # The runs did the day's work: target positions of both sessions are in the lake.
    positions = Lake(daemon.lake).read("target_positions", start=pd.Timestamp(SESSIONS[0]))
    assert sorted(positions["session"].dt.strftime("%Y-%m-%d").unique()) == list(SESSIONS)
    assert set(positions["instrument"]) == set(UNIVERSE)


def _run_failure_alert(ledger: Ledger, run_id: str) -> pd.Series | None:
    if not ledger.path.exists():
        return None
    try:
        alerts = ledger.alerts()
    except LedgerError:  # a run or the sensor holds the write lock: read again later
        return None
    rows = alerts[alerts["dedupe_key"] == f"run:{run_id}"]
    return rows.iloc[0] if len(rows) else None


def test_a_failed_run_reaches_the_alerts_table_through_the_sensor(daemon, instance):
    # A run-status sensor starts watching at its first tick (it sets its cursor to the latest event
    # then): wait for that tick, so that the failure below comes after it.
    def first_tick():
        state = _state(instance, "run_failure_alerts")
        if state is None:
            return None
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        return ticks or None

    daemon.wait_for("first tick of run_failure_alerts", first_tick)
    assert _state(instance, "run_failure_alerts").status.value == "DECLARED_IN_CODE"  # running by default

    request = _scheduled_request(daemon.config, NO_BARS_SESSION)
    _finish(_launch(daemon, request))
    run_id = _run_of(instance, NO_BARS_SESSION).dagster_run.run_id
    status = daemon.wait_for("end of the run without bars", lambda: (
        s if (s := instance.get_run_by_id(run_id).status) in FINISHED else None), timeout=RUN_TIMEOUT)
    assert status == dg.DagsterRunStatus.FAILURE

    ledger = Ledger(daemon.lake / "warehouse.duckdb")
    alert = daemon.wait_for("run_failure alert in the alerts table", lambda: _run_failure_alert(ledger, run_id))
    assert alert["kind"] == "run_failure" and alert["severity"] == "ERROR"
    assert alert["subject"] == f"run {run_id[:8]} ({DAILY_JOB})"
    assert alert["message"] == f"Execution of run for \"{DAILY_JOB}\" failed. Steps failed: ['raw_bars']."
