"""Camera offload first: the threads that upload give way on the staging disk.

A station copies several cameras at once while it uploads what is already staged, and
both read the staging disk. The officers wait for the cameras; an upload that waits
catches up once the cameras are done, and a full staging area pauses copying, so
uploads never wait for good. So each upload worker puts its own disk reads in the idle
I/O class (which the kernel's I/O schedulers still age, so it is not starved); the
threads it starts inherit it. Only lowering: any process may lower its own priority.

Not the CPU priority as well: measured (scripts/bench e2e), uploads at nice 10 waited
for a camera read from memory to finish and the last clip reached central storage
later (1.07-1.09x against 0.85-0.91x of cp + sha256sum).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

from bwc_dock.logs import get_logger

log = get_logger(__name__)

# ioprio_set(2) has no wrapper in Python's os module: the raw system call, by number
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}.get(platform.machine())
_IOPRIO_WHO_PROCESS = 1  # "process" is a thread id here: the priority is per thread
IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13


def yield_to_copying() -> None:
    """Put this thread's disk I/O in the idle class (an upload worker calls it once)."""
    if _IOPRIO_SET is None:
        return
    thread = threading.get_native_id()
    libc = ctypes.CDLL(None, use_errno=True)
    value = IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT
    if libc.syscall(_IOPRIO_SET, _IOPRIO_WHO_PROCESS, thread, value) != 0:
        log.warning("priority.io_unchanged", error=os.strerror(ctypes.get_errno()))
