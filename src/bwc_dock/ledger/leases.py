"""Who holds a clip: lease owner names that say whether their process still lives.

An owner is ``host/pid/start-ticks/thread``. The process start time (from
/proc/PID/stat) tells a live worker from a dead one whose pid was reused, so after a
kill -9 the restarted daemon takes back the dead worker's clips at once instead of
waiting for the lease to run out. Owners on other hosts are trusted until expiry.
"""

from __future__ import annotations

import os
import socket
import threading
from functools import cache


@cache
def _host() -> str:
    return socket.gethostname()


def _process_start_ticks(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            content = stat_file.read()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ")"
    fields = content.rpartition(b")")[2].split()
    return fields[19].decode() if len(fields) > 19 else None


def current_owner(role: str | None = None) -> str:
    """This thread's lease owner name."""
    pid = os.getpid()
    thread = role or threading.current_thread().name
    return f"{_host()}/{pid}/{_process_start_ticks(pid)}/{thread}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` ran on this host and that process is gone."""
    parts = owner.split("/", 3)
    if len(parts) != 4 or parts[0] != _host():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    return _process_start_ticks(pid) != parts[2]


def process_owner_prefix() -> str:
    """The prefix every owner name of this process starts with."""
    pid = os.getpid()
    return f"{_host()}/{pid}/{_process_start_ticks(pid)}/"
