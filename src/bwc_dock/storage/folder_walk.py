"""Walking a shared folder without following links (docs/design.md, trust boundaries).

Central storage is written by other docks, people and machines. A symlink planted in
it (at a camera folder, at a key, at a temporary name) must never lead this dock, which
runs as root, to read or write outside the storage root. So every path below the root
is walked one component at a time with ``openat(O_NOFOLLOW)`` from a descriptor of the
root itself: a link anywhere on the way fails the open (ELOOP or ENOTDIR) instead of
being followed. Kernel path resolution is never given a path with more than one
component below a trusted descriptor.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from bwc_dock.errors import (
    PermanentStorageError,
    RefusalKind,
    TransientStorageError,
    is_transient,
)
from bwc_dock.logs import get_logger
from bwc_dock.storage.base import DocumentTooLarge

log = get_logger(__name__)

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The errors openat(O_NOFOLLOW) gives when the last component is a symlink (ELOOP) or
# when a directory was expected and a symlink or file is there (ENOTDIR).
_LINK_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR})


class LinkRefused(PermanentStorageError):
    """A symlink (or a file where a folder belongs) on the way to a key was refused."""

    def __init__(self, message: str) -> None:
        super().__init__(message, RefusalKind.LINK_REFUSED)


_REFUSALS_KEPT = 1000  # link refusals remembered for check_reachable (memory bound)


class LinkRefusals:
    """Keys whose write was refused for a link on their way, with the refusal: the
    store's check keeps failing while a link is still there, so the daemon's
    storage_refused alarm stays raised until someone removes it (and clears after)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: dict[str, str] = {}

    @contextmanager
    def watching(self, key: str) -> Iterator[None]:
        """Remember a write refused for a link on its way; forget it once one succeeds."""
        try:
            yield
        except LinkRefused as refused:
            with self._lock:
                if len(self._refused) < _REFUSALS_KEPT:
                    self._refused[key] = str(refused)
            log.error("storage.link_refused", key=key, error=str(refused))
            raise
        with self._lock:
            self._refused.pop(key, None)

    def still_there(self, probe: Callable[[str], None]) -> None:
        """Raise LinkRefused while ``probe`` (walking to a refused key) still meets a link."""
        with self._lock:
            refused = dict(self._refused)
        for key, message in refused.items():
            try:
                probe(key)
            except LinkRefused:
                raise LinkRefused(f"{message} ({len(refused)} key(s) refused for links;"
                                  f" remove the link(s) from central storage)") from None
            except (OSError, PermanentStorageError):
                pass  # gone, or refused for another reason now: the next write will say
            with self._lock:
                self._refused.pop(key, None)


def split_key(key: str) -> list[str]:
    """The components of a key; an unsafe key (empty part, ``.``, ``..``) is refused."""
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") or "\x00" in part for part in parts):
        raise PermanentStorageError(f"unsafe storage key {key!r}", RefusalKind.INVALID_REQUEST)
    return parts


def open_directory(parent_fd: int, name: str, where: str) -> int:
    """``name`` in ``parent_fd`` opened as a directory, never through a link."""
    try:
        return os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in _LINK_ERRNOS:
            raise LinkRefused(
                f"{where}: {name!r} is a symlink or not a folder; refused (a link in"
                f" central storage that bwc-dock did not make is never followed)"
            ) from error
        raise


def make_directory(parent_fd: int, name: str, where: str, mode: int) -> int:
    """``name`` in ``parent_fd`` opened as a directory, made first if missing."""
    try:
        return open_directory(parent_fd, name, where)
    except FileNotFoundError:
        pass
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
    except FileExistsError:
        pass  # another dock made it meanwhile; opened below, still without following
    else:
        os.chmod(name, mode, dir_fd=parent_fd, follow_symlinks=False)  # not the umask's
        # the new folder's own name must survive a power cut too: a file published in
        # it later is durable only if the folder that holds it is
        os.fsync(parent_fd)
    return open_directory(parent_fd, name, where)


@contextmanager
def directory_of(root_fd: int, parts: Sequence[str], where: str, *,
                 create_mode: int | None = None) -> Iterator[int]:
    """A descriptor of the folder ``parts`` below ``root_fd``, walked without links.

    ``create_mode``: make missing folders with this mode; None: a missing one raises
    FileNotFoundError. The descriptor is closed when the block ends.
    """
    fd = os.dup(root_fd)
    try:
        for name in parts:
            if create_mode is None:
                child = open_directory(fd, name, where)
            else:
                child = make_directory(fd, name, where, create_mode)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def open_file(directory_fd: int, name: str, where: str, flags: int = os.O_RDONLY) -> int:
    """A regular file ``name`` in ``directory_fd`` opened without following a link."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=directory_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LinkRefused(f"{where}: is a symlink; refused, not followed") from error
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device would block or lie
        os.close(fd)
        raise PermanentStorageError(f"{where}: not a regular file", RefusalKind.OTHER)
    os.set_blocking(fd, True)
    return fd


# Keys bwc-dock writes are a few folders deep ({camera}/{yyyy}/{mm}/{dd}/{name}). A walk
# goes at most this many folders below the store's root: a deeper chain (planted, or a
# runaway copy) is skipped and logged, so it can neither exhaust the stack nor hold one
# open descriptor per level.
MAX_WALK_DEPTH = 32


@dataclass
class _Level:
    """One open folder of a walk: its descriptor, key prefix and entries still to visit."""

    fd: int
    prefix: str
    entries: Iterator[tuple[str, str, bool]]
    owned: bool  # opened by the walk (closed by it), not the caller's descriptor


def walk_files(directory_fd: int, prefix: str, name_start: str = "") -> Iterator[tuple[int, str]]:
    """(folder descriptor, key) of each regular file below ``directory_fd``, whose key
    prefix is ``prefix`` (empty or ending in ``/``), first name starting with
    ``name_start``; sorted by key. The descriptor is valid until the next item.

    Sorted by whole key: a folder's entries are ordered by ``name/`` for folders and
    ``name`` for files, as every key below folder ``name`` starts with ``name/``.
    Symlinks and special files are skipped and logged, never entered or read. Iterative,
    not recursive: folders deeper than MAX_WALK_DEPTH below the root are skipped and logged.
    """
    stack = [_Level(directory_fd, prefix, iter(_sorted_entries(directory_fd, prefix,
                                                               name_start)), owned=False)]
    try:
        while stack:
            level = stack[-1]
            entry = next(level.entries, None)
            if entry is None:
                stack.pop()
                if level.owned:
                    os.close(level.fd)
                continue
            _order, name, is_directory = entry
            key = level.prefix + name
            if not is_directory:
                yield level.fd, key
            elif (child := _enter(level.fd, key, name)) is not None:
                stack.append(_Level(child, key + "/",
                                    iter(_sorted_entries(child, key + "/")), owned=True))
    finally:
        for level in stack:
            if level.owned:
                os.close(level.fd)


def _enter(parent_fd: int, key: str, name: str) -> int | None:
    """The listed folder ``name`` opened to walk it; None when skipped."""
    if key.count("/") >= MAX_WALK_DEPTH:
        log.warning("storage.list.too_deep_skipped", key=key[:512], depth=MAX_WALK_DEPTH,
                    why="folders deeper than this are not bwc-dock's and are not walked")
        return None
    try:
        return open_directory(parent_fd, name, key)
    except LinkRefused:  # swapped for a link since it was listed
        log.warning("storage.list.symlink_skipped", key=key,
                    why="a link in central storage is never followed")
    except FileNotFoundError:
        pass  # removed since it was listed
    return None


def _sorted_entries(directory_fd: int, prefix: str,
                    name_start: str = "") -> list[tuple[str, str, bool]]:
    """(sort order, name, is a folder) of a folder's regular files and folders."""
    entries: list[tuple[str, str, bool]] = []
    with os.scandir(directory_fd) as scan:
        for entry in scan:
            if not entry.name.startswith(name_start):
                continue
            if entry.is_symlink():
                log.warning("storage.list.symlink_skipped", key=prefix + entry.name,
                            why="a link in central storage is never followed")
            elif entry.is_dir(follow_symlinks=False):
                entries.append((entry.name + "/", entry.name, True))
            elif entry.is_file(follow_symlinks=False):
                entries.append((entry.name, entry.name, False))
            else:
                log.warning("storage.list.special_file_skipped", key=prefix + entry.name)
    return sorted(entries)


def files_in(root_fd: int, folders: Collection[str]) -> Iterator[tuple[int, str]]:
    """(folder descriptor, key) of the regular files directly in each of ``folders``
    (keys, "" = the root); a folder missing or reached through a link is skipped."""
    for folder_key in sorted(folders):
        parts = split_key(folder_key) if folder_key else []
        try:
            with directory_of(root_fd, parts, folder_key or "/") as folder:
                with os.scandir(folder) as scan:
                    names = [entry.name for entry in scan if entry.is_file(follow_symlinks=False)]
                for name in names:
                    yield folder, f"{folder_key}/{name}" if folder_key else name
        except (FileNotFoundError, LinkRefused):
            continue


def read_bounded(fd: int, key: str, max_bytes: int) -> bytes:
    """All of the open file ``fd`` (closed after), refused when over ``max_bytes``."""
    with os.fdopen(fd, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise DocumentTooLarge(key, size, max_bytes)
        content = file.read(max_bytes + 1)  # it may have grown since
    if len(content) > max_bytes:
        raise DocumentTooLarge(key, None, max_bytes)
    return content


def unlink_quietly(folder: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("storage.unlink_failed", name=name, error=str(error))


class storage_errors:
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
