"""Who holds a clip: lease owner names that say whether their process still lives.

An owner is ``host/pid/start-ticks:boot/thread``. The process start time (from
/proc/PID/stat) tells a live worker from a dead one whose pid was reused, so after a
kill -9 the restarted daemon takes back the dead worker's clips at once instead of
waiting for the lease to run out. Owners on other hosts are trusted until expiry.

The boot is part of it because start ticks count from boot: a dock PC that boots the
same way after a power cut starts its daemon with the same pid at the same tick, and
without the boot the lease of the daemon that died with the power looked alive (seen
on the real-dock rig: clips stuck in ``uploading`` after the reboot).
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bwc_dock.ledger.snapshots import HeartbeatRecord


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


@cache
def _boot() -> str:
    """This boot's id (its first 8 hex digits). The hardened unit hides /proc/sys
    (ProcSubset=pid), so systemd hands the same id over as BWC_DOCK_BOOT_ID=%b."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot_file:
            boot_id = boot_file.read()
    except OSError:
        boot_id = os.environ.get("BWC_DOCK_BOOT_ID", "")
    return boot_id.strip().replace("-", "")[:8]


def _process_identity(pid: int) -> str:
    """The pid's start tick in this boot: different for any other process or boot."""
    return f"{_process_start_ticks(pid)}:{_boot()}"


def current_owner(role: str | None = None) -> str:
    """This thread's lease owner name."""
    thread = role or threading.current_thread().name
    return f"{process_owner_prefix()}{thread}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` ran on this host and that process is gone (in this boot)."""
    parts = owner.split("/", 3)
    if len(parts) != 4 or parts[0] != _host():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    return _process_identity(pid) != parts[2]


def process_owner_prefix() -> str:
    """The prefix every owner name of this process starts with."""
    pid = os.getpid()
    return f"{_host()}/{pid}/{_process_identity(pid)}/"


def heartbeat_alive(beat: HeartbeatRecord | None, heartbeat_seconds: float) -> bool:
    """Whether the daemon that wrote ``beat`` still runs: a fresh beat, and on this host
    its process still there."""
    if beat is None or beat.pid == 0:
        return False
    age = datetime.now(UTC) - beat.beat_at
    fresh = age < timedelta(seconds=max(15.0, 3 * heartbeat_seconds))
    if fresh and beat.host == _host():
        try:
            os.kill(beat.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return fresh
