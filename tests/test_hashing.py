"""copy_hashing and hash_file_from_disk on real files: exact bytes, exact hashes."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from pathlib import Path

import pytest

from bwc_dock.errors import SourceGone
from bwc_dock.hashing import CHUNK_SIZE, copy_hashing, copy_unhashed, hash_file_from_disk

# An aligned chunk takes the O_DIRECT path where the filesystem allows it (ext4, xfs);
# an odd one forces buffered writes everywhere.
CHUNKS = [64 * 1024, 1000]


class CameraReadError(Exception):
    """Stands for the error class a caller asks read failures to become."""


def sizes_around(chunk: int) -> list[int]:
    return [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 7]


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def copy_file(source: Path, destination: Path, chunk: int) -> tuple[str, int]:
    source_fd = os.open(source, os.O_RDONLY)
    destination_fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        result = copy_hashing(source_fd, destination_fd, chunk_size=chunk)
        os.fsync(destination_fd)
        assert not fcntl.fcntl(destination_fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0)
        return result
    finally:
        os.close(source_fd)
        os.close(destination_fd)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_copy_equals_hashlib_around_chunk_boundaries(tmp_path: Path, chunk: int) -> None:
    """The copy holds the input's bytes and the returned hash is hashlib's, at any size."""
    for size in sizes_around(chunk):
        source, destination = tmp_path / f"in-{size}", tmp_path / f"out-{size}"
        data = write_random(source, size)
        sha256, copied = copy_file(source, destination, chunk)
        assert copied == size
        assert sha256 == hashlib.sha256(data).hexdigest()
        assert destination.read_bytes() == data


@pytest.mark.parametrize("chunk", CHUNKS)
def test_hash_from_disk_equals_hashlib(tmp_path: Path, chunk: int) -> None:
    """Re-hashing a stored file gives hashlib's digest, at any size."""
    for size in sizes_around(chunk):
        path = tmp_path / f"file-{size}"
        data = write_random(path, size)
        assert hash_file_from_disk(path, chunk_size=chunk) == hashlib.sha256(data).hexdigest()


def test_hash_from_disk_sees_a_change_made_behind_its_back(tmp_path: Path) -> None:
    """A byte changed on disk after a copy changes the re-read hash."""
    source, destination = tmp_path / "in", tmp_path / "out"
    data = write_random(source, 3 * 65536 + 7)
    sha256, _size = copy_file(source, destination, 65536)
    with destination.open("r+b") as stored:
        stored.seek(70000)
        stored.write(bytes([data[70000] ^ 0xFF]))
    assert hash_file_from_disk(destination) != sha256


def test_copy_from_a_pipe(tmp_path: Path) -> None:
    """A source without a size that returns short reads is copied whole."""
    data = os.urandom(300_001)
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            for offset in range(0, len(data), 7777):
                pipe.write(data[offset : offset + 7777])
                pipe.flush()

    feeder = threading.Thread(target=feed)
    feeder.start()
    destination = tmp_path / "out"
    destination_fd = os.open(destination, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        sha256, copied = copy_hashing(read_end, destination_fd, chunk_size=65536)
    finally:
        os.close(destination_fd)
        os.close(read_end)
        feeder.join()
    assert (sha256, copied) == (hashlib.sha256(data).hexdigest(), len(data))
    assert destination.read_bytes() == data


def test_cancel_raises_source_gone(tmp_path: Path) -> None:
    """A set cancel event (camera undocked) stops the copy with SourceGone."""
    source = tmp_path / "in"
    write_random(source, 5 * 65536)
    cancel = threading.Event()
    cancel.set()
    source_fd = os.open(source, os.O_RDONLY)
    destination_fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(SourceGone):
            copy_hashing(source_fd, destination_fd, cancel, chunk_size=65536)
    finally:
        os.close(source_fd)
        os.close(destination_fd)


def test_read_error_becomes_the_given_class(tmp_path: Path) -> None:
    """A read the kernel refuses (EBADF: a write-only descriptor) raises read_error."""
    source = tmp_path / "in"
    write_random(source, 65536)
    write_only_fd = os.open(source, os.O_WRONLY)
    try:
        with pytest.raises(CameraReadError) as raised:
            copy_hashing(write_only_fd, None, read_error=CameraReadError)
    finally:
        os.close(write_only_fd)
    assert isinstance(raised.value.__cause__, OSError)
    assert raised.value.__cause__.errno == errno.EBADF


def test_read_error_defaults_to_source_gone(tmp_path: Path) -> None:
    """Without a read_error class, a failed read is SourceGone (the camera went away)."""
    source = tmp_path / "in"
    write_random(source, 100)
    write_only_fd = os.open(source, os.O_WRONLY)
    try:
        with pytest.raises(SourceGone):
            copy_hashing(write_only_fd, None)
    finally:
        os.close(write_only_fd)


def test_pipeline_buffers_kept_between_copies_carry_nothing_over(tmp_path: Path) -> None:
    """Full-size buffers are reused: a shorter file copied after a longer one (and after
    a copy that failed midway) gets exactly its own bytes and hash."""
    chunk = CHUNK_SIZE
    longer = write_random(tmp_path / "longer", 5 * chunk + 4096)
    copy_file(tmp_path / "longer", tmp_path / "longer.copy", chunk)
    failing = os.open(tmp_path / "longer", os.O_RDONLY)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SourceGone):
        copy_hashing(failing, None, cancel, chunk_size=chunk)
    os.close(failing)
    shorter = write_random(tmp_path / "shorter", chunk + chunk // 2 + 5)
    sha256, size = copy_file(tmp_path / "shorter", tmp_path / "shorter.copy", chunk)
    assert (tmp_path / "shorter.copy").read_bytes() == shorter
    assert (sha256, size) == (hashlib.sha256(shorter).hexdigest(), len(shorter))
    assert (tmp_path / "longer.copy").read_bytes() == longer


@pytest.mark.parametrize("chunk", CHUNKS)
def test_copy_unhashed_copies_every_byte_exactly(tmp_path: Path, chunk: int) -> None:
    """copy_unhashed (the folder backend's send, read past the cache where it can) writes
    exactly the source's bytes, tails that are not block-aligned included."""
    for size in [*sizes_around(chunk), 3 * 1024 * 1024 + 5]:
        source, destination = tmp_path / f"in-{size}", tmp_path / f"out-{size}"
        data = write_random(source, size)
        source_fd = os.open(source, os.O_RDONLY)
        destination_fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            assert copy_unhashed(source_fd, destination_fd, chunk_size=chunk) == size
        finally:
            os.close(source_fd)
            os.close(destination_fd)
        assert destination.read_bytes() == data
