"""Crash-safe writes: the one way bwc-dock puts a file in place.

The content goes to a temporary file with a random name in the destination's own
directory (created ``O_EXCL | O_NOFOLLOW``, so no other file or link is reused),
ending in ``.part`` (temporary files end in ``.part`` everywhere; recovery removes such
leftovers). The caller's ``fill`` writes it, hashing on the way; then the file is
fsynced, renamed over the destination (``os.replace``) or, create-only, linked to the
destination name (``link`` fails if the name exists), and the directory is fsynced so
the new name survives a power cut. The temporary file is removed on any failure,
including a failed or interrupted write. A kill -9 can still leave one behind, which
is why the suffix is fixed: cleanup finds it by name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

PART_SUFFIX = ".part"
# The destination's name is kept in the temporary name (so a leftover says what it was),
# cut short so name + token + a dock's suffix stays below the 255-byte name limit.
_NAME_KEPT = 100
_TOKEN_BYTES = 6

_Filled = TypeVar("_Filled")


def fsync_directory(directory: os.PathLike[str] | str) -> None:
    """Make a rename or a new name in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(destination: Path, suffix: str = PART_SUFFIX) -> Path:
    """A fresh random name beside ``destination`` that ends in ``suffix``."""
    token = secrets.token_hex(_TOKEN_BYTES)
    return destination.with_name(f"{destination.name[:_NAME_KEPT]}.{token}{suffix}")


class PendingFile:
    """A file being written under its temporary name: :func:`write_durably` in two steps.

    The copier fills one while it reads a camera and leaves :meth:`publish` (fsync and
    rename) to its verify stage, so the camera's next clip is read while this one goes
    to disk. Whoever creates one calls :meth:`publish` or :meth:`discard`; after a
    failure, :meth:`discard` closes it and removes the temporary file.
    """

    def __init__(self, destination: Path, *, mode: int, suffix: str = PART_SUFFIX) -> None:
        assert suffix.endswith(PART_SUFFIX), suffix
        self.destination = destination
        self.temporary = temporary_name(destination, suffix)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self.fd: int | None = os.open(self.temporary, flags, mode)
        self.published = False

    def publish(self, *, create_only: bool = False) -> None:
        """fsync, close and put the file at its destination; the caller then fsyncs the
        directory (:func:`fsync_directory`), once for all the files it put there."""
        assert self.fd is not None, "published or discarded already"
        try:
            os.fsync(self.fd)
        finally:
            self._close()
        _publish(self.temporary, self.destination, create_only=create_only)
        self.published = True

    def discard(self) -> None:
        """Close and remove the temporary file, unless it was published."""
        self._close()
        if not self.published:
            self.temporary.unlink(missing_ok=True)

    def _close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def write_durably(
    destination: Path,
    fill: Callable[[int], _Filled],
    *,
    create_only: bool = False,
    mode: int = 0o644,
    suffix: str = PART_SUFFIX,
) -> _Filled:
    """Write ``destination`` crash-safely; ``fill(fd)`` writes the content and returns
    what the caller wants back (its hash, typically), or raises to abandon the write.

    ``create_only``: raise FileExistsError, and change nothing, when ``destination``
    exists already (else it is replaced atomically). ``mode`` is subject to the umask.
    ``suffix`` must end in ``.part``; a backend shared by several docks puts its own
    name before it. OSError and whatever ``fill`` raises propagate.
    """
    pending = PendingFile(destination, mode=mode, suffix=suffix)
    try:
        assert pending.fd is not None
        filled = fill(pending.fd)
        pending.publish(create_only=create_only)
    finally:
        pending.discard()  # nothing left behind unless published
    fsync_directory(destination.parent)
    return filled


def write_bytes_durably(
    destination: Path,
    data: bytes,
    *,
    create_only: bool = False,
    mode: int = 0o644,
    suffix: str = PART_SUFFIX,
) -> str:
    """Write ``data`` to ``destination`` as write_durably does; return its SHA-256."""
    return write_durably(
        destination,
        lambda fd: write_all_hashing(fd, data),
        create_only=create_only,
        mode=mode,
        suffix=suffix,
    )


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


def _publish(temporary: Path, destination: Path, *, create_only: bool) -> None:
    if create_only:
        os.link(temporary, destination)  # fails with EEXIST instead of overwriting
        temporary.unlink()
    else:
        os.replace(temporary, destination)
