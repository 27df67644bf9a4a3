"""Stores that break S3's promises: what the dock believes of them.

A store that says yes and keeps nothing: its word on a clip's size is no proof. A store
that keeps what it is sent but ignores ``If-None-Match: *``: the HEAD before each write
stays the guard against overwriting someone else's object.

The store here is a fake S3 endpoint on loopback, on purpose: no real store lies, and
the point is what the dock believes. It accepts every PUT, keeps no byte, and answers a
HEAD with the size it was sent and no checksum; a GET finds nothing. The real store's
path (SeaweedFS) is covered by test_s3_backend.py and test_s3_pipeline.py.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from bwc_dock.config import StorageConfig
from bwc_dock.errors import StorageConflict
from bwc_dock.storage.s3 import S3Backend
from tests.dock import Dock, make_camera

NO_SUCH_KEY = b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"
EMPTY_LISTING = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
                 b"<Name>evidence</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated>"
                 b"</ListBucketResult>")


class _ForgetfulStore(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # botocore sends Expect: 100-continue with bodies
    sizes: dict[str, int]  # what each PUT said it sent; the bytes are dropped

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows what the dock logged."""

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               length: int | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_PUT(self) -> None:
        size = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(size)
        self.sizes[urlsplit(self.path).path] = size
        self._reply(200, headers={"ETag": '"0123456789abcdef0123456789abcdef"'})

    def do_HEAD(self) -> None:
        size = self.sizes.get(urlsplit(self.path).path)
        if size is None:
            self._reply(404)
            return
        self._reply(200, headers={"ETag": '"0123456789abcdef0123456789abcdef"',
                                  "Last-Modified": "Sat, 05 Dec 2026 10:00:00 GMT"},
                    length=size)

    def do_GET(self) -> None:
        if "list-type" in (urlsplit(self.path).query or "") or urlsplit(self.path).path.count(
                "/") == 1:
            self._reply(200, EMPTY_LISTING, {"Content-Type": "application/xml"})
            return
        self._reply(404, NO_SUCH_KEY, {"Content-Type": "application/xml"})

    def do_DELETE(self) -> None:
        self._reply(204)


class _OverwritingStore(_ForgetfulStore):
    """Keeps every byte it is sent and reports its SHA-256, but ignores If-None-Match:
    a second PUT to a key replaces the first."""

    objects: dict[str, bytes]
    methods: list[tuple[str, str]]  # (method, path) of every request, in order
    endpoint: str  # the store's URL

    def _key(self) -> str:
        path = urlsplit(self.path).path
        self.methods.append((self.command, path))
        return path

    def do_PUT(self) -> None:
        self.objects[self._key()] = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._reply(200, headers={"ETag": '"0123456789abcdef0123456789abcdef"'})

    def do_HEAD(self) -> None:
        body = self.objects.get(self._key())
        if body is None:
            self._reply(404)
            return
        checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
        self._reply(200, headers={"ETag": '"0123456789abcdef0123456789abcdef"',
                                  "Last-Modified": "Sat, 05 Dec 2026 10:00:00 GMT",
                                  "x-amz-checksum-sha256": checksum}, length=len(body))

    def do_GET(self) -> None:
        body = self.objects.get(self._key())
        if body is None:
            super().do_GET()
            return
        self._reply(200, body)

    def do_DELETE(self) -> None:
        self.objects.pop(self._key(), None)
        self._reply(204)


@pytest.fixture
def overwriting_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_OverwritingStore]]:
    """A store on loopback that keeps bytes but ignores If-None-Match (its class, whose
    ``objects`` and ``methods`` the test reads; ``endpoint`` is its URL)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    handler: type[_OverwritingStore] = type(
        "Handler", (_OverwritingStore,), {"objects": {}, "methods": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
    server.server_close()


def test_a_store_that_ignores_if_none_match_keeps_the_head_before_each_write(
        overwriting_store: type[_OverwritingStore], tmp_path: Path) -> None:
    """The dock's canary is overwritten despite If-None-Match, so each clip starts with a
    HEAD: someone else's object under a clip's key is never overwritten."""
    config = StorageConfig(backend="s3", endpoint_url=overwriting_store.endpoint,
                           allow_plaintext=True, bucket="evidence", addressing_style="path")
    store = S3Backend.from_config(config, "DOCK-7")
    overwriting_store.objects["/evidence/cam1/theirs.mp4"] = b"someone else's object"
    ours = tmp_path / "clip.mp4"
    ours.write_bytes(b"our evidence")
    sha256 = hashlib.sha256(b"our evidence").hexdigest()
    assert store.put_file("cam1/ours.mp4", ours, sha256, 12, {}).sha256 == sha256
    with pytest.raises(StorageConflict):
        store.put_file("cam1/theirs.mp4", ours, sha256, 12, {})
    assert overwriting_store.objects["/evidence/cam1/theirs.mp4"] == b"someone else's object"
    methods = [(method, "<canary>" if "/_probe/DOCK-7/" in path else path)
               for method, path in overwriting_store.methods]
    assert methods == [
        ("PUT", "<canary>"), ("PUT", "<canary>"), ("DELETE", "<canary>"),
        ("HEAD", "/evidence/cam1/ours.mp4"), ("PUT", "/evidence/cam1/ours.mp4"),
        ("HEAD", "/evidence/cam1/ours.mp4"),
        ("HEAD", "/evidence/cam1/theirs.mp4"),
    ]


def test_a_store_that_keeps_a_body_unlike_its_checksum_gets_clips_hashed_by_the_dock(
        overwriting_store: type[_OverwritingStore]) -> None:
    """The store kept the dock's canary sent with another body's checksum: it does not
    check checksums, so no clip is sent with the part digests of its camera read (the
    copier is no longer asked to take them) and the canary is removed."""
    config = StorageConfig(backend="s3", endpoint_url=overwriting_store.endpoint,
                           allow_plaintext=True, bucket="evidence", addressing_style="path")
    store = S3Backend.from_config(config, "DOCK-7")
    big = 100 * 1024 * 1024
    assert store.part_size_for(big) == 16 * 1024 * 1024  # not asked yet
    with capture_logs() as logs:
        assert store._enforces_checksums() is False
    assert store.part_size_for(big) is None
    assert [entry["event"] for entry in logs] == ["s3.checksums_not_enforced"]
    canaries = [(method, path.endswith(".bad-checksum"))
                for method, path in overwriting_store.methods if "/_probe/DOCK-7/" in path]
    assert canaries == [("PUT", True), ("DELETE", True)]
    assert overwriting_store.objects == {}


@pytest.fixture
def forgetful_store() -> Iterator[tuple[str, dict[str, int]]]:
    """(endpoint, the sizes it was sent) of a store on loopback that keeps nothing."""
    sizes: dict[str, int] = {}
    handler = type("Handler", (_ForgetfulStore,), {"sizes": sizes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", sizes
    server.shutdown()
    server.server_close()


def _s3_storage(endpoint: str) -> dict[str, object]:
    """The lying store's settings: plain HTTP on loopback, and retries after 0.2 s up to
    1 s (product 2 s up to 600 s) so the refusals a test provokes come within it."""
    return {"backend": "s3", "endpoint_url": endpoint, "bucket": "evidence",
            "addressing_style": "path", "allow_plaintext": True,
            "retry_initial_seconds": 0.2, "retry_max_seconds": 1.0}


def test_a_store_that_keeps_nothing_never_gets_a_clip_uploaded(
    dock: Dock, forgetful_store: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    """Every PUT accepted and every HEAD answered with the right size, but nothing kept:
    no clip becomes uploaded (or cleared), and ingest says so with exit 1."""
    endpoint, sizes = forgetful_store
    dock.write_config(storage=_s3_storage(endpoint))
    dock.extra_environment.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    camera = tmp_path / "sdcard"
    make_camera(camera, [2000], sidecars=False)
    finished = dock.cli("ingest", str(camera), "--camera-serial", "LIAR1", "--wait",
                        "--timeout", "20", check=False)
    assert finished.returncode == 1, finished.stderr[-2000:]
    assert 2000 in sizes.values()  # the clip was sent: only the proof was missing
    states = {clip["state"] for clip in dock.clips()}
    assert states <= {"staged", "quarantined"}, states


def test_plaintext_endpoint_is_refused_unless_allowed(dock: Dock) -> None:
    """An http:// endpoint is a configuration error naming the key, unless allowed."""
    storage = _s3_storage("http://127.0.0.1:9")
    del storage["allow_plaintext"]
    dock.write_config(storage=storage)
    refused = dock.cli("config", "check", check=False)
    assert refused.returncode == 2
    assert "storage.endpoint_url" in refused.stderr
    assert "allow_plaintext" in refused.stderr
    dock.write_config(storage=_s3_storage("http://127.0.0.1:9"))
    assert dock.cli("config", "check", check=False).returncode == 0
