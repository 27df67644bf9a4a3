"""Camera offload first: the threads that upload give way to the ones that copy.

A station copies several cameras at once while it uploads what is already staged, and
both read the staging disk and share the dock PC's cores. The officers wait for the
cameras; an upload that waits catches up once the cameras are done, and a full staging
area pauses copying, so uploads never wait for good. So each upload worker lowers its
own CPU priority (nice) and I/O priority (the idle class, which the kernel's I/O
schedulers still age, so it is not starved); the threads it starts inherit both. Only
lowering: an unprivileged process may always lower its own priority.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

from bwc_dock.logs import get_logger

log = get_logger(__name__)

UPLOAD_NICE = 10
# ioprio_set(2) has no wrapper in Python's os module: the raw system call, by number
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}.get(platform.machine())
_IOPRIO_WHO_PROCESS = 1  # "process" is a thread id here: the priority is per thread
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13


def yield_to_copying() -> None:
    """Lower this thread's CPU and I/O priority (an upload worker calls it once)."""
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, max(current, UPLOAD_NICE))
    except OSError as error:
        log.warning("priority.cpu_unchanged", error=str(error))
    if _IOPRIO_SET is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    value = _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT
    if libc.syscall(_IOPRIO_SET, _IOPRIO_WHO_PROCESS, thread, value) != 0:
        log.warning("priority.io_unchanged", error=os.strerror(ctypes.get_errno()))
