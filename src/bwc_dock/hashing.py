"""Moving bytes while hashing them: one read feeds SHA-256 and the write.

A three-stage pipeline keeps the camera link, the hash and the disk busy at once:
a reader thread fills the next buffer while this thread hashes the current one and
a writer thread writes the previous one (file I/O and ``hashlib`` both release the
GIL). Memory is three fixed buffers per copy, whatever the file size, kept in a
small bounded pool between copies.

On a local disk filesystem (ext4, xfs) the copy is written with ``O_DIRECT``: the
bytes go from our buffer to the disk without a second copy into the page cache, which
on a two-core dock PC costs as much CPU as the SHA-256 itself, and the staged copy is
not left in the cache where the verify re-read could be answered from memory. The
caller's fsync still makes it durable (O_DIRECT does not flush the disk's own cache
nor the file's metadata). Elsewhere (a NAS share, FUSE, tmpfs) writes are buffered and
pushed to disk as they go (``sync_file_range``), so the final fsync waits only for the
tail. ``hash_file_from_disk`` reads with ``O_DIRECT`` where it can for the same reason,
else drops the file's cached pages first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import io
import mmap
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bwc_dock.durable import fsync_directory
from bwc_dock.errors import SourceGone

# 1 MiB: measured (scripts/bench) as fast as 4 MiB on a 1 GiB clip and a third faster
# on 10 MiB clips, whose copy is mostly pipeline fill and drain at 4 MiB; and three
# buffers of it keep the copier's memory small.
CHUNK_SIZE = 1024 * 1024
_WRITEBACK_EVERY = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2
# O_DIRECT wants buffer address, file offset and length aligned to the device's logical
# block; 4096 covers every disk we expect (512 and 4K sectors), and mmap buffers are
# page-aligned.
_DIRECT_ALIGNMENT = 4096
# statfs f_type of filesystems whose O_DIRECT we trust to be plain and fast. NFS, CIFS
# and FUSE turn O_DIRECT into synchronous round trips or refuse it; tmpfs has no disk.
_DIRECT_FILESYSTEMS = frozenset({0xEF53, 0x58465342})  # ext2/3/4, xfs
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)

__all__ = [
    "CHUNK_SIZE",
    "ProgressCallback",
    "copy_hashing",
    "copy_unhashed",
    "drop_cache",
    "fsync_directory",  # lives in durable.py; still importable from here
    "hash_file_from_disk",
    "start_writeback",
]

ProgressCallback = Callable[[int], None]


def _libc_function(name: str, argument_types: list[Any], result_type: Any) -> Any:
    """A libc function through ctypes, or None where this libc lacks it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argument_types
    function.restype = result_type
    return function


_sync_file_range: Callable[[int, int, int, int], int] | None = _libc_function(
    "sync_file_range",
    [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint],
    ctypes.c_int,
)
_fstatfs: Callable[[int, Any], int] | None = _libc_function(
    "fstatfs", [ctypes.c_int, ctypes.c_char_p], ctypes.c_int
)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting for it."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def drop_cache(fd: int) -> None:
    """Forget a file's (clean) cached pages, so the next read comes from the disk."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _filesystem_type(fd: int) -> int | None:
    """statfs ``f_type`` of the filesystem holding ``fd`` (the first field, a long)."""
    if _fstatfs is None:
        return None
    result = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64
    if _fstatfs(fd, result) != 0:
        return None
    return ctypes.c_long.from_buffer(result).value & 0xFFFFFFFF


def _regular_file_size(fd: int) -> int | None:
    """The size of ``fd`` when it is a regular file (else None: a pipe has no size)."""
    status = os.fstat(fd)
    return status.st_size if (status.st_mode & 0o170000) == 0o100000 else None


def _set_direct(fd: int, enabled: bool) -> bool:
    """Switch O_DIRECT on ``fd``; False when its filesystem refuses it."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    wanted = (flags | _O_DIRECT) if enabled else (flags & ~_O_DIRECT)
    if wanted == flags:
        return True
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, wanted)
    except OSError as error:
        if error.errno == errno.EINVAL:
            return False
        raise
    return True


def _direct_capable(fd: int, chunk_size: int) -> bool:
    return (
        _O_DIRECT != 0
        and chunk_size % _DIRECT_ALIGNMENT == 0
        and _filesystem_type(fd) in _DIRECT_FILESYSTEMS
    )


def _aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer (anonymous memory, returned to the system when freed)."""
    return mmap.mmap(-1, max(size, 1))


class _BufferPool:
    """Full-size pipeline buffers kept between copies.

    Mapping and faulting in three fresh 1 MiB buffers costs about 2 ms, a quarter of
    the whole copy of a 10 MiB clip (scripts/bench). A few sets are kept for the next
    copy; the pool is bounded, so memory stays fixed however many threads copy. A
    buffer's old bytes are never read: each use fills it from the start and only the
    bytes just read are hashed or written.
    """

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._free: list[list[mmap.mmap]] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> list[mmap.mmap]:
        if size == self.size:
            with self._lock:
                if self._free:
                    return self._free.pop()
        return [_aligned_buffer(size) for _ in range(3)]

    def give_back(self, buffers: list[mmap.mmap]) -> None:
        """Keep the set for the next copy; the caller's I/O on it must be over. A set
        not kept is left to the garbage collector: views of it may still be alive."""
        if len(buffers[0]) == self.size:
            with self._lock:
                if len(self._free) < self.keep:
                    self._free.append(buffers)


# four sets: a copier, its background verify, an uploader's hash and one more (12 MiB)
_BUFFERS = _BufferPool(CHUNK_SIZE, keep=4)


def _fitted_chunk_size(source_fd: int, chunk_size: int) -> int:
    """A small file needs no full-size buffers: allocating and faulting in three 4 MiB
    buffers per 100 KiB sidecar is most of its copy time."""
    try:
        size = _regular_file_size(source_fd)
    except OSError:
        return chunk_size  # a camera gone already: let the first read report it
    if size is None or size >= chunk_size:
        return chunk_size
    # one page more than the file, so the read that finds the end is not the last fit
    fitted = (size // _DIRECT_ALIGNMENT + 1) * _DIRECT_ALIGNMENT
    return min(chunk_size, fitted)


class PartHasher:
    """The SHA-256 of each ``part_size`` bytes of a file, fed the same chunks as the hash
    of the whole in the same read (chunks need not line up with parts): the digests a
    multipart upload sends with each part, so the upload need not hash the file again."""

    def __init__(self, part_size: int) -> None:
        if part_size <= 0:
            raise ValueError(f"part size must be positive, not {part_size}")
        self.part_size = part_size
        self._current = hashlib.sha256()
        self._filled = 0
        self._digests: list[bytes] = []

    def update(self, data: memoryview) -> None:
        while len(data):
            taken = min(len(data), self.part_size - self._filled)
            self._current.update(data[:taken])
            self._filled += taken
            data = data[taken:]
            if self._filled == self.part_size:
                self._digests.append(self._current.digest())
                self._current = hashlib.sha256()
                self._filled = 0

    def digests(self) -> tuple[bytes, ...]:
        """The raw digest of each part so far, in order; the last part may be short."""
        tail = (self._current.digest(),) if self._filled else ()
        return (*self._digests, *tail)


class _Destination:
    """Where the copy goes: direct writes while they stay aligned, then buffered."""

    def __init__(self, fd: int, chunk_size: int) -> None:
        self.fd = fd
        self.direct = _direct_capable(fd, chunk_size) and _set_direct(fd, enabled=True)

    def write(self, view: memoryview, offset: int) -> None:
        written = 0
        while written < len(view):
            remaining = view[written:]
            if self.direct and len(remaining) % _DIRECT_ALIGNMENT != 0:
                # the file's tail: the aligned part direct, the last partial block buffered
                aligned = len(remaining) - len(remaining) % _DIRECT_ALIGNMENT
                if aligned:
                    written += self._write_direct(remaining[:aligned])
                    continue
                self.finish()
            written += (
                self._write_direct(remaining) if self.direct else os.write(self.fd, remaining)
            )
        if not self.direct:
            end = offset + len(view)
            if end // _WRITEBACK_EVERY != offset // _WRITEBACK_EVERY:
                start_writeback(self.fd, 0, 0)  # 0, 0: everything written so far

    def _write_direct(self, view: memoryview) -> int:
        try:
            count = os.write(self.fd, view)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            # the device wants a larger alignment than ours: go on buffered
            self.finish()
            return os.write(self.fd, view)
        if count % _DIRECT_ALIGNMENT:
            self.finish()  # a short, unaligned write: the rest cannot stay direct
        return count

    def finish(self) -> None:
        """Leave the descriptor buffered, as the caller opened it."""
        if self.direct:
            _set_direct(self.fd, enabled=False)
            self.direct = False


def _read_full(reader: io.FileIO, view: memoryview) -> int:
    """Fill ``view`` unless the file ends first; return the byte count."""
    filled = 0
    while filled < len(view):
        count = reader.readinto(view[filled:])
        if not count:
            break
        filled += count
        if filled % _DIRECT_ALIGNMENT:
            # a short read (the end, or a pipe): were O_DIRECT on, the next read would be
            # unaligned and refused, so any further reading is buffered
            _set_direct(reader.fileno(), enabled=False)
    return filled


def copy_hashing(
    source_fd: int,
    destination_fd: int | None,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int = CHUNK_SIZE,
    read_error: type[Exception] = SourceGone,
    parts: PartHasher | None = None,
) -> tuple[str, int]:
    """Read ``source_fd`` to its end once, hashing it and (if given) writing it out;
    with ``parts``, each part is hashed on its own too, from the same read.

    Returns (lowercase hex SHA-256, bytes read). Raises SourceGone when ``cancel`` is
    set (the camera was undocked); a failed read raises ``read_error``. The caller
    still fsyncs ``destination_fd``; its flags are as they were on return.
    """
    chunk_size = _fitted_chunk_size(source_fd, chunk_size)
    digest = hashlib.sha256()
    buffers = _BUFFERS.take(chunk_size)
    reader = io.FileIO(source_fd, "rb", closefd=False)
    destination = None if destination_fd is None else _Destination(destination_fd, chunk_size)
    try:
        total = _pump(reader, destination, (digest, parts), buffers, cancel, progress,
                      read_error)
    finally:
        if destination is not None:
            destination.finish()
    _BUFFERS.give_back(buffers)  # _pump returns only once its I/O is over
    return digest.hexdigest(), total


def copy_unhashed(
    source_fd: int,
    destination_fd: int,
    progress: ProgressCallback | None = None,
    chunk_size: int = CHUNK_SIZE,
    read_error: type[Exception] = SourceGone,
) -> int:
    """Copy ``source_fd`` to its end into ``destination_fd`` without hashing; the byte
    count. For a copy whose hash would prove nothing: the caller verifies the written
    copy by one read from disk instead (the folder backend, before naming it). The
    source is read with ``O_DIRECT`` where its filesystem allows (its flags change)."""
    chunk_size = _fitted_chunk_size(source_fd, chunk_size)
    # read past the page cache where the source's disk allows it: a buffered read of a
    # file not cached costs as much CPU again as the copy itself (scripts/bench copier)
    if _direct_capable(source_fd, chunk_size):
        _set_direct(source_fd, enabled=True)
    buffers = _BUFFERS.take(chunk_size)
    reader = io.FileIO(source_fd, "rb", closefd=False)
    destination = _Destination(destination_fd, chunk_size)
    try:
        total = _pump(reader, destination, (None, None), buffers, None, progress, read_error)
    finally:
        destination.finish()
    _BUFFERS.give_back(buffers)
    return total


def _pump(
    reader: io.FileIO,
    destination: _Destination | None,
    hashes: tuple[hashlib._Hash | None, PartHasher | None],
    buffers: list[mmap.mmap],
    cancel: threading.Event | None,
    progress: ProgressCallback | None,
    read_error: type[Exception],
) -> int:
    """The three-buffer pipeline; returns the byte count. All I/O is done on return."""
    digest, parts = hashes
    total = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="copy-io") as pool:
        read_next: Future[int] = pool.submit(_read_full, reader, memoryview(buffers[0]))
        write_previous: Future[None] | None = None
        index = 0
        try:
            while True:
                count = _result(read_next, read_error)
                if count == 0:
                    break
                current = memoryview(buffers[index % 3])[:count]
                # the buffer read next was last written two steps ago; that write is done
                read_next = pool.submit(_read_full, reader, memoryview(buffers[(index + 1) % 3]))
                if digest is not None:
                    digest.update(current)
                if parts is not None:
                    parts.update(current)
                if write_previous is not None:
                    write_previous.result()
                if destination is not None:
                    write_previous = pool.submit(destination.write, current, total)
                total += count
                index += 1
                if progress is not None:
                    progress(count)
                if cancel is not None and cancel.is_set():
                    raise SourceGone("the camera went away during the copy")
            if write_previous is not None:
                write_previous.result()
        finally:
            read_next.cancel()
    return total


def _result(future: Future[int], read_error: type[Exception]) -> int:
    try:
        return future.result()
    except OSError as error:
        raise read_error(f"read failed: {error.strerror or error}") from error


def hash_file_from_disk(path: os.PathLike[str] | str, chunk_size: int = CHUNK_SIZE) -> str:
    """SHA-256 of a file as stored on disk, not as remembered by the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        return hash_fd_from_disk(fd, chunk_size)
    finally:
        os.close(fd)


def hash_fd_from_disk(fd: int, chunk_size: int = CHUNK_SIZE) -> str:
    """SHA-256 of the open file ``fd`` (read from its start) as stored on disk."""
    os.lseek(fd, 0, os.SEEK_SET)
    # dropped first in any case: the tail of a direct read may be read buffered
    drop_cache(fd)
    if not (_direct_capable(fd, chunk_size) and _set_direct(fd, enabled=True)):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    sha256, _size = copy_hashing(fd, None, chunk_size=chunk_size, read_error=OSError)
    return sha256
