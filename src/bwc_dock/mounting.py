"""Read-only mounts of camera volumes, verified against the kernel's own view.

Every camera volume is mounted on a private mount point under ``Config.mount_dir`` with
``ro,nosuid,nodev,noexec``. What ``mount`` was asked for is not trusted: afterwards the
flags are read back from ``/proc/self/mountinfo``. FUSE helpers (``mount.exfat-fuse``
from Debian's exfat-fuse) silently drop ``noexec``: they rebuild the option string they
hand to libfuse and keep only what they know. Such a mount gets its missing flags through
a bind remount (``mount -o remount,bind,...``), which changes only the per-mount flags in
the VFS and so works for any filesystem; if the flags are still wrong after that, the
volume is unmounted and refused.

The module runs ``mount``/``umount`` as subprocesses: the same call works with the kernel
drivers of a production dock and with the FUSE helpers found by mount's helper lookup.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from bwc_dock.errors import BwcDockError

log = structlog.get_logger(__name__)

SAFE_FLAGS = ("ro", "nosuid", "nodev", "noexec")
WRITABLE_FLAGS = ("rw", "nosuid", "nodev", "noexec")
DEFAULT_MOUNTINFO = Path("/proc/self/mountinfo")
COMMAND_TIMEOUT_SECONDS = 30.0
_MAX_STACKED_MOUNTS = 16

# Options a profile may never add: each would undo a safety flag or change what is mounted.
_FORBIDDEN_OPTIONS = frozenset(
    {
        "rw",
        "exec",
        "suid",
        "dev",
        "defaults",
        "user",
        "users",
        "owner",
        "group",
        "remount",
        "bind",
        "rbind",
        "move",
        "loop",
        "rw+",
        "nonempty",
        # the time options below are the product's, not a profile's: a camera's times
        # are interpreted in its profile's zone, which needs the raw values
        "tz",
        "time_offset",
        "sys_tz",
    }
)
# Filesystem options that make the kernel hand over a camera's timestamps unshifted.
# FAT stores local wall-clock time with no zone. Without an option the vfat driver shifts
# it by the kernel's idea of local time (sys_tz, set by whoever booted the dock), silently
# and differently on each dock; with tz=UTC it does no shifting, so stat returns the raw
# FAT wall clock as if it were a UTC epoch, and the scanner re-reads that wall clock in
# the profile's zone. exFAT needs nothing: the kernel driver shifts a timestamp that has
# no UTC-offset field only by its time_offset option (default 0, kept: a profile cannot
# set it), and one that has the field it converts to true UTC itself (see scanner).
FS_TIME_OPTIONS: dict[str, tuple[str, ...]] = {"vfat": ("tz=UTC",)}
_OPTION_SHAPE = re.compile(r"^[A-Za-z0-9_.+-]+(=[A-Za-z0-9_.:/+-]+)?$")
_MOUNT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class MountError(BwcDockError):
    """A camera volume could not be mounted, verified or unmounted."""


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo, the parts bwc-dock looks at."""

    mount_id: int
    mount_point: Path
    mount_options: frozenset[str]  # per-mount flags (ro, nosuid, nodev, noexec, ...)
    fs_type: str
    source: str
    super_options: frozenset[str]  # filesystem-level options
    device_number: str = ""  # "major:minor" of the filesystem (a block device's, or 0:N)


@dataclass(frozen=True)
class MountedVolume:
    """A camera volume mounted by :class:`Mounter`."""

    device: str
    mount_point: Path
    fs_type: str  # what was asked of mount(8), e.g. "exfat"
    kernel_fs_type: str  # what the kernel reports, e.g. "fuseblk" or "fuse.fusefat"


CommandRunner = Callable[[Sequence[str]], None]


class VolumeMounter(Protocol):
    """What the camera bays need from a mounter: :class:`Mounter` mounts directly (tests,
    development machines), ``mount_protocol.HelperMounter`` asks the privileged mount
    helper (the installed service, which holds no privilege to mount)."""

    mount_dir: Path

    def mount(
        self, device: str, fs_type: str, name: str, profile_options: Sequence[str] = ()
    ) -> MountedVolume: ...

    def unmount(self, volume: MountedVolume, *, lazy: bool = False) -> None: ...

    def unmount_point(self, mount_point: Path, *, lazy: bool = False) -> None: ...

    def cleanup_stale_mounts(self) -> list[Path]: ...

    def writable(self, volume: MountedVolume) -> contextlib.AbstractContextManager[MountedVolume]:
        ...


def run_command(arguments: Sequence[str]) -> None:
    """Run ``arguments``; raise :class:`MountError` with its stderr when it fails."""
    try:
        completed = subprocess.run(
            list(arguments),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise MountError(f"{arguments[0]} timed out after {error.timeout:.0f}s") from error
    except OSError as error:
        raise MountError(f"cannot run {arguments[0]}: {error.strerror}") from error
    if completed.returncode != 0:
        detail = completed.stderr.strip().splitlines()
        reason = detail[0] if detail else f"exit status {completed.returncode}"
        raise MountError(f"{' '.join(arguments[:2])} failed: {reason}")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo_line(line: str) -> MountInfo:
    fields = line.split()
    separator = fields.index("-", 6)
    return MountInfo(
        mount_id=int(fields[0]),
        mount_point=Path(_unescape(fields[4])),
        mount_options=frozenset(fields[5].split(",")),
        fs_type=fields[separator + 1],
        source=_unescape(fields[separator + 2]),
        super_options=frozenset(fields[separator + 3].split(",")),
        device_number=fields[2],
    )


def read_mountinfo(path: Path = DEFAULT_MOUNTINFO) -> list[MountInfo]:
    return [parse_mountinfo_line(line) for line in path.read_text().splitlines() if line]


def find_mount(mount_point: Path, path: Path = DEFAULT_MOUNTINFO) -> MountInfo | None:
    """The mount visible at ``mount_point`` (the last one stacked there), if any."""
    found = [entry for entry in read_mountinfo(path) if entry.mount_point == mount_point]
    return found[-1] if found else None


def missing_flags(entry: MountInfo, wanted: Sequence[str] = SAFE_FLAGS) -> list[str]:
    """The wanted per-mount flags the kernel does not report for ``entry``."""
    return [flag for flag in wanted if flag not in entry.mount_options]


def validate_profile_options(options: Sequence[str]) -> tuple[str, ...]:
    """Refuse profile mount options that would weaken the mount or inject syntax."""
    for option in options:
        name = option.split("=", 1)[0].lower()
        if name in _FORBIDDEN_OPTIONS or name.startswith("x-") or not _OPTION_SHAPE.match(option):
            raise MountError(f"mount option not allowed in a camera profile: {option!r}")
    return tuple(options)


def _is_fuse(kernel_fs_type: str) -> bool:
    return kernel_fs_type == "fuse" or kernel_fs_type.startswith(("fuse.", "fuseblk"))


class Mounter:
    """Mounts camera volumes read-only under one private directory, and cleans up after them."""

    def __init__(
        self,
        mount_dir: Path,
        runner: CommandRunner = run_command,
        mountinfo: Path = DEFAULT_MOUNTINFO,
    ) -> None:
        self.mount_dir = mount_dir
        self._run = runner
        self._mountinfo = mountinfo

    def mount_point_for(self, name: str) -> Path:
        if not _MOUNT_NAME.match(name) or name in {".", ".."}:
            raise MountError(f"unsafe mount point name: {name!r}")
        return self.mount_dir / name

    def mount(
        self, device: str, fs_type: str, name: str, profile_options: Sequence[str] = ()
    ) -> MountedVolume:
        """Mount ``device`` read-only at ``mount_dir/name`` and prove the flags took hold."""
        extra = validate_profile_options(profile_options)
        mount_point = self._prepare_mount_point(name)
        time_options = FS_TIME_OPTIONS.get(fs_type, ())
        self._mount(device, fs_type, mount_point, (*time_options, *extra, *SAFE_FLAGS))
        try:
            entry = self._enforce_flags(mount_point, SAFE_FLAGS)
        except MountError:
            self._discard(mount_point)
            raise
        log.info(
            "mount.mounted",
            device=device,
            mount_point=str(mount_point),
            fs_type=fs_type,
            kernel_fs_type=entry.fs_type,
        )
        return MountedVolume(device, mount_point, fs_type, entry.fs_type)

    def unmount(self, volume: MountedVolume, *, lazy: bool = False) -> None:
        """Unmount ``volume`` (lazily when the device is gone) and remove its mount point."""
        self._unmount_point(volume.mount_point, lazy=lazy)
        log.info(
            "mount.unmounted", device=volume.device, mount_point=str(volume.mount_point), lazy=lazy
        )

    def unmount_point(self, mount_point: Path, *, lazy: bool = False) -> None:
        """Unmount whatever is at ``mount_point`` under mount_dir; nothing there is fine."""
        self._unmount_point(mount_point, lazy=lazy)

    def cleanup_stale_mounts(self) -> list[Path]:
        """Lazily unmount everything under mount_dir (left by a crash) and remove the dirs."""
        if not self.mount_dir.exists():
            return []
        stale = sorted(
            {
                entry.mount_point
                for entry in read_mountinfo(self._mountinfo)
                if entry.mount_point.is_relative_to(self.mount_dir)
                and entry.mount_point != self.mount_dir
            },
            key=lambda point: len(point.parts),
            reverse=True,  # innermost first
        )
        for mount_point in stale:
            log.warning("mount.stale_cleaned", mount_point=str(mount_point))
            self._unmount_point(mount_point, lazy=True)
        self._remove_empty_dirs()
        return stale

    @contextmanager
    def writable(self, volume: MountedVolume) -> Iterator[MountedVolume]:
        """Make ``volume`` writable for the body of the ``with`` only, then read-only again.

        A kernel filesystem is remounted in place. A FUSE helper cannot be switched: its
        daemon opened the device read-only, so the volume is unmounted and mounted again
        read-write, and the other way round afterwards. If going back to read-only fails
        the volume is unmounted: a camera never stays mounted writable.
        """
        writable = self.switch_mode(volume, writable=True)
        try:
            yield writable
        finally:
            self.switch_mode(volume, writable=False)

    def switch_mode(self, volume: MountedVolume, *, writable: bool) -> MountedVolume:
        """Make ``volume`` writable (to clear it) or read-only again, and prove the flags.

        If going back to read-only fails the volume is unmounted: a camera never stays
        mounted writable. (The mount helper calls this once per step of ``writable``.)
        """
        if writable:
            switched = self._switch(volume, WRITABLE_FLAGS)
            log.info("mount.writable", device=volume.device, mount_point=str(volume.mount_point))
            return switched
        try:
            switched = self._switch(volume, SAFE_FLAGS)
        except MountError:
            log.error(
                "mount.read_only_restore_failed",
                device=volume.device,
                mount_point=str(volume.mount_point),
                exc_info=True,
            )
            self._discard(volume.mount_point)
            raise
        log.info("mount.read_only", device=volume.device, mount_point=str(volume.mount_point))
        return switched

    # -- internals -------------------------------------------------------------------------

    def _prepare_mount_point(self, name: str) -> Path:
        mount_point = self.mount_point_for(name)
        self.mount_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # private: other users must not even look at evidence while it is mounted
        self.mount_dir.chmod(0o700)
        if find_mount(mount_point, self._mountinfo) is not None:
            log.warning("mount.replacing_stale", mount_point=str(mount_point))
            self._unmount_point(mount_point, lazy=True)
        mount_point.mkdir(mode=0o700, exist_ok=True)
        if any(mount_point.iterdir()):
            raise MountError(f"mount point is not empty: {mount_point}")
        return mount_point

    def _mount(self, device: str, fs_type: str, mount_point: Path, options: Sequence[str]) -> None:
        # the safety flags come last: with repeated options mount(8) keeps the last one
        self._run(["mount", "-t", fs_type, "-o", ",".join(options), device, str(mount_point)])

    def _enforce_flags(self, mount_point: Path, wanted: Sequence[str]) -> MountInfo:
        entry = find_mount(mount_point, self._mountinfo)
        if entry is None:
            raise MountError(f"mount reported success but nothing is mounted at {mount_point}")
        missing = missing_flags(entry, wanted)
        if not missing:
            return entry
        # FUSE helpers drop noexec (see the module docstring): set the per-mount flags
        # directly. -i keeps mount(8) from handing the remount to a FUSE helper.
        log.info(
            "mount.flags_enforced",
            mount_point=str(mount_point),
            missing=missing,
            kernel_fs_type=entry.fs_type,
        )
        self._run(["mount", "-i", "-o", ",".join(("remount", "bind", *wanted)), str(mount_point)])
        entry = find_mount(mount_point, self._mountinfo)
        if entry is None or missing_flags(entry, wanted):
            raise MountError(
                f"{mount_point}: the kernel does not report {','.join(wanted)} even after a "
                "bind remount; refusing the volume"
            )
        return entry

    def _switch(self, volume: MountedVolume, flags: Sequence[str]) -> MountedVolume:
        entry = find_mount(volume.mount_point, self._mountinfo)
        if entry is None:
            raise MountError(f"{volume.mount_point} is not mounted")
        if _is_fuse(entry.fs_type):
            self._unmount_point(volume.mount_point, lazy=False, remove=False)
            self._mount(volume.device, volume.fs_type, volume.mount_point, flags)
        else:
            self._run(["mount", "-i", "-o", ",".join(("remount", *flags)), str(volume.mount_point)])
        entry = self._enforce_flags(volume.mount_point, flags)
        return MountedVolume(volume.device, volume.mount_point, volume.fs_type, entry.fs_type)

    def _unmount_point(self, mount_point: Path, *, lazy: bool, remove: bool = True) -> None:
        if not mount_point.is_relative_to(self.mount_dir):
            raise MountError(f"refusing to unmount outside {self.mount_dir}: {mount_point}")
        # a point can carry several stacked mounts (e.g. a stale one under a new one)
        for _attempt in range(_MAX_STACKED_MOUNTS):
            if find_mount(mount_point, self._mountinfo) is None:
                break
            self._run(["umount", *(["-l"] if lazy else []), str(mount_point)])
        else:
            raise MountError(f"{mount_point} is still mounted after {_MAX_STACKED_MOUNTS} unmounts")
        if remove:
            self._remove_point(mount_point)

    def _discard(self, mount_point: Path) -> None:
        try:
            self._unmount_point(mount_point, lazy=True)
        except MountError:
            log.error("mount.discard_failed", mount_point=str(mount_point), exc_info=True)

    @staticmethod
    def _remove_point(mount_point: Path) -> None:
        try:
            mount_point.rmdir()
        except FileNotFoundError:
            pass
        except OSError as error:
            # never recurse: a directory with contents here may be a mount we did not see
            log.warning(
                "mount.point_not_removed", mount_point=str(mount_point), error=error.strerror
            )

    def _remove_empty_dirs(self) -> None:
        for child in sorted(self.mount_dir.iterdir()):
            if child.is_dir() and not child.is_symlink():
                self._remove_point(child)


def mount_helper_for(fs_type: str) -> str | None:
    """The mount(8) helper that will serve ``fs_type`` here, if any (for diagnostics)."""
    for directory in ("/sbin", "/usr/sbin"):
        candidate = Path(directory) / f"mount.{fs_type}"
        if candidate.exists():
            return str(candidate.resolve())
    return shutil.which(f"mount.{fs_type}")
