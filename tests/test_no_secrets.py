"""Promise 23: no secret in the repository. Every tracked file is scanned with detect-secrets (its
default plugins: private keys, AWS and other provider keys, passwords in URLs, ``password:``
literals, high-entropy strings), and ``.env`` is ignored by git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from detect_secrets import SecretsCollection
from detect_secrets.settings import default_settings

ROOT = Path(__file__).resolve().parents[1]

#: Dummy credentials the tests need on purpose (to show they are masked or read from the
#: environment), by detect-secrets' hash of the value.
ALLOWED = {  # hash: (file, why the value is no secret)
    "1a91d62f7ca67399625a4368a6ab5d4a3baa6073": ("tests/test_alerting.py", "dummy password of the masking tests"),  # pragma: allowlist secret
    "0863b135e68a870997f25a0de9ea61867a2d65d7": ("tests/test_deploy_configs.py", "the name DAGSTER_PG_PASSWORD"),  # pragma: allowlist secret
    "fc3eda88f46ea7d8856de1895e5a3af1ca4c5eb4": ("tests/test_deploy_configs.py", "dummy password, URL quoting"),  # pragma: allowlist secret
    "0fe086e3077cc8471a31a267213ac16b1e2c1190": ("tests/test_deploy_configs.py", "the URL with that password"),  # pragma: allowlist secret
}  # fmt: skip


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    if (
        shutil.which("git") is None
        or _git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true"
    ):
        pytest.skip("not a git checkout")
    return [
        f
        for f in _git("ls-files", "-z").stdout.split("\0")
        if f and (ROOT / f).is_file()
    ]


def _findings(paths: list[str], root: Path) -> list[tuple[str, str, int, str]]:
    collection = SecretsCollection(root=str(root))
    with default_settings():
        collection.scan_files(*paths)
    return [
        (name, item["type"], item["line_number"], item["hashed_secret"])
        for name, items in collection.json().items()
        for item in items
    ]


def test_no_tracked_file_holds_a_secret(tracked):
    assert len(tracked) > 100 and "pipeline/config.py" in tracked
    found = [f for f in _findings(tracked, ROOT) if f[3] not in ALLOWED]
    assert found == [], "secrets in tracked files (file, kind, line, hash): " + repr(
        found
    )


def test_the_scanner_finds_each_kind_of_secret_we_guard_against(tmp_path):
    # built at run time, so that this file itself holds none of them
    samples = {
        "key.pem": "-----BEGIN RSA "
        + "PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n",
        "aws.py": 'AWS_ACCESS_KEY_ID = "AKIA' + 'Z7Q4XK2M9D3L8F5N"\n',
        "db.py": 'URL = "postgresql://trader:'
        + 'n0tMyRealPw4u@db.internal:5432/dagster"\n',
        "instance.yaml": "storage:\n  postgres:\n    password: " + "Sup3rS3cretValue\n",
    }
    for name, text in samples.items():
        (tmp_path / name).write_text(text)
    kinds = {name: kind for name, kind, _, _ in _findings(list(samples), tmp_path)}
    assert kinds == {
        "key.pem": "Private Key",
        "aws.py": "AWS Access Key",
        "db.py": "Basic Auth Credentials",
        "instance.yaml": "Secret Keyword",
    }


def test_env_files_are_ignored_by_git(tracked):
    assert _git("check-ignore", "-q", ".env").returncode == 0
    assert ".env" not in tracked
