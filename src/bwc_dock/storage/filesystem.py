"""The ``file`` backend: central storage is a mounted folder (NAS over SMB or NFS).

Writes are crash-safe (durable.py): a random ``KEY.RANDOM.DOCK.part`` beside the final
name, hashed while written and refused before it is named if the hash is not the
ledger's, fsynced, linked into place create-only (``link`` fails if the name exists),
and the folder is fsynced. Then the stored file is dropped from the page cache and
hashed again, so the confirmation comes from what the NAS holds, not from what this PC
sent. Content already under the key is a verified no-op when it hashes the same, and a
StorageConflict, never an overwrite, when it does not.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import structlog

from bwc_dock.config import Config
from bwc_dock.durable import PART_SUFFIX, write_all_hashing, write_bytes_durably, write_durably
from bwc_dock.errors import (
    IntegrityError,
    PermanentStorageError,
    RefusalKind,
    StorageConflict,
    TransientStorageError,
    is_transient,
)
from bwc_dock.hashing import copy_hashing, hash_file_from_disk
from bwc_dock.scanner import safe_name
from bwc_dock.storage.base import (
    MultipartJournal,
    ProgressCallback,
    StorageBackend,
    StoredObject,
)

log = structlog.get_logger(__name__)


class FileBackend(StorageBackend):
    name = "file"

    def __init__(self, root: Path, dock_tag: str, *, must_be_mountpoint: bool = False) -> None:
        self.root = root
        self.must_be_mountpoint = must_be_mountpoint
        # Several docks write into one NAS: a dock's temporary files carry its name, so
        # cleaning up after a crash never removes another dock's upload in progress.
        self.part_suffix = f".{dock_tag}{PART_SUFFIX}"

    @classmethod
    def from_config(cls, config: Config) -> FileBackend:
        assert config.storage.path is not None
        return cls(
            config.storage.path,
            safe_name(config.dock.id.encode()),
            must_be_mountpoint=config.storage.path_must_be_mountpoint,
        )

    def _path(self, key: str) -> Path:
        # Never write into an empty mount point: the NAS would be missing, not empty.
        self.check_reachable()
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise PermanentStorageError(
                f"unsafe storage key {key!r}", RefusalKind.INVALID_REQUEST
            )
        return self.root.joinpath(*parts)

    def put_file(
        self,
        key: str,
        source: Path,
        sha256: str,
        size: int,
        metadata: Mapping[str, str],
        journal: MultipartJournal | None = None,
        progress: ProgressCallback | None = None,
    ) -> StoredObject:
        target = self._path(key)
        if self._already_stored(target, key, sha256):
            return StoredObject(key, size, sha256)

        def fill(part_fd: int) -> str:
            written_sha256, _size = copy_hashing(
                source_fd, part_fd, progress=progress, read_error=OSError
            )
            if written_sha256 != sha256:  # refused before it ever has the final name
                raise IntegrityError(
                    f"{key}: the staged copy hashed to {written_sha256} while sending, "
                    f"ledger has {sha256}"
                )
            return written_sha256

        with _storage_errors(key):
            source_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                if not self._write_create_only(target, key, sha256, fill):
                    return StoredObject(key, size, sha256)
            finally:
                os.close(source_fd)
        return self._confirm(target, key, sha256)

    def put_bytes(
        self, key: str, data: bytes, metadata: Mapping[str, str], *, replace: bool = False
    ) -> StoredObject:
        target = self._path(key)
        sha256 = hashlib.sha256(data).hexdigest()
        if replace:
            with _storage_errors(key):
                target.parent.mkdir(parents=True, exist_ok=True)
                write_bytes_durably(target, data, suffix=self.part_suffix)
        elif self._already_stored(target, key, sha256):
            return StoredObject(key, len(data), sha256)
        else:
            with _storage_errors(key):
                self._write_create_only(target, key, sha256, lambda fd: write_all_hashing(fd, data))
        # a replaced document may be someone else's by now: only a create-only one is ours
        return self._confirm(target, key, sha256, remove_on_mismatch=not replace)

    def _already_stored(self, target: Path, key: str, sha256: str) -> bool:
        """A retry after a lost confirmation finds its own object: success, not a copy."""
        if not target.exists():
            return False
        with _storage_errors(key):
            existing = hash_file_from_disk(target)
        if existing != sha256:
            raise StorageConflict(
                f"{key}: central storage already holds different content "
                f"(sha256 {existing}, expected {sha256}); nothing was overwritten"
            )
        return True

    def _write_create_only(
        self, target: Path, key: str, sha256: str, fill: Callable[[int], str]
    ) -> bool:
        """Write ``target`` create-only; False when the same content got there first
        (another dock storing the same clip), StorageConflict when other content did."""
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_durably(target, fill, create_only=True, suffix=self.part_suffix)
        except FileExistsError:
            if self._already_stored(target, key, sha256):
                return False
            raise
        return True

    def _confirm(
        self, target: Path, key: str, sha256: str, *, remove_on_mismatch: bool = True
    ) -> StoredObject:
        """The stored file as the NAS holds it, re-read from disk, must hash to ``sha256``."""
        with _storage_errors(key):
            stored_sha256 = hash_file_from_disk(target)
            size = target.stat().st_size
        if stored_sha256 != sha256:
            if remove_on_mismatch:
                self.delete(key)
            raise IntegrityError(f"{key}: stored copy hashed to {stored_sha256}, not {sha256}")
        return StoredObject(key, size, stored_sha256)

    def head(self, key: str) -> StoredObject | None:
        target = self._path(key)
        with _storage_errors(key):
            try:
                size = target.stat().st_size
            except FileNotFoundError:
                return None
        return StoredObject(key, size, None)

    def read_sha256(self, key: str) -> str | None:
        target = self._path(key)
        with _storage_errors(key):
            try:
                return hash_file_from_disk(target)
            except FileNotFoundError:
                return None

    def read_bytes(self, key: str) -> bytes | None:
        target = self._path(key)
        with _storage_errors(key):
            try:
                return target.read_bytes()
            except FileNotFoundError:
                return None

    def delete(self, key: str) -> None:
        with _storage_errors(key):
            self._path(key).unlink(missing_ok=True)

    def cleanup_partials(self, keep: Collection[str] = frozenset()) -> int:
        """``keep`` names multipart uploads, which a folder does not have."""
        removed = 0
        with _storage_errors("*" + self.part_suffix):
            for leftover in self.root.rglob("*" + self.part_suffix):
                if leftover.is_file() and not leftover.is_symlink():
                    leftover.unlink(missing_ok=True)
                    removed += 1
        return removed

    def check_reachable(self) -> None:
        if not self.root.is_dir():
            raise TransientStorageError(f"storage folder {self.root} is not there (not mounted?)")
        if self.must_be_mountpoint and not os.path.ismount(self.root):
            raise TransientStorageError(f"storage folder {self.root} is not mounted")
        if not os.access(self.root, os.W_OK):
            raise PermanentStorageError(
                f"storage folder {self.root} is not writable", RefusalKind.PERMISSION
            )


class _storage_errors:
    """Turn OS errors into the storage taxonomy, naming the key."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _traceback: object
    ) -> None:
        if not isinstance(error, OSError):
            return
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermanentStorageError(
                f"{self.key}: {error.strerror} ({error.filename})", RefusalKind.PERMISSION
            ) from error
        if is_transient(error) or error.errno is None:
            raise TransientStorageError(f"{self.key}: {error.strerror or error}") from error
        raise PermanentStorageError(
            f"{self.key}: {error.strerror}", RefusalKind.OTHER
        ) from error
