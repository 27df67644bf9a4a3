"""A clip's parts hashed in the copier's one read of the camera, and sent with those
digests: the upload does not hash the staged copy again, the store checks each part.

Real parts: files on disk read through the copier's own pipeline (hashing.copy_hashing),
and a real SeaweedFS on loopback, which refuses a part whose bytes do not match its
checksum. The probe that decides whether a store is trusted with that check is also
run against a store that ignores checksums (test_s3_lying_store.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from bwc_dock.errors import IntegrityError
from bwc_dock.hashing import PartHasher, copy_hashing
from bwc_dock.part_digests import KeptPartDigests
from bwc_dock.storage.base import PartDigests
from bwc_dock.storage.s3 import MIB, S3Backend
from tests.dock import flip_byte

if TYPE_CHECKING:
    from tests.seaweedfs import SeaweedServer

# The fixtures seaweedfs and s3_bucket.
pytest_plugins = ("tests.seaweedfs",)

LARGE = 4 * 5 * MIB + 123_457  # five parts of 5 MiB (storage_config()), the last one short


def read_off_camera(path: Path, part_size: int | None) -> tuple[str, PartHasher | None]:
    """What the copier takes in its one read of a camera file: the SHA-256 of the whole
    and, with a part size, each part's (here with 1 MiB chunks, as the copier reads)."""
    parts = None if part_size is None else PartHasher(part_size)
    source = os.open(path, os.O_RDONLY)
    try:
        sha256, _size = copy_hashing(source, None, parts=parts)
    finally:
        os.close(source)
    return sha256, parts


@pytest.mark.parametrize("size", [0, 1, 3 * MIB, 3 * MIB + 1, 10 * MIB - 7])
def test_each_part_hashed_in_the_read_is_the_sha256_of_that_part(
        tmp_path: Path, size: int) -> None:
    """Parts of 3 MiB fed 1 MiB chunks: the digest of each part (the last one short, none
    for an empty file) equals hashlib's over that slice, and the whole's is unchanged."""
    data = os.urandom(size)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    sha256, parts = read_off_camera(path, 3 * MIB)
    assert parts is not None
    expected = [hashlib.sha256(data[at:at + 3 * MIB]).digest()
                for at in range(0, size, 3 * MIB)]
    assert list(parts.digests()) == expected
    assert sha256 == hashlib.sha256(data).hexdigest()


def test_kept_digests_are_given_only_for_the_read_that_gave_the_clips_sha256() -> None:
    """Digests are kept per clip, given back only with the SHA-256 of their own read, and
    the oldest go once more clips than the limit are kept."""
    kept = KeptPartDigests(lambda size: 4 if size >= 8 else None, limit=2)
    assert kept.hasher_for(7) is None
    for clip_id, body in ((1, b"12345678"), (2, b"abcdefgh"), (3, b"ABCDEFGH")):
        hasher = kept.hasher_for(len(body))
        assert hasher is not None
        hasher.update(memoryview(body))
        kept.keep(clip_id, hashlib.sha256(body).hexdigest(), hasher)
    assert kept.get(1, hashlib.sha256(b"12345678").hexdigest()) is None  # past the limit
    assert kept.get(2, hashlib.sha256(b"other").hexdigest()) is None
    given = kept.get(2, hashlib.sha256(b"abcdefgh").hexdigest())
    assert given is not None
    assert given.digests == (hashlib.sha256(b"abcd").digest(), hashlib.sha256(b"efgh").digest())
    kept.forget(2)
    assert kept.get(2, hashlib.sha256(b"abcdefgh").hexdigest()) is None


@pytest.fixture
def store(seaweedfs: SeaweedServer, s3_bucket: str,
          monkeypatch: pytest.MonkeyPatch) -> S3Backend:
    """A dock's backend (with a dock id, so it probes what the store enforces)."""
    for name, value in seaweedfs.environment().items():
        monkeypatch.setenv(name, value)
    return S3Backend.from_config(seaweedfs.storage_config(s3_bucket, prefix="bwc"), "DOCK-7")


def staged_clip(directory: Path, store: S3Backend) -> tuple[Path, PartDigests]:
    """A clip of LARGE random bytes and the digests its read off the camera gave."""
    path = directory / "clip.mp4"
    path.write_bytes(os.urandom(LARGE))
    part_size = store.part_size_for(LARGE)
    assert part_size == 5 * MIB
    sha256, parts = read_off_camera(path, part_size)
    assert parts is not None
    return path, PartDigests(sha256, part_size, parts.digests())


def sent_bodies(store: S3Backend, bucket: str) -> list[tuple[str, str]]:
    """(method, key) of every request the store's client sends from now on (an observer
    on the real client)."""
    sent: list[tuple[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append((request.method, urlsplit(request.url).path.removeprefix(f"/{bucket}/")))

    store._s3().meta.events.register("before-send.s3", record)
    return sent


@pytest.mark.realparts
def test_parts_go_with_the_digests_of_the_camera_read_and_the_clip_is_proven(
        store: S3Backend, seaweedfs: SeaweedServer, s3_bucket: str, tmp_path: Path) -> None:
    """Once the store refused a canary whose checksum was another body's, a clip's parts
    are sent with the digests taken in its read off the camera, and it is proven by the
    store's composite of them: stored exactly, not hashed again here."""
    clip, digests = staged_clip(tmp_path, store)
    sent = sent_bodies(store, s3_bucket)
    with capture_logs() as logs:
        stored = store.put_file("cam1/clip.mp4", clip, digests.sha256, LARGE, {},
                                part_digests=digests)
    assert (stored.size, stored.sha256) == (LARGE, digests.sha256)
    canaries = [key for method, key in sent if method == "PUT" and key.endswith(".bad-checksum")]
    assert len(canaries) == 1 and canaries[0].startswith("bwc/_probe/DOCK-7/")
    assert seaweedfs.object_keys(s3_bucket, "bwc/_probe/") == []  # refused: nothing kept
    events = {entry["event"]: entry for entry in logs}
    assert "s3.checksums_enforced" in events
    assert events["s3.put.verified"]["hashed_here"] is False
    body = seaweedfs.client().get_object(Bucket=s3_bucket, Key="bwc/cam1/clip.mp4")["Body"]
    assert hashlib.sha256(body.read()).hexdigest() == digests.sha256


@pytest.mark.realparts
def test_a_staged_copy_unlike_the_camera_read_is_refused_and_nothing_is_stored(
        store: S3Backend, seaweedfs: SeaweedServer, s3_bucket: str, tmp_path: Path) -> None:
    """One byte of the staged copy's third part changed after the read (a failing disk):
    the store refuses that part, the upload is aborted with an IntegrityError naming it,
    and the key stays free for a good copy."""
    clip, digests = staged_clip(tmp_path, store)
    flip_byte(clip, 2 * 5 * MIB + 1000)
    with pytest.raises(IntegrityError, match="part 3 of the staged copy differs"):
        store.put_file("cam1/clip.mp4", clip, digests.sha256, LARGE, {}, part_digests=digests)
    assert store.head("cam1/clip.mp4") is None
    assert seaweedfs.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


@pytest.mark.realparts
def test_digests_of_other_parts_are_not_used_and_the_clip_is_hashed_here(
        store: S3Backend, seaweedfs: SeaweedServer, s3_bucket: str, tmp_path: Path) -> None:
    """Digests taken for another part size (the configuration changed between copy and
    upload) are not used: the clip is hashed as it is sent, and stored exactly."""
    clip, digests = staged_clip(tmp_path, store)
    _sha256, other = read_off_camera(clip, 3 * MIB)
    assert other is not None
    with capture_logs() as logs:
        stored = store.put_file("cam1/clip.mp4", clip, digests.sha256, LARGE, {},
                                part_digests=PartDigests(digests.sha256, 3 * MIB,
                                                         other.digests()))
    assert stored.sha256 == digests.sha256
    [verified] = [entry for entry in logs if entry["event"] == "s3.put.verified"]
    assert verified["hashed_here"] is True
    assert not any(entry["event"] == "s3.checksums_enforced" for entry in logs)  # not asked
