"""Crash-safe writes: the one way bwc-dock puts a file in place.

The content goes to a temporary file with a random name in the destination's own
folder (created ``O_EXCL | O_NOFOLLOW``, so no other file or link is reused), ending in
``.part`` (temporary files end in ``.part`` everywhere; recovery removes such
leftovers). The caller's ``fill`` writes it, hashing on the way; then the file is
fsynced, renamed over the destination (``os.replace``) or, create-only, linked to the
destination name (``link`` fails if the name exists), and the folder is fsynced so the
new name survives a power cut. The temporary file is removed on any failure, including
a failed or interrupted write. A kill -9 can still leave one behind, which is why the
name has a fixed form (:func:`temporary_pattern`): cleanup finds it by name.

Everything works on a folder descriptor (``*_at``): the folder backend walks a shared
NAS without ever handing the kernel a whole path, and the path-based calls open the
destination's folder and do the same. So there is one temporary-name scheme and one
fsync-file, rename, fsync-folder sequence.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

PART_SUFFIX = ".part"
# The destination's name is kept in the temporary name (so a leftover says what it was),
# cut short so name + token + a dock's suffix stays below the 255-byte name limit.
_NAME_KEPT = 100
# 64 random bits: a temporary name found taken was planted, not a collision
_TOKEN_BYTES = 8

_Filled = TypeVar("_Filled")


class TemporaryNameTaken(FileExistsError):
    """Something already sits at the fresh random temporary name: planted, not chance."""


def fsync_directory(directory: os.PathLike[str] | str) -> None:
    """Make a rename or a new name in ``directory`` durable."""
    fd = open_folder(directory)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_folder(directory: os.PathLike[str] | str) -> int:
    """A descriptor of ``directory`` for the ``*_at`` calls and its fsync."""
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def temporary_name_for(name: str, suffix: str = PART_SUFFIX) -> str:
    """A fresh random name for a temporary file beside ``name``, ending in ``suffix``."""
    return f"{name[:_NAME_KEPT]}.{secrets.token_hex(_TOKEN_BYTES)}{suffix}"


def temporary_name(destination: Path, suffix: str = PART_SUFFIX) -> Path:
    """A fresh random name beside ``destination`` that ends in ``suffix``."""
    return destination.with_name(temporary_name_for(destination.name, suffix))


def temporary_pattern(suffix: str = PART_SUFFIX) -> re.Pattern[str]:
    """Exactly the names :func:`temporary_name_for` makes with ``suffix``: cleanup
    removes these and never a file someone else named."""
    return re.compile(
        rf".{{1,{_NAME_KEPT}}}\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}{re.escape(suffix)}", re.DOTALL
    )


class PendingFileAt:
    """A file being written under its temporary name in the folder open as ``folder``.

    Whoever creates one calls :meth:`publish` or :meth:`discard` (always, in a finally:
    after a publish it does nothing); the folder's fsync is the caller's, once for all
    the files it put there. ``readable``: the descriptor is also open for reading (the
    folder backend reads its copy back before naming it). ``exact_mode``: the file gets
    ``mode`` whatever the umask.
    """

    def __init__(self, folder: int, name: str, *, mode: int, suffix: str = PART_SUFFIX,
                 readable: bool = False, exact_mode: bool = False) -> None:
        assert suffix.endswith(PART_SUFFIX), suffix
        self.folder = folder
        self.name = name
        self.temporary = temporary_name_for(name, suffix)
        access = os.O_RDWR if readable else os.O_WRONLY
        flags = access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self.fd: int | None = os.open(self.temporary, flags, mode, dir_fd=folder)
        except FileExistsError as error:
            raise TemporaryNameTaken(
                f"{self.temporary}: something is already at this random temporary name"
            ) from error
        self.synced = False
        self.published = False
        if exact_mode:
            try:
                os.fchmod(self.fd, mode)
            except BaseException:
                PendingFileAt.discard(self)
                raise

    def sync(self) -> os.stat_result:
        """fsync the content written so far; the file's identity (device, inode, size)."""
        assert self.fd is not None, "published or discarded already"
        os.fsync(self.fd)
        self.synced = True
        return os.fstat(self.fd)

    def publish(self, *, create_only: bool = False) -> None:
        """fsync (unless :meth:`sync` just did), close, and put the file at its name:
        renamed over it, or create-only linked to it (FileExistsError if taken)."""
        assert self.fd is not None, "published or discarded already"
        try:
            if not self.synced:
                os.fsync(self.fd)
        finally:
            self._close()
        if create_only:
            # linkat without AT_SYMLINK_FOLLOW: a link swapped in for the temporary is
            # named as itself, never followed (the folder backend checks the name after)
            os.link(self.temporary, self.name, src_dir_fd=self.folder,
                    dst_dir_fd=self.folder, follow_symlinks=False)
            self.published = True
            os.unlink(self.temporary, dir_fd=self.folder)
        else:
            os.replace(self.temporary, self.name, src_dir_fd=self.folder,
                       dst_dir_fd=self.folder)
            self.published = True

    def discard(self) -> None:
        """Close and remove the temporary file, unless it was published."""
        self._close()
        if not self.published:
            with suppress(FileNotFoundError):
                os.unlink(self.temporary, dir_fd=self.folder)

    def _close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class PendingFile(PendingFileAt):
    """A :class:`PendingFileAt` for a destination given by path: :func:`write_durably`
    in two steps.

    The copier fills one while it reads a camera and leaves :meth:`publish` (fsync and
    rename) to its verify stage, so the camera's next clip is read while this one goes
    to disk; it then fsyncs the folder once (:func:`fsync_directory`).
    """

    def __init__(self, destination: Path, *, mode: int, suffix: str = PART_SUFFIX) -> None:
        self.destination = destination
        self._folder_open = False
        folder = open_folder(destination.parent)
        try:
            super().__init__(folder, destination.name, mode=mode, suffix=suffix)
        except BaseException:
            os.close(folder)
            raise
        self._folder_open = True

    def publish(self, *, create_only: bool = False) -> None:
        super().publish(create_only=create_only)
        self._close_folder()  # on failure discard still needs it, and closes it

    def discard(self) -> None:
        if self._folder_open:
            try:
                super().discard()
            finally:
                self._close_folder()

    def _close_folder(self) -> None:
        if self._folder_open:
            self._folder_open = False
            os.close(self.folder)


def write_durably_at(
    folder: int,
    name: str,
    fill: Callable[[int], _Filled],
    *,
    create_only: bool = False,
    mode: int = 0o644,
    suffix: str = PART_SUFFIX,
    exact_mode: bool = False,
    check: Callable[[int, _Filled], None] | None = None,
) -> tuple[_Filled, os.stat_result]:
    """Write ``name`` in the folder open as ``folder`` crash-safely: (what ``fill(fd)``
    returned, the identity of the file now at ``name``).

    ``check(fd, filled)`` runs after the fsync, before the file is named, on a
    descriptor also open for reading (the folder backend reads its copy back there);
    it raises to abandon the write. Otherwise as :func:`write_durably`; a temporary
    name found taken raises :class:`TemporaryNameTaken`.
    """
    pending = PendingFileAt(folder, name, mode=mode, suffix=suffix,
                            readable=check is not None, exact_mode=exact_mode)
    try:
        assert pending.fd is not None
        filled = fill(pending.fd)
        identity = pending.sync()
        if check is not None:
            check(pending.fd, filled)
        pending.publish(create_only=create_only)
    finally:
        pending.discard()  # nothing left behind unless published
    os.fsync(folder)
    return filled, identity


def write_durably(
    destination: Path,
    fill: Callable[[int], _Filled],
    *,
    create_only: bool = False,
    mode: int = 0o644,
    suffix: str = PART_SUFFIX,
    exact_mode: bool = False,
) -> _Filled:
    """Write ``destination`` crash-safely; ``fill(fd)`` writes the content and returns
    what the caller wants back (its hash, typically), or raises to abandon the write.

    ``create_only``: raise FileExistsError, and change nothing, when ``destination``
    exists already (else it is replaced atomically). ``mode`` is subject to the umask
    unless ``exact_mode``. ``suffix`` must end in ``.part``; a backend shared by several
    docks puts its own name before it. OSError and whatever ``fill`` raises propagate.
    """
    folder = open_folder(destination.parent)
    try:
        filled, _identity = write_durably_at(
            folder, destination.name, fill, create_only=create_only, mode=mode,
            suffix=suffix, exact_mode=exact_mode,
        )
    finally:
        os.close(folder)
    return filled


def write_bytes_durably(
    destination: Path,
    data: bytes,
    *,
    create_only: bool = False,
    mode: int = 0o644,
    suffix: str = PART_SUFFIX,
    exact_mode: bool = False,
) -> str:
    """Write ``data`` to ``destination`` as write_durably does; return its SHA-256."""
    return write_durably(
        destination,
        lambda fd: write_all_hashing(fd, data),
        create_only=create_only,
        mode=mode,
        suffix=suffix,
        exact_mode=exact_mode,
    )


def rename_durably(source: Path, destination: Path) -> None:
    """Move a file already written and fsynced (a staged copy) to ``destination`` on the
    same filesystem, replacing what is there; both folders are fsynced so neither the
    new name nor the removal of the old one is lost to a power cut."""
    os.replace(source, destination)
    fsync_directory(destination.parent)
    if source.parent != destination.parent:
        fsync_directory(source.parent)


def write_all_hashing(fd: int, data: bytes) -> str:
    """Write all of ``data`` (a short write is continued, not taken as the end) and
    return the SHA-256 of the bytes written."""
    digest = hashlib.sha256()
    view = memoryview(data)
    while view:
        count = os.write(fd, view)
        if count == 0:  # never for a regular file; would loop for ever if it happened
            raise OSError(errno.EIO, "a write made no progress")
        digest.update(view[:count])
        view = view[count:]
    return digest.hexdigest()
