"""One specification of the storage port, run over every backend (borgstore's habit).

Each test below runs against the folder backend (a real directory, as a NAS mount is)
and against the S3 backend on a real SeaweedFS on loopback. What "create-only",
"idempotent", "verified put" and "nothing left behind" mean is written here once, so
the two backends cannot drift apart. What only one backend can show (a full disk for
the folder, multipart resume for S3) lives in its own test file or is marked here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bwc_dock.errors import (
    IntegrityError,
    PermanentStorageError,
    RefusalKind,
    StorageConflict,
    TransientStorageError,
)
from bwc_dock.storage.base import StorageBackend
from bwc_dock.storage.filesystem import FileBackend
from bwc_dock.storage.s3 import MIB, S3Backend
from tests.realparts import need_command, need_root
from tests.seaweedfs import free_ports

if TYPE_CHECKING:
    from tests.seaweedfs import SeaweedServer

SMALL = 300 * 1024  # one write on every backend
LARGE = 4 * 5 * MIB + 123_457  # a multipart upload on S3 (5 MiB threshold and parts)
KEY = "cam1/2026/11/24/1_clip.mp4"


@dataclass
class Store:
    """A backend under test and what the test needs to see around it."""

    backend: StorageBackend
    keys: Callable[[], list[str]]  # every key stored (listing), sorted
    leftovers: Callable[[], list[str]]  # temporaries or unfinished uploads left behind
    version: Callable[[str], object]  # changes whenever the object under a key is rewritten
    # another party stores bytes under a key, claiming a SHA-256 where the store keeps claims
    write_behind: Callable[[str, bytes, str | None], None]
    unreachable: Callable[[], StorageBackend]  # the same backend with its store gone
    # an interrupted write under a key: a temporary file, or an unfinished upload
    leave_partial: Callable[[str], None]


def _folder_store(root: Path) -> Store:
    nas = root / "nas"
    nas.mkdir()

    def keys() -> list[str]:
        return sorted(str(path.relative_to(nas)) for path in nas.rglob("*")
                      if path.is_file() and not path.name.endswith(".part"))

    def version(key: str) -> object:
        status = (nas / key).stat()
        return (status.st_ino, status.st_mtime_ns)

    def write_behind(key: str, data: bytes, _claimed_sha256: str | None) -> None:
        (nas / key).parent.mkdir(parents=True, exist_ok=True)  # a folder keeps no claims
        (nas / key).write_bytes(data)

    def leave_partial(key: str) -> None:
        (nas / key).parent.mkdir(parents=True, exist_ok=True)
        (nas / key).with_name((nas / key).name + ".0123abcd.dock-b.part").write_bytes(b"half")

    return Store(
        backend=FileBackend(nas, "dock-a"),
        keys=keys,
        leftovers=lambda: sorted(path.name for path in nas.rglob("*.part")),
        version=version,
        write_behind=write_behind,
        unreachable=lambda: FileBackend(root / "not-mounted", "dock-a"),
        leave_partial=leave_partial,
    )


def _s3_store(server: SeaweedServer, bucket: str) -> Store:
    client = server.client()

    def keys() -> list[str]:
        return server.object_keys(bucket)

    def leftovers() -> list[str]:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return sorted(str(upload["Key"]) for upload in uploads)

    def version(key: str) -> object:
        head = client.head_object(Bucket=bucket, Key=key)
        return (head["ETag"], head["LastModified"])

    def write_behind(key: str, data: bytes, claimed_sha256: str | None) -> None:
        claim = {"sha256": claimed_sha256} if claimed_sha256 else {}
        client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=claim)

    def unreachable() -> StorageBackend:
        [closed_port] = free_ports(1)  # nothing listens there once free_ports returns
        config = server.storage_config(bucket, endpoint_url=f"http://127.0.0.1:{closed_port}")
        return S3Backend.from_config(config)

    def leave_partial(key: str) -> None:
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                           Body=b"half")

    return Store(
        # with a dock id, as the daemon opens it: the conditional-write probe runs
        backend=S3Backend.from_config(server.storage_config(bucket), "DOCK-7"),
        keys=keys,
        leftovers=leftovers,
        version=version,
        write_behind=write_behind,
        unreachable=unreachable,
        leave_partial=leave_partial,
    )


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.realparts)])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """Each backend in turn, empty."""
    if request.param == "folder":
        made = _folder_store(tmp_path)
    else:
        server: SeaweedServer = request.getfixturevalue("seaweedfs")
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        made = _s3_store(server, server.create_bucket())
    yield made
    made.backend.close()


def make_clip(directory: Path, size: int, name: str = "clip.mp4") -> tuple[Path, str]:
    """A file of random bytes and its SHA-256."""
    data = os.urandom(size)
    path = directory / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, SMALL, LARGE], ids=["empty", "small", "large"])
def test_put_file_is_confirmed_by_the_store_and_reads_back(
    store: Store, tmp_path: Path, size: int
) -> None:
    """A stored file's size and SHA-256 come back from put, head and a read of its bytes."""
    clip, sha256 = make_clip(tmp_path, size)
    sent: list[int] = []
    stored = store.backend.put_file(KEY, clip, sha256, size, {"camera": "X1"},
                                    progress=sent.append)
    assert (stored.key, stored.size, stored.sha256) == (KEY, size, sha256)
    assert sum(sent) == size
    head = store.backend.head(KEY)
    assert head is not None
    assert head.size == size
    assert head.sha256 in (sha256, None)  # None: a folder keeps no hash beside the file
    assert store.backend.read_sha256(KEY) == sha256
    assert store.keys() == [KEY]
    assert store.leftovers() == []


def test_a_missing_object_is_none_everywhere(store: Store) -> None:
    """Nothing under a key: head, read_bytes and read_sha256 say None, not an error."""
    assert store.backend.head("cam1/nothing.mp4") is None
    assert store.backend.read_bytes("cam1/nothing.mp4.json") is None
    assert store.backend.read_sha256("cam1/nothing.mp4") is None


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["small", "large"])
def test_identical_put_file_again_is_a_verified_no_op(
    store: Store, tmp_path: Path, size: int
) -> None:
    """A retry that finds its own content stored succeeds and rewrites nothing."""
    clip, sha256 = make_clip(tmp_path, size)
    store.backend.put_file(KEY, clip, sha256, size, {})
    before = store.version(KEY)
    again = store.backend.put_file(KEY, clip, sha256, size, {})
    assert (again.size, again.sha256) == (size, sha256)
    assert store.version(KEY) == before
    assert store.keys() == [KEY]
    assert store.leftovers() == []


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["small", "large"])
def test_other_content_under_a_stored_key_is_a_conflict_never_an_overwrite(
    store: Store, tmp_path: Path, size: int
) -> None:
    """Create-only: a different object under the key is never overwritten."""
    first, first_sha = make_clip(tmp_path, size, "first.mp4")
    second, second_sha = make_clip(tmp_path, size, "second.mp4")
    store.backend.put_file("cam1/clip.mp4", first, first_sha, size, {})
    assert store.backend.put_file("cam1/clip.mp4", first, first_sha, size, {}).sha256 == first_sha
    with pytest.raises(StorageConflict, match="nothing was overwritten"):
        store.backend.put_file("cam1/clip.mp4", second, second_sha, size, {})
    assert store.backend.read_sha256("cam1/clip.mp4") == first_sha
    assert store.leftovers() == []


def test_content_another_party_stored_under_the_key_is_a_conflict(
    store: Store, tmp_path: Path
) -> None:
    """An object written by someone else (another dock, a person) is never replaced."""
    theirs = b"not the evidence"
    store.write_behind(KEY, theirs, None)
    clip, sha256 = make_clip(tmp_path, SMALL)
    with pytest.raises(StorageConflict):
        store.backend.put_file(KEY, clip, sha256, SMALL, {})
    assert store.backend.read_sha256(KEY) == hashlib.sha256(theirs).hexdigest()
    assert store.leftovers() == []


def test_an_object_only_claiming_our_hash_is_not_taken_for_ours(
    store: Store, tmp_path: Path
) -> None:
    """Same size, our SHA-256 in its metadata, other bytes: a conflict, because an object
    counts as ours only on the store's own hash or a read of its bytes (docs/design.md)."""
    clip, sha256 = make_clip(tmp_path, SMALL)
    theirs = os.urandom(SMALL)
    store.write_behind(KEY, theirs, sha256)
    with pytest.raises(StorageConflict):
        store.backend.put_file(KEY, clip, sha256, SMALL, {})
    assert store.backend.read_sha256(KEY) == hashlib.sha256(theirs).hexdigest()


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["small", "large"])
def test_bytes_not_matching_the_ledger_hash_never_become_an_object(
    store: Store, tmp_path: Path, size: int
) -> None:
    """Verified put: a staged copy that does not hash to the ledger's SHA-256 is refused
    with IntegrityError and leaves no object, temporary file or upload behind."""
    clip, _ = make_clip(tmp_path, size)
    with pytest.raises(IntegrityError):
        store.backend.put_file("cam1/clip.mp4", clip, "0" * 64, size, {})
    assert store.backend.head("cam1/clip.mp4") is None
    assert store.keys() == []
    assert store.leftovers() == []


def test_documents_are_stored_create_only(store: Store) -> None:
    """put_bytes stores a manifest once; the same bytes again succeed, other bytes conflict."""
    manifest = json.dumps({"camera": "X1", "sha256": "ab" * 32}).encode()
    first = store.backend.put_bytes("cam1/clip.mp4.json", manifest, {})
    assert first.sha256 == hashlib.sha256(manifest).hexdigest()
    before = store.version("cam1/clip.mp4.json")
    assert store.backend.put_bytes("cam1/clip.mp4.json", manifest, {}).sha256 == first.sha256
    assert store.version("cam1/clip.mp4.json") == before
    with pytest.raises(StorageConflict):
        store.backend.put_bytes("cam1/clip.mp4.json", manifest + b" ", {})
    assert store.backend.read_sha256("cam1/clip.mp4.json") == first.sha256
    assert store.backend.read_bytes("cam1/clip.mp4.json") == manifest
    assert store.leftovers() == []


def test_a_document_put_with_replace_is_rewritten(store: Store) -> None:
    """replace=True (a manifest or SHA256SUMS rewritten on purpose) stores the new bytes."""
    store.backend.put_bytes("cam1/SHA256SUMS.1", b"one\n", {"dock": "a"}, replace=True)
    stored = store.backend.put_bytes("cam1/SHA256SUMS.1", b"one\ntwo\n", {"dock": "a"},
                                     replace=True)
    assert stored.sha256 == hashlib.sha256(b"one\ntwo\n").hexdigest()
    assert store.backend.read_bytes("cam1/SHA256SUMS.1") == b"one\ntwo\n"
    assert store.keys() == ["cam1/SHA256SUMS.1"]
    assert store.leftovers() == []


# Keys whose sorted order differs from a folder-by-folder walk: '-' < '.' < '/'.
LISTED = ["a-b/c.mp4", "a.b", "a/b-c.json", "a/b.json", "a/b/c/d.json", "cam1/2026/x.mp4"]


def test_list_keys_gives_every_key_under_a_prefix_sorted(store: Store) -> None:
    """list_keys yields the stored keys under a string prefix in sorted (byte) order,
    and no temporary file or unfinished upload."""
    for key in reversed(LISTED):
        store.backend.put_bytes(key, key.encode(), {})
    store.leave_partial("a/b/unfinished.mp4")
    assert list(store.backend.list_keys("")) == LISTED
    assert list(store.backend.list_keys("a")) == LISTED[:5]
    assert list(store.backend.list_keys("a/")) == LISTED[2:5]
    assert list(store.backend.list_keys("a/b")) == LISTED[2:5]
    assert list(store.backend.list_keys("a/b.")) == ["a/b.json"]
    assert list(store.backend.list_keys("a/b/")) == ["a/b/c/d.json"]
    assert list(store.backend.list_keys("cam1/2026/")) == ["cam1/2026/x.mp4"]
    assert list(store.backend.list_keys("cam2/")) == []
    assert list(store.backend.list_keys("a/b.json/")) == []


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["small", "large"])
def test_copy_object_copies_create_only_and_hashes_the_copy(
    store: Store, tmp_path: Path, size: int
) -> None:
    """copy_object stores the same bytes under the new key and reports their SHA-256;
    the same copy again is a no-op, and the source is left as it was."""
    clip, sha256 = make_clip(tmp_path, size)
    store.backend.put_file(KEY, clip, sha256, size, {"camera": "X1"})
    copied = store.backend.copy_object(KEY, "conflicts/" + KEY)
    assert (copied.key, copied.size, copied.sha256) == ("conflicts/" + KEY, size, sha256)
    assert store.backend.read_sha256("conflicts/" + KEY) == sha256
    before = store.version("conflicts/" + KEY)
    again = store.backend.copy_object(KEY, "conflicts/" + KEY)
    assert (again.size, again.sha256) == (size, sha256)
    assert store.version("conflicts/" + KEY) == before
    assert store.keys() == sorted([KEY, "conflicts/" + KEY])
    assert store.leftovers() == []


def test_copy_object_reports_the_bytes_not_a_metadata_claim(store: Store) -> None:
    """An object claiming another SHA-256 in its metadata is copied with the hash of
    its real bytes."""
    theirs = os.urandom(SMALL)
    store.write_behind(KEY, theirs, "ab" * 32)
    copied = store.backend.copy_object(KEY, "conflicts/planted.mp4")
    assert copied.sha256 == hashlib.sha256(theirs).hexdigest()
    assert copied.size == SMALL


def test_copy_object_never_overwrites_other_content(store: Store) -> None:
    """A copy onto a key that holds other bytes is a conflict; both objects stay."""
    store.backend.put_bytes("cam1/a.json", b"first", {})
    store.backend.put_bytes("cam1/b.json", b"second", {})
    with pytest.raises(StorageConflict):
        store.backend.copy_object("cam1/a.json", "cam1/b.json")
    assert store.backend.read_bytes("cam1/b.json") == b"second"
    assert store.backend.read_bytes("cam1/a.json") == b"first"
    assert store.leftovers() == []


def test_copy_object_of_a_missing_key_says_so(store: Store) -> None:
    """Copying what is not stored raises a refusal of kind MISSING_OBJECT, naming the
    key, and creates nothing."""
    with pytest.raises(PermanentStorageError, match=r"cam1/nothing\.mp4") as missing:
        store.backend.copy_object("cam1/nothing.mp4", "conflicts/nothing.mp4")
    assert missing.value.kind is RefusalKind.MISSING_OBJECT
    assert store.keys() == []


def test_delete_is_idempotent(store: Store, tmp_path: Path) -> None:
    """Deleting removes the object; deleting what is gone, or never was, succeeds."""
    clip, sha256 = make_clip(tmp_path, SMALL)
    store.backend.put_file(KEY, clip, sha256, SMALL, {})
    store.backend.delete(KEY)
    assert store.backend.head(KEY) is None
    store.backend.delete(KEY)
    store.backend.delete("cam1/never-there.mp4")
    assert store.keys() == []


def test_a_reachable_store_passes_its_check_and_a_gone_one_is_transient(store: Store) -> None:
    """check_reachable is silent on a working store; a store that is not there is a
    TransientStorageError (it may come back), for the check and for a write."""
    store.backend.check_reachable()
    gone = store.unreachable()
    try:
        with pytest.raises(TransientStorageError):
            gone.check_reachable()
        with pytest.raises(TransientStorageError):
            gone.put_bytes("cam1/clip.mp4.json", b"{}", {})
    finally:
        gone.close()


def test_refusals_name_their_kind(tmp_path: Path) -> None:
    """A refusal the operator must fix carries its kind on the error, not only in words
    (the folder backend here; S3's kinds are checked in test_s3_backend.py)."""
    nas = tmp_path / "nas"
    nas.mkdir()
    backend = FileBackend(nas, "dock-a")
    with pytest.raises(PermanentStorageError) as unsafe:
        backend.put_bytes("cam1/../escape.json", b"{}", {})
    assert unsafe.value.kind is RefusalKind.INVALID_REQUEST


def test_folder_list_keys_enters_no_symlink(tmp_path: Path) -> None:
    """Folder backend only: a symlinked folder or file in the store is skipped (and
    logged), never entered or listed, even when it points inside the store."""
    nas = tmp_path / "nas"
    outside = tmp_path / "outside"
    (nas / "cam1").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"not central")
    (nas / "cam1" / "real.mp4").write_bytes(b"central")
    (nas / "cam2").symlink_to(outside)
    (nas / "cam1" / "linked.mp4").symlink_to(nas / "cam1" / "real.mp4")
    (nas / "cam3").symlink_to(nas / "cam1")
    backend = FileBackend(nas, "dock-a")
    assert list(backend.list_keys("")) == ["cam1/real.mp4"]
    assert list(backend.list_keys("cam2/")) == []
    assert list(backend.list_keys("cam3/")) == []


@pytest.fixture
def full_folder(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, to make writes fail for want of space."""
    need_root()
    need_command("mount")
    mount_point = tmp_path / "tiny-nas"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "bwc-test-nas",
                    str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.realparts
@pytest.mark.parametrize("room", [0, 64 * 1024], ids=["full", "almost-full"])
def test_folder_write_failing_for_space_leaves_no_part_behind(
    full_folder: Path, tmp_path: Path, room: int
) -> None:
    """Folder backend only (S3 cannot be filled here): a write that fails half-way (no
    space) raises, stores nothing, leaves no .part and no truncated object."""
    backend = FileBackend(full_folder, "dock-a")
    filler = full_folder / "filler"
    with filler.open("wb") as output:  # fill the folder up to ``room`` bytes from the end
        output.write(b"\0" * (1024 * 1024 - room))
    document = os.urandom(256 * 1024)
    clip, sha256 = make_clip(tmp_path, 256 * 1024)
    with pytest.raises(TransientStorageError):
        backend.put_bytes("cam1/clip.mp4.json", document, {})
    with pytest.raises(TransientStorageError):
        backend.put_file("cam1/clip.mp4", clip, sha256, 256 * 1024, {})
    assert sorted(path.name for path in full_folder.rglob("*") if path.is_file()) == ["filler"]


@pytest.mark.realparts
def test_s3_copy_above_the_single_copy_limit_is_a_multipart_copy(
    seaweedfs: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 only: an object above the single-copy limit (5 GiB on AWS, lowered here so a
    test can reach it) is copied by parts; the copy reads back with the source's hash
    and no unfinished upload is left."""
    for name, value in seaweedfs.environment().items():
        monkeypatch.setenv(name, value)
    bucket = seaweedfs.create_bucket()
    backend = S3Backend.from_config(seaweedfs.storage_config(bucket))
    backend.single_copy_limit = 5 * MIB
    try:
        clip, sha256 = make_clip(tmp_path, LARGE)
        backend.put_file(KEY, clip, sha256, LARGE, {})
        copied = backend.copy_object(KEY, "conflicts/" + KEY)
        assert (copied.size, copied.sha256) == (LARGE, sha256)
        client = seaweedfs.client()
        head = client.head_object(Bucket=bucket, Key="conflicts/" + KEY)
        assert "-" in head["ETag"]  # assembled from parts, not one CopyObject
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert backend.copy_object(KEY, "conflicts/" + KEY).sha256 == sha256
    finally:
        backend.close()
