"""Upload workers give way to copying: their own thread's CPU and I/O priority drop,
the rest of the process (the copiers) keeps its own. Real system calls, read back from
the kernel (/proc and ioprio_get)."""

from __future__ import annotations

import ctypes
import os
import platform
import threading

import pytest

from bwc_dock.priorities import UPLOAD_NICE, yield_to_copying

_IOPRIO_GET = {"x86_64": 252, "aarch64": 31}.get(platform.machine())
_IOPRIO_CLASS_IDLE = 3


def _nice(thread: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread)


def _io_class(thread: int) -> int:
    assert _IOPRIO_GET is not None
    value = ctypes.CDLL(None, use_errno=True).syscall(_IOPRIO_GET, 1, thread)
    assert value >= 0, os.strerror(ctypes.get_errno())
    return int(value) >> 13


@pytest.mark.skipif(_IOPRIO_GET is None, reason="ioprio call numbers: x86_64 and aarch64 only")
def test_an_upload_thread_lowers_only_its_own_priority() -> None:
    """After yield_to_copying, that thread (and one it starts) runs at nice 10 in the
    idle I/O class; the calling thread, as a copier would, keeps its priorities."""
    seen: dict[str, tuple[int, int]] = {}

    def pipeline_thread() -> None:
        me = threading.get_native_id()
        seen["started by it"] = (_nice(me), _io_class(me))

    def uploader() -> None:
        yield_to_copying()
        me = threading.get_native_id()
        seen["upload worker"] = (_nice(me), _io_class(me))
        child = threading.Thread(target=pipeline_thread)
        child.start()
        child.join()

    copier = threading.get_native_id()
    before = (_nice(copier), _io_class(copier))
    worker = threading.Thread(target=uploader)
    worker.start()
    worker.join()
    assert seen["upload worker"] == (max(before[0], UPLOAD_NICE), _IOPRIO_CLASS_IDLE)
    assert seen["started by it"] == seen["upload worker"]
    assert (_nice(copier), _io_class(copier)) == before
