"""The two clocks behind every recorded time: the dock PC's own and the docked camera's.

The dock's clock is asked of the kernel with adjtimex(2), which needs no daemon and no
privilege and says what every time-sync daemon (systemd-timesyncd, chrony, ntpd) has
told the kernel: STA_UNSYNC is cleared only while one of them keeps the clock
disciplined, and esterror/maxerror are its error bounds. Under the service's seccomp
filter the call is refused, so the daemon then asks the time-sync daemon's own record
(timesyncd's flag file, ``chronyc tracking``). When nothing answers the state is
unknown, never assumed synchronised.

The camera's clock is read through the profile's ``clock_command`` or its ``clock_file``
on the volume (bounded, no links followed). Both are text from a hostile device: one ISO
8601 time, else the offset is unknown (``None``), never 0.

A clock command runs with the least privilege this process can hand out: through
``setpriv`` with no capabilities of any kind and no_new_privs, a clean environment, no
inherited descriptors, its own session (killed whole at the timeout) and a bounded output.
It runs as ``nobody`` when bwc-dock may change identity (a hand-run ``ingest`` as root);
under bwc-dock.service, which holds no capability and so cannot, it runs as the daemon
itself (uid 0 without capabilities) inside the service's sandbox.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pwd
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from bwc_dock.config import CameraProfile
from bwc_dock.found import display_path
from bwc_dock.scanner import parent_directory

log = structlog.get_logger(__name__)

TIMESYNC_DIR = Path("/run/systemd/timesync")  # systemd-timesyncd's runtime state
STA_UNSYNC = 0x0040  # <linux/timex.h>: the clock is not synchronised
TIME_ERROR = 5  # adjtimex's return value when the clock is not synchronised
MAX_CLOCK_TEXT = 256  # bytes of a camera's clock reading kept; more is refused
UNPRIVILEGED_USER = "nobody"  # who runs a camera's clock command when bwc-dock may setuid
SETPRIV = "/usr/bin/setpriv"  # util-linux, essential on Debian
# no capability in any set, and no gaining one through a set-uid or file-capability program
SETPRIV_ARGUMENTS = ("--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all",
                     "--bounding-set=-all", "--")
CAP_SETGID, CAP_SETUID = 6, 7  # <linux/capability.h>
# where bwc-dock.service cannot see a program (ProtectHome=, PrivateTmp=)
HIDDEN_FROM_SERVICE = ("/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/")
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (modes 0: read only)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),  # microseconds
        ("esterror", ctypes.c_long),  # microseconds
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@dataclass(frozen=True)
class KernelClockState:
    """What adjtimex(2) returned: its clock state, the status bits and the error bounds."""

    state: int
    status: int
    maxerror_us: int
    esterror_us: int


@dataclass(frozen=True)
class DockClock:
    synchronized: bool | None  # None: could not be asked
    error_seconds: float | None  # the kernel's estimated error, when synchronised
    source: str = "adjtimex"


def kernel_clock_state() -> KernelClockState | None:
    """adjtimex(2) with modes 0 (a read, no privilege needed); None when it fails."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        timex = Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError) as error:
        log.warning("clock.dock_unreadable", error=str(error))
        return None
    if state < 0:
        log.warning("clock.dock_unreadable", error=os.strerror(ctypes.get_errno()))
        return None
    return KernelClockState(state, timex.status, timex.maxerror, timex.esterror)


def dock_clock_from(kernel: KernelClockState | None) -> DockClock:
    """Synchronised unless the kernel says STA_UNSYNC or TIME_ERROR; the estimated error
    (esterror) only for a synchronised clock, where it means something."""
    if kernel is None:
        return DockClock(None, None)
    unsynchronized = bool(kernel.status & STA_UNSYNC) or kernel.state == TIME_ERROR
    if unsynchronized:
        return DockClock(False, None)
    return DockClock(True, kernel.esterror_us / 1e6)


def read_dock_clock() -> DockClock:
    """The kernel's word (adjtimex); where the service's seccomp filter refuses it
    (ProtectClock= denies the whole @clock group, read-only calls included), what the
    time-sync daemon itself publishes."""
    kernel = kernel_clock_state()
    if kernel is not None:
        return dock_clock_from(kernel)
    return dock_clock_from_services()


def dock_clock_from_services(
    timesync_dir: Path = TIMESYNC_DIR, chronyc: str | None = None
) -> DockClock:
    """systemd-timesyncd's flag file (created once it has synchronised the clock since
    boot), else ``chronyc tracking``; unknown when neither runs here."""
    if (timesync_dir / "synchronized").exists():
        return DockClock(True, None, "timesyncd")
    chronyc = chronyc or shutil.which("chronyc")
    if chronyc:
        reading = _chrony_tracking(chronyc)
        if reading is not None:
            return reading
    if timesync_dir.is_dir():  # timesyncd runs but has not synchronised yet
        return DockClock(False, None, "timesyncd")
    return DockClock(None, None, "none")


def _chrony_tracking(chronyc: str) -> DockClock | None:
    """``chronyc -c tracking`` (CSV): the leap status is the last field, "Not
    synchronised" when chronyd has no source; the error bound is the root dispersion
    plus half the root delay, as chrony computes its own maximum error."""
    try:
        output = _run_bounded((chronyc, "-n", "-c", "tracking"), 5.0, {"PATH": "/usr/bin:/bin"})
        fields = output.decode("ascii").strip().split(",")
        root_delay, root_dispersion = float(fields[10]), float(fields[11])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as error:
        log.warning("clock.chrony_unreadable", error=str(error))
        return None
    if fields[-1].strip().lower().startswith("not sync"):
        return DockClock(False, None, "chrony")
    return DockClock(True, round(root_dispersion + root_delay / 2, 6), "chrony")


# -- the camera's clock ---------------------------------------------------------------


@dataclass(frozen=True)
class CameraClock:
    """The camera's clock minus the dock's, in seconds, and how it was read."""

    offset_seconds: float | None  # None: not measured (never 0 for unknown)
    source: str | None  # "command" or "file"; None when the profile has neither
    reading: str | None = None  # the camera's text, escaped, for the audit log
    problem: str | None = None  # why a reading failed


def parse_camera_time(text: str, profile: CameraProfile) -> datetime:
    """One ISO 8601 time; without an offset it is in the zone the camera's clock keeps."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=profile.zone or UTC)
    return moment


def read_camera_clock(
    profile: CameraProfile, volume_root: Path, environment: dict[str, str]
) -> CameraClock:
    """The camera's clock offset through the profile's command or file; unknown if neither."""
    if profile.clock_command:
        return _measured(profile, "command", lambda: _run_bounded(
            profile.clock_command or (), profile.clock_command_timeout_seconds, environment
        ))
    if profile.clock_file:
        return _measured(profile, "file", lambda: _read_clock_file(volume_root, profile))
    return CameraClock(None, None)


def _measured(profile: CameraProfile, source: str, read: Callable[[], bytes]) -> CameraClock:
    try:
        before = time.time()
        raw = read()
        dock_now = (before + time.time()) / 2  # the reading is somewhere in between
        text = raw.decode("ascii")
        camera_now = parse_camera_time(text, profile)
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        return CameraClock(None, source, problem=str(error) or type(error).__name__)
    offset = round(camera_now.timestamp() - dock_now, 3)
    return CameraClock(offset, source, display_path(raw.strip()))


def _read_clock_file(volume_root: Path, profile: CameraProfile) -> bytes:
    path = (profile.clock_file or "").strip("/").encode()
    with parent_directory(volume_root, path) as (directory_fd, name):
        file_fd = os.open(name, _FILE_FLAGS, dir_fd=directory_fd)
    try:
        content = os.read(file_fd, MAX_CLOCK_TEXT + 1)
    finally:
        os.close(file_fd)
    if len(content) > MAX_CLOCK_TEXT:
        raise ValueError(f"clock file longer than {MAX_CLOCK_TEXT} bytes")
    return content


def _run_bounded(command: tuple[str, ...], timeout: float, environment: dict[str, str]) -> bytes:
    """Run ``command`` with least privilege; its first bytes of output, bounded."""
    if not os.access(SETPRIV, os.X_OK):
        raise OSError(f"{SETPRIV} (util-linux) is missing: clock commands are not run")
    user, group, extra_groups = _unprivileged()
    process = subprocess.Popen(
        (SETPRIV, *SETPRIV_ARGUMENTS, *command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environment,
        close_fds=True,
        start_new_session=True,
        user=user,
        group=group,
        extra_groups=extra_groups,
    )
    try:
        assert process.stdout is not None
        output = _read_at_most(process.stdout.fileno(), time.monotonic() + timeout, command[0])
        process.wait(timeout=max(0.1, timeout))
    finally:
        _kill_session(process)
    if process.returncode != 0:
        raise subprocess.SubprocessError(f"{command[0]} exited {process.returncode}")
    return output


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    """Kill what the command left running, its own children too (its session's group)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _read_at_most(fd: int, deadline: float, program: str) -> bytes:
    """What a command prints, until it closes its output; more than MAX_CLOCK_TEXT bytes
    or past the deadline is an error (the caller kills it)."""
    output = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise subprocess.TimeoutExpired(program, 0)
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, MAX_CLOCK_TEXT + 1 - len(output))
        if not chunk:
            return output
        output += chunk
        if len(output) > MAX_CLOCK_TEXT:
            raise ValueError(f"{program} printed more than {MAX_CLOCK_TEXT} bytes")


def _unprivileged() -> tuple[int | None, int | None, list[int] | None]:
    """(user, group, extra groups) to run as: ``nobody`` with no extra groups when this
    process may change identity (root with CAP_SETUID and CAP_SETGID), else unchanged
    (None): an unprivileged user, or bwc-dock.service's uid 0 without capabilities."""
    if not can_change_identity():
        return None, None, None
    user = pwd.getpwnam(UNPRIVILEGED_USER)
    return user.pw_uid, user.pw_gid, []


def can_change_identity() -> bool:
    """Whether this process is root holding CAP_SETUID and CAP_SETGID (effective)."""
    if os.geteuid() != 0:
        return False
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
            wanted = (1 << CAP_SETUID) | (1 << CAP_SETGID)
            return effective & wanted == wanted
    return False


def clock_command_risks(profiles: Sequence[CameraProfile], path: str) -> list[str]:
    """Why a profile's clock command or clock set command cannot run as configured:
    no setpriv, a program not found on ``path`` or not executable, or one that
    bwc-dock.service cannot see."""
    risks: list[str] = []
    for profile in profiles:
        for key in ("clock_command", "clock_set_command"):
            command: tuple[str, ...] | None = getattr(profile, key)
            if command:
                risks.extend(f"camera {profile.name!r} {key}: {risk}"
                             for risk in _program_risks(command[0], path))
    if risks and not os.access(SETPRIV, os.X_OK):
        risks.append(f"{SETPRIV} (util-linux) is missing: no clock command runs")
    return risks


def _program_risks(program: str, path: str) -> list[str]:
    found = shutil.which(program, path=path)
    if found is None:
        return [f"{program!r} is not an executable file (PATH {path})"]
    risks = []
    resolved = os.path.realpath(found)
    if resolved.startswith(HIDDEN_FROM_SERVICE):
        risks.append(f"{found} is hidden from bwc-dock.service (ProtectHome=, PrivateTmp=)")
    if not Path(resolved).stat().st_mode & 0o001:
        risks.append(f"{found} is not executable by {UNPRIVILEGED_USER}, who runs it in a "
                     "hand-run ingest as root")
    return risks


def set_camera_clock(
    profile: CameraProfile, volume_root: Path, environment: dict[str, str]
) -> tuple[CameraClock, CameraClock, str | None]:
    """Run the profile's clock_set_command; the clock read before and after, and why
    setting failed (None: it ran and exited 0)."""
    before = read_camera_clock(profile, volume_root, environment)
    problem = None
    try:
        _run_bounded(
            profile.clock_set_command or (), profile.clock_command_timeout_seconds, environment
        )
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        problem = str(error) or type(error).__name__
    after = read_camera_clock(profile, volume_root, environment)
    return before, after, problem
