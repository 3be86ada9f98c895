"""A throw-away PostgreSQL server for tests and benchmarks: Debian's binaries, a temp data folder.

``initdb`` + ``pg_ctl`` on a free port of 127.0.0.1, trust authentication, no TCP outside
loopback, no Unix socket outside the data folder. PostgreSQL refuses to run as root, so when the
current user is root the server runs as the ``postgres`` system user (created by Debian's package)
through ``runuser``; the data folder is handed to that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def postgres_bin() -> Path | None:
    """Folder of ``initdb``/``pg_ctl`` (``$PG_BIN`` or the newest ``/usr/lib/postgresql/*/bin``), or None."""
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    """A running server: connect as ``user`` (no password) to ``127.0.0.1:port``, database ``db``."""

    port: int
    user: str = "dagster"
    db: str = "dagster"
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database with the psycopg2 driver (the one dagster-postgres installs)."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.db}"


@contextmanager
def postgres_server(settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server in a temporary folder; stop it and delete the folder on exit.

    Args:
        settings: extra ``postgresql.conf`` settings (e.g. ``{"synchronous_commit": "off"}``).

    Raises:
        RuntimeError: no PostgreSQL binaries, or the server did not start (its log is in the message).
    """
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    data, log = root / "data", root / "server.log"
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
    port = _free_port()
    server = PostgresServer(port=port)

    def run(*cmd: str) -> None:
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, cwd=root)
        if done.returncode:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{text}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", server.user, "-A", "trust", "-E", "UTF8", "--no-sync")
        conf = {"listen_addresses": "'127.0.0.1'", "port": str(port), "unix_socket_directories": f"'{root}'",
                "fsync": "on", **(settings or {})}
        with open(data / "postgresql.conf", "a") as fh:
            fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start")
        try:
            run(str(bindir / "createdb"), "-h", server.host, "-p", str(port), "-U", server.user, server.db)
            yield server
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
