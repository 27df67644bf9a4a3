"""Moving bytes while hashing them: one read feeds SHA-256 and the write.

A three-stage pipeline keeps the camera link, the hash and the disk busy at once:
a reader thread fills the next buffer while this thread hashes the current one and
a writer thread writes the previous one (file I/O and ``hashlib`` both release the
GIL). Memory is three fixed buffers, whatever the file size. Written data is pushed
to disk as it goes (``sync_file_range``), so the final fsync waits only for the tail.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from bwc_dock.errors import SourceGone

CHUNK_SIZE = 4 * 1024 * 1024
_WRITEBACK_EVERY = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2

ProgressCallback = Callable[[int], None]


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting for it."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def drop_cache(fd: int) -> None:
    """Forget a file's (clean) cached pages, so the next read comes from the disk."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _read_full(reader: io.FileIO, view: memoryview) -> int:
    """Fill ``view`` unless the file ends first; return the byte count."""
    filled = 0
    while filled < len(view):
        count = reader.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    written = 0
    while written < len(view):
        written += os.write(fd, view[written:])
    end = offset + len(view)
    if end // _WRITEBACK_EVERY != offset // _WRITEBACK_EVERY:
        start_writeback(fd, 0, 0)  # 0, 0: everything written so far


def copy_hashing(
    source_fd: int,
    destination_fd: int | None,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int = CHUNK_SIZE,
    read_error: type[Exception] = SourceGone,
) -> tuple[str, int]:
    """Read ``source_fd`` to its end once, hashing it and (if given) writing it out.

    Returns (lowercase hex SHA-256, bytes read). Raises SourceGone when ``cancel`` is
    set (the camera was undocked); a failed read raises ``read_error``.
    """
    digest = hashlib.sha256()
    buffers = [bytearray(chunk_size) for _ in range(3)]
    reader = io.FileIO(source_fd, "rb", closefd=False)
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
                digest.update(current)
                if write_previous is not None:
                    write_previous.result()
                if destination_fd is not None:
                    write_previous = pool.submit(_write_all, destination_fd, current, total)
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
    return digest.hexdigest(), total


def _result(future: Future[int], read_error: type[Exception]) -> int:
    try:
        return future.result()
    except OSError as error:
        raise read_error(f"read failed: {error.strerror or error}") from error


def hash_file_from_disk(path: os.PathLike[str] | str, chunk_size: int = CHUNK_SIZE) -> str:
    """SHA-256 of a file as stored on disk, not as remembered by the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        drop_cache(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        sha256, _size = copy_hashing(fd, None, chunk_size=chunk_size, read_error=OSError)
        return sha256
    finally:
        os.close(fd)


def fsync_directory(directory: os.PathLike[str] | str) -> None:
    """Make a rename or a new name in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
