"""A local S3 server (moto, test-only) on 127.0.0.1 with one bucket, for the object-store lake tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow.fs as pafs
import pytest

#: Credentials moto accepts; set for the server's lifetime (and inherited by CLI subprocesses).
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextmanager
def s3_bucket(bucket: str = "trading-lake", prefix: str = "prod") -> Iterator[str]:
    """Start moto's S3 server on a free port, create ``bucket``, yield the lake URL of ``prefix``.

    The URL carries the ``pyarrow.fs`` options (``endpoint_override``, ``scheme=http``, ``region``);
    skips the test when moto's server is not installed (``pip install -e '.[test]'``). Moto keeps
    one S3 state per process, shared by its servers: each test module uses its own bucket.
    """
    moto_server = pytest.importorskip("moto.server", reason="pip install 'moto[server]' (test extra)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    mp = pytest.MonkeyPatch()
    for key, value in AWS_ENV.items():
        mp.setenv(key, value)
    url = f"s3://{bucket}/{prefix}?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    try:
        pafs.FileSystem.from_uri(url + "&allow_bucket_creation=true")[0].create_dir(bucket)
        yield url
    finally:
        mp.undo()
        server.stop()
