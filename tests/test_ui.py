"""The Dagster webserver serves the code location on 127.0.0.1 with every asset of the graph."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.definitions import ALL_ASSETS

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_webserver_shows_every_asset_with_its_group(tmp_path):
    port = _free_port()
    exe = Path(sys.executable).with_name("dagster-webserver")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    server = subprocess.Popen([str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        nodes = None
        while time.monotonic() < deadline:
            try:
                data = _graphql(port, "{ assetNodes { assetKey { path } groupName } }")
                nodes = data.get("data", {}).get("assetNodes")
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert nodes, "webserver did not serve the asset graph within 300 s"
        groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
        assert set(groups) == {a.key.to_user_string() for a in ALL_ASSETS}
        assert groups["clean_bars"] == "quality" and groups["orders"] == "execution" and groups["backtest"] == "research"
    finally:
        server.terminate()
        server.wait(timeout=30)
