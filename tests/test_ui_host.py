"""Promise 25: the UI, started the documented way, answers on 127.0.0.1 only.

The command is read from ``docs/operations.md`` and run as written (only the port is swapped for
a free one), with a temporary ``DAGSTER_HOME``. A connection to 127.0.0.1 is served; one to the
machine's own network address is refused, because nothing listens there.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.ui_support import STARTUP_TIMEOUT, free_port

ROOT = Path(__file__).resolve().parents[1]


def documented_command() -> list[str]:
    """The ``dagster dev`` line of the UI section of docs/operations.md, as argv."""
    text = (ROOT / "docs" / "operations.md").read_text()
    (line,) = re.findall(r"^dagster dev .*$", text, flags=re.MULTILINE)
    return shlex.split(line, comments=True)


def network_address() -> str | None:
    """This machine's non-loopback IPv4 address (the one its default route uses), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1; a UDP connect sends nothing
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _serves(host: str, port: int) -> bool:
    with urllib.request.urlopen(
        f"http://{host}:{port}/server_info", timeout=10
    ) as response:
        return response.status == 200


def test_the_documented_ui_command_binds_the_loopback_address_only(tmp_path):
    argv = documented_command()
    assert argv[:2] == ["dagster", "dev"] and argv[argv.index("-h") + 1] == "127.0.0.1"
    port = free_port()
    argv[argv.index("-p") + 1] = str(port)
    argv[0] = str(Path(sys.executable).with_name("dagster"))
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TRADING_PIPELINE_CONFIG": str(write_config(tmp_path)),
    }
    log_path = tmp_path / "dagster_dev.log"
    with open(log_path, "wb") as log:
        # its own process group: dagster dev starts the webserver and the daemon as children
        server = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = (
            time.monotonic() + STARTUP_TIMEOUT
        )  # a guard for a server that never comes up
        while True:
            assert server.poll() is None, (
                f"dagster dev exited:\n{log_path.read_text()[-3000:]}"
            )
            try:
                if _serves("127.0.0.1", port):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                f"no UI on 127.0.0.1:{port}:\n{log_path.read_text()[-3000:]}"
            )
            time.sleep(1)
        address = network_address()
        if address is None:
            pytest.skip("this machine has no non-loopback IPv4 address to probe")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=10).close()
        assert _serves(
            "127.0.0.1", port
        )  # still up: the refusal was the bind, not a dead server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
