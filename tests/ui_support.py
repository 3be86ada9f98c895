"""A Dagster webserver on 127.0.0.1 for the UI tests: a temporary ``DAGSTER_HOME``, a small config.

:func:`webserver` starts ``dagster-webserver -w workspace.yaml`` as a user does, with the code
location reading a five-instrument configuration over the bundled sample and a fresh lake, and waits
until the asset graph is served. :func:`launch_daily_run` launches ``daily_job`` through Dagster's
GraphQL API (what the UI's "Materialize" button does) and waits for the run to finish.

The instance uses the default (non-queued) run coordinator so a launched run starts without a
``dagster-daemon``; the run itself goes through the default run launcher, a run worker subprocess,
as in production.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import LATEST_SAMPLE_SESSION, write_config

ROOT = Path(__file__).resolve().parents[1]
LOCATION = "trading"
#: Seconds to wait for the webserver to serve the graph, and for a run to finish (2-core machine).
STARTUP_TIMEOUT = 300
RUN_TIMEOUT = 600

_INSTANCE_YAML = """telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""

_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""


@dataclass(frozen=True)
class Webserver:
    """A running webserver: its port, ``DAGSTER_HOME``, configuration file and lake root."""

    port: int
    home: Path
    config: Path
    lake: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        """POST ``query`` to ``/graphql``; returns the decoded JSON answer (``data`` and/or ``errors``)."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def webserver(folder: Path) -> Iterator[Webserver]:
    """Start ``dagster-webserver`` on a free port of 127.0.0.1 with ``DAGSTER_HOME=folder/home``.

    Raises AssertionError when the asset graph is not served within :data:`STARTUP_TIMEOUT` seconds
    (the server's log, ``folder/webserver.log``, is quoted).
    """
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(_INSTANCE_YAML)
    config = write_config(folder)
    port = free_port()
    exe = Path(sys.executable).with_name("dagster-webserver")
    env = {**os.environ, "DAGSTER_HOME": str(home), "TRADING_PIPELINE_CONFIG": str(config)}
    env.pop("TRADING_PIPELINE_LAKE", None)
    log_path = folder / "webserver.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    ws = Webserver(port=port, home=home, config=config, lake=folder / "lake")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert server.poll() is None, f"webserver exited:\n{log_path.read_text()[-3000:]}"
            try:
                if ws.graphql("{ assetNodes { id } }", timeout=10).get("data", {}).get("assetNodes"):
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            raise AssertionError(f"webserver did not serve the asset graph within {STARTUP_TIMEOUT} s:\n"
                                 f"{log_path.read_text()[-3000:]}")
        yield ws
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def launch_daily_run(ws: Webserver, session: str = LATEST_SAMPLE_SESSION) -> tuple[str, str]:
    """Launch ``daily_job`` for partition ``session`` through GraphQL and wait for it to end.

    No run config is passed, so ``orders`` records intents only (dry run), as from the UI.
    Returns (run id, final status, e.g. ``SUCCESS``).
    """
    return launch_run(ws, "daily_job", [{"key": "dagster/partition", "value": session}])


def launch_run(ws: Webserver, job: str, tags: list[dict] = ()) -> tuple[str, str]:
    """Launch ``job`` (with ``tags``) through GraphQL, as the UI's launch button does, and wait for it
    to end; (run id, final status). ``research_job`` is unpartitioned: no partition tag."""
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": job},
        "executionMetadata": {"tags": [*tags, {"key": "trading/trigger", "value": "ui-test"}]},
    }
    answer = ws.graphql(_LAUNCH, {"params": params})
    launched = answer.get("data", {}).get("launchRun") or {}
    assert launched.get("__typename") == "LaunchRunSuccess", answer
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + RUN_TIMEOUT
    status = None
    while time.monotonic() < deadline:
        run = ws.graphql('query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }', {"id": run_id})
        status = run["data"]["runOrError"]["status"]
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            return run_id, status
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish within {RUN_TIMEOUT} s (last status {status})")
