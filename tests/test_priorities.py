"""Upload workers give way to copying on the staging disk: their own thread's I/O
priority drops, the rest of the process (the copiers) keeps its own. Real system calls,
read back from the kernel (ioprio_get)."""

from __future__ import annotations

import ctypes
import os
import platform
import threading

import pytest

from bwc_dock.priorities import IOPRIO_CLASS_IDLE, yield_to_copying

_IOPRIO_GET = {"x86_64": 252, "aarch64": 31}.get(platform.machine())


def _io_class(thread: int) -> int:
    assert _IOPRIO_GET is not None
    value = ctypes.CDLL(None, use_errno=True).syscall(_IOPRIO_GET, 1, thread)
    assert value >= 0, os.strerror(ctypes.get_errno())
    return int(value) >> 13


@pytest.mark.skipif(_IOPRIO_GET is None, reason="ioprio call numbers: x86_64 and aarch64 only")
def test_an_upload_thread_lowers_only_its_own_io_priority() -> None:
    """After yield_to_copying, that thread (and one it starts) is in the idle I/O class;
    the calling thread, as a copier would, keeps its class."""
    seen: dict[str, int] = {}

    def pipeline_thread() -> None:
        seen["started by it"] = _io_class(threading.get_native_id())

    def uploader() -> None:
        yield_to_copying()
        seen["upload worker"] = _io_class(threading.get_native_id())
        child = threading.Thread(target=pipeline_thread)
        child.start()
        child.join()

    copier = threading.get_native_id()
    before = _io_class(copier)
    worker = threading.Thread(target=uploader)
    worker.start()
    worker.join()
    assert before != IOPRIO_CLASS_IDLE
    assert seen == {"upload worker": IOPRIO_CLASS_IDLE, "started by it": IOPRIO_CLASS_IDLE}
    assert _io_class(copier) == before
