"""The ``file`` backend: central storage is a mounted folder (NAS over SMB or NFS).

The folder is shared, not trusted (docs/design.md, trust boundaries): other docks, people and
machines write there, and this dock runs as root. So no path below the storage root is
ever handed to the kernel whole. The root is opened once per operation and must still
be the folder (device and inode) first opened; every key is walked from it one folder
at a time with ``openat(O_NOFOLLOW | O_DIRECTORY)`` (folder_walk.py). A symlink anywhere
on the way (a camera folder, the key itself, a temporary name) is refused with
PermanentStorageError(LINK_REFUSED): nothing is written, the clip stays ``staged`` and
the daemon raises its ``storage_refused`` alarm.

Writes are crash-safe, through durable.py's folder-descriptor write: a random
``KEY.RANDOM.DOCK.part`` beside the final name, created ``O_EXCL | O_NOFOLLOW`` with an
explicit mode (not the umask's), written in large blocks, fsynced, then dropped from
the page cache and read back once through the same descriptor: it is named only if
that read hashes to the ledger's SHA-256, so the confirmation comes from what the NAS
holds, not from what this PC sent (a clip is not also hashed while sent: that would
prove nothing the read back does not). It is linked into place create-only (``linkat``
fails if the name exists), the folder is fsynced, and the name is checked to hold that
very file. Content already under the key is a verified no-op when it hashes the same,
and a StorageConflict, never an overwrite, when it does not.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from bwc_dock.config import Config
from bwc_dock.durable import (
    PART_SUFFIX,
    TemporaryNameTaken,
    temporary_pattern,
    write_all_hashing,
    write_durably_at,
)
from bwc_dock.errors import (
    IntegrityError,
    PermanentStorageError,
    RefusalKind,
    StorageConflict,
    TransientStorageError,
)
from bwc_dock.logs import get_logger
from bwc_dock.names import safe_name
from bwc_dock.storage.base import (
    MAX_DOCUMENT_BYTES,
    MultipartJournal,
    PartDigests,
    ProgressCallback,
    StorageBackend,
    StoredObject,
)
from bwc_dock.storage.folder_root import RootIdentity, check_marker
from bwc_dock.storage.folder_walk import (
    LinkRefusals,
    LinkRefused,
    directory_of,
    files_in,
    open_file,
    read_bounded,
    split_key,
    storage_errors,
    unlink_quietly,
    walk_files,
)

log = get_logger(__name__)
# bwc_dock.hashing (ctypes, a libc lookup, a thread pool) is imported where clips are
# hashed, not here: `bwc-dock status` opens this backend only to check it is reachable.

DEFAULT_FILE_MODE = 0o640
DEFAULT_DIRECTORY_MODE = 0o750
# Clips go to the NAS in 4 MiB writes: fewer, larger requests over SMB/NFS
_SEND_CHUNK_SIZE = 4 * 1024 * 1024


class FileBackend(StorageBackend):
    name = "file"

    def __init__(
        self,
        root: Path,
        dock_tag: str,
        *,
        must_be_mountpoint: bool = False,
        marker: str = "",
        file_mode: int = DEFAULT_FILE_MODE,
        directory_mode: int = DEFAULT_DIRECTORY_MODE,
    ) -> None:
        self.root = root
        self.must_be_mountpoint = must_be_mountpoint
        self.marker = marker
        self.file_mode = file_mode
        self.directory_mode = directory_mode
        # Several docks write into one NAS: a dock's temporary files carry its name, so
        # cleaning up after a crash never removes another dock's upload in progress.
        self.part_suffix = f".{dock_tag}{PART_SUFFIX}"
        # exactly the temporaries durable.py makes: a stored object is never taken for one
        self._temporary = temporary_pattern(self.part_suffix)
        self._root_identity = RootIdentity(root)
        # check_reachable keeps failing while a link that refused a write is still there
        self._link_refusals = LinkRefusals()

    @classmethod
    def from_config(cls, config: Config) -> FileBackend:
        assert config.storage.path is not None
        return cls(
            config.storage.path,
            safe_name(config.dock.id.encode()),
            must_be_mountpoint=config.storage.path_must_be_mountpoint,
            marker=config.storage.store_marker,
            file_mode=config.storage.file_mode,
            directory_mode=config.storage.directory_mode,
        )

    # -- the root and the walk to a key --------------------------------------------------

    def _open_root(self) -> int:
        """A descriptor of the storage root, checked to be the folder first opened."""
        # Never write into an empty mount point: the NAS would be missing, not empty.
        self._check_mounted()
        try:
            # the configured path is the administrator's: links in it are theirs
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise TransientStorageError(
                f"storage folder {self.root} cannot be opened: {error.strerror}"
            ) from error
        try:
            check_marker(fd, self.root, self.marker)  # before the identity: an unmarked
            # folder is never the root
            self._root_identity.check(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextmanager
    def _folder_of(self, key: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """(descriptor of the key's folder, the key's last name), walked without links.

        ``create``: make missing folders; else a missing one raises FileNotFoundError.
        """
        parts = split_key(key)
        if parts[-1].endswith(PART_SUFFIX):
            raise PermanentStorageError(
                f"unsafe storage key {key!r}: .part names are temporary files",
                RefusalKind.INVALID_REQUEST,
            )
        root_fd = self._open_root()
        if create:  # a write: a later change of root is then refused, never adopted
            self._root_identity.note_write()
        try:
            create_mode = self.directory_mode if create else None
            with directory_of(root_fd, parts[:-1], key, create_mode=create_mode) as folder:
                yield folder, parts[-1]
        finally:
            os.close(root_fd)

    # -- writing ------------------------------------------------------------------------

    def put_file(
        self,
        key: str,
        source: Path,
        sha256: str,
        size: int,
        metadata: Mapping[str, str],
        journal: MultipartJournal | None = None,
        progress: ProgressCallback | None = None,
        part_digests: PartDigests | None = None,  # the folder store hashes its own copy
    ) -> StoredObject:
        from bwc_dock.hashing import copy_unhashed

        def fill(part_fd: int) -> str:
            # not hashed while sent: the one read that verifies the written copy from
            # disk before it is named (_filled) proves all a hash here would, and more
            copy_unhashed(source_fd, part_fd, progress, _SEND_CHUNK_SIZE, read_error=OSError)
            return sha256

        with self._link_refusals.watching(key), storage_errors(key), self._folder_of(
            key, create=True
        ) as (folder, name):
            if self._already_stored(folder, name, key, sha256):
                return StoredObject(key, size, sha256)
            source_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                stored_size = self._write_create_only(folder, name, key, sha256, fill,
                                                      verify=True)
            finally:
                os.close(source_fd)
            return StoredObject(key, stored_size, sha256)

    def put_bytes(
        self, key: str, data: bytes, metadata: Mapping[str, str], *, replace: bool = False
    ) -> StoredObject:
        sha256 = hashlib.sha256(data).hexdigest()
        with self._link_refusals.watching(key), storage_errors(key), self._folder_of(
            key, create=True
        ) as (folder, name):
            if replace:
                self._write_replacing(folder, name, lambda fd: write_all_hashing(fd, data))
                # a replaced document may be someone else's by now: only ours is removed
                return self._confirm(folder, name, key, sha256, remove_on_mismatch=False)
            if self._already_stored(folder, name, key, sha256):
                return StoredObject(key, len(data), sha256)
            self._write_create_only(folder, name, key, sha256,
                                    lambda fd: write_all_hashing(fd, data))
            return self._confirm(folder, name, key, sha256)

    def copy_object(self, key: str, new_key: str) -> StoredObject:
        from bwc_dock.hashing import copy_hashing, hash_fd_from_disk

        source_fd = self._open_stored(key)
        if source_fd is None:
            raise PermanentStorageError(f"{key}: nothing stored there to copy to {new_key}",
                                        RefusalKind.MISSING_OBJECT)
        try:
            with self._link_refusals.watching(new_key), storage_errors(new_key), self._folder_of(
                new_key, create=True
            ) as (folder, name):
                if self._exists(folder, name, new_key):
                    source_sha256 = hash_fd_from_disk(source_fd)
                    self._already_stored(folder, name, new_key, source_sha256)
                    return self._confirm(folder, name, new_key, source_sha256,
                                         remove_on_mismatch=False)
                copied: list[str] = []

                def fill(part_fd: int) -> str:
                    copied_sha256, _size = copy_hashing(source_fd, part_fd, read_error=OSError)
                    copied.append(copied_sha256)
                    return copied_sha256

                self._write_create_only(folder, name, new_key, None, fill)
                # the copy re-read from disk must hash as the source did while copied
                return self._confirm(folder, name, new_key, copied[0])
        finally:
            os.close(source_fd)

    def _open_stored(self, key: str) -> int | None:
        """The stored file under ``key`` opened for reading without links; None if missing."""
        with storage_errors(key), suppress(FileNotFoundError), self._folder_of(key) as (
            folder, name
        ):
            return open_file(folder, name, key)
        return None

    def _exists(self, folder: int, name: str, key: str) -> bool:
        try:
            status = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(status.st_mode):
            raise LinkRefused(f"{key}: is a symlink; refused, not followed")
        return True

    def _already_stored(self, folder: int, name: str, key: str, sha256: str) -> bool:
        """A retry after a lost confirmation finds its own object: success, not a copy."""
        from bwc_dock.hashing import hash_fd_from_disk

        try:
            fd = open_file(folder, name, key)
        except FileNotFoundError:
            return False
        try:
            existing = hash_fd_from_disk(fd)
        finally:
            os.close(fd)
        if existing != sha256:
            raise StorageConflict(
                f"{key}: central storage already holds different content "
                f"(sha256 {existing}, expected {sha256}); nothing was overwritten"
            )
        return True

    def _write_create_only(self, folder: int, name: str, key: str, sha256: str | None,
                           fill: Callable[[int], str], *, verify: bool = False) -> int:
        """Write ``name`` create-only (durable.py); its size. When the same content got
        there first (another dock storing the same clip) that is success; other content
        is StorageConflict. ``verify``: the copy is read back from disk before it is
        named, and the name is then checked to hold that very file (so no second read)."""
        filled: list[str] = []

        def noting(fd: int) -> str:
            filled.append(fill(fd))
            return filled[0]

        try:
            _sha256, identity = self._write_at(folder, name, noting, create_only=True,
                                               verify=verify)
        except FileExistsError:
            self._already_stored(folder, name, key, sha256 or filled[0])
            return os.stat(name, dir_fd=folder, follow_symlinks=False).st_size
        self._check_named(folder, name, key, identity, remove=True)
        return identity.st_size

    def _write_replacing(self, folder: int, name: str, fill: Callable[[int], str]) -> None:
        _sha256, identity = self._write_at(folder, name, fill, create_only=False)
        self._check_named(folder, name, name, identity, remove=False)

    def _write_at(self, folder: int, name: str, fill: Callable[[int], str], *,
                  create_only: bool, verify: bool = False) -> tuple[str, os.stat_result]:
        """durable.py's write in the key's folder, under this dock's ``.part`` suffix and
        the configured mode (not the umask's). ``verify``: the fsynced temporary is read
        back from disk (not the page cache) and must hash to what fill returned."""
        try:
            return write_durably_at(
                folder, name, fill, create_only=create_only, mode=self.file_mode,
                suffix=self.part_suffix, exact_mode=True,
                check=(lambda fd, filled: _verify_written(fd, name, filled)) if verify else None,
            )
        except TemporaryNameTaken as error:  # a random name taken: planted, not chance
            raise LinkRefused(f"{error}; refused, nothing written") from error

    @staticmethod
    def _check_named(folder: int, name: str, key: str, written: os.stat_result, *,
                     remove: bool) -> None:
        """The name now holds the file this dock wrote, not something swapped in."""
        named = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if (named.st_dev, named.st_ino) != (written.st_dev, written.st_ino):
            if remove:
                unlink_quietly(folder, name)
            raise LinkRefused(f"{key}: the temporary file was replaced while it was being"
                              f" written (a link or another file); refused")

    def _confirm(self, folder: int, name: str, key: str, sha256: str, *,
                 remove_on_mismatch: bool = True) -> StoredObject:
        """The stored file as the NAS holds it, re-read from disk, must hash to ``sha256``."""
        from bwc_dock.hashing import hash_fd_from_disk

        fd = open_file(folder, name, key)
        try:
            stored_sha256 = hash_fd_from_disk(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if stored_sha256 != sha256:
            if remove_on_mismatch:
                unlink_quietly(folder, name)
            raise IntegrityError(f"{key}: stored copy hashed to {stored_sha256}, not {sha256}")
        return StoredObject(key, size, stored_sha256)

    # -- reading ------------------------------------------------------------------------

    def head(self, key: str) -> StoredObject | None:
        with storage_errors(key), suppress(FileNotFoundError), self._folder_of(key) as (
            folder, name
        ):
            status = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if stat.S_ISLNK(status.st_mode):
                raise LinkRefused(f"{key}: is a symlink; refused, not followed")
            return StoredObject(key, status.st_size, None)
        return None

    def read_sha256(self, key: str) -> str | None:
        from bwc_dock.hashing import hash_fd_from_disk

        fd = self._open_stored(key)
        if fd is None:
            return None
        try:
            with storage_errors(key):
                return hash_fd_from_disk(fd)
        finally:
            os.close(fd)

    def read_chunks(self, key: str) -> Generator[bytes]:
        fd = self._open_stored(key)
        if fd is None:
            raise PermanentStorageError(f"{key}: not stored", RefusalKind.MISSING_OBJECT)
        with storage_errors(key), os.fdopen(fd, "rb") as file:
            while chunk := file.read(_SEND_CHUNK_SIZE):
                yield chunk

    def read_bytes(self, key: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        fd = self._open_stored(key)
        if fd is None:
            return None
        with storage_errors(key):
            return read_bounded(fd, key, max_bytes)

    def list_keys(self, prefix: str) -> Iterator[str]:
        folder_part, _, name_start = prefix.rpartition("/")
        parts = split_key(folder_part) if folder_part else []
        listed_prefix = folder_part + "/" if folder_part else ""
        with storage_errors(prefix or "/"):
            root_fd = self._open_root()
            try:
                with directory_of(root_fd, parts, prefix) as folder:
                    for _folder, key in walk_files(folder, listed_prefix, name_start):
                        if not key.endswith(PART_SUFFIX) and key != self.marker:
                            yield key
            except FileNotFoundError:
                return
            except LinkRefused as refused:
                log.warning("storage.list.symlink_skipped", key=prefix, error=str(refused))
                return
            finally:
                os.close(root_fd)

    # -- housekeeping -------------------------------------------------------------------

    def delete(self, key: str) -> None:
        with storage_errors(key), suppress(FileNotFoundError), self._folder_of(key) as (
            folder, name
        ):
            os.unlink(name, dir_fd=folder)  # a link itself is removed, never its target

    def cleanup_partials(self, keep: Collection[str] = frozenset(),
                         folders: Collection[str] | None = None) -> int:
        """``keep`` names multipart uploads, which a folder does not have. Only names of
        the exact form this dock gives its temporaries are removed (never a stored
        object, whatever it is called)."""
        removed = 0
        with storage_errors("*" + self.part_suffix):
            root_fd = self._open_root()
            try:
                if folders is None:
                    candidates = walk_files(root_fd, "")
                else:
                    candidates = files_in(root_fd, folders)
                for folder, key in candidates:
                    name = key.rpartition("/")[2]
                    if self._temporary.fullmatch(name):
                        unlink_quietly(folder, name)
                        removed += 1
            finally:
                os.close(root_fd)
        return removed

    def _probe_link(self, key: str) -> None:
        """Raise LinkRefused while a link is on the way to ``key``."""
        with self._folder_of(key) as (folder, name):
            self._exists(folder, name, key)

    def _check_mounted(self) -> None:
        if not self.root.is_dir():
            raise TransientStorageError(f"storage folder {self.root} is not there (not mounted?)")
        if self.must_be_mountpoint and not os.path.ismount(self.root):
            raise TransientStorageError(f"storage folder {self.root} is not mounted")

    def check_reachable(self) -> None:
        os.close(self._open_root())  # also checks it is still the folder first opened
        self._link_refusals.still_there(self._probe_link)
        if not os.access(self.root, os.W_OK):
            raise PermanentStorageError(
                f"storage folder {self.root} is not writable", RefusalKind.PERMISSION
            )

def _verify_written(fd: int, name: str, expected: str) -> None:
    """The fsynced temporary, read back from disk, holds ``expected``: refused before it
    is ever named otherwise."""
    from bwc_dock.hashing import hash_fd_from_disk

    stored_sha256 = hash_fd_from_disk(fd)
    if stored_sha256 != expected:
        raise IntegrityError(f"{name}: stored copy hashed to {stored_sha256}, not {expected}")

