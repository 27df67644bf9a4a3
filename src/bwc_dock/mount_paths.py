"""The kernel's view of mounts, and paths to them that no link can redirect.

``/proc/self/mountinfo`` is what bwc-dock believes about a mount, never what ``mount`` was
asked for. A directory on the way to a mount is opened one component at a time from ``/``
with ``O_NOFOLLOW`` and checked as it is opened; a device node is opened once with
``O_PATH|O_NOFOLLOW``; unmounting goes through ``umount2`` with ``UMOUNT_NOFOLLOW``. These
are the parts :mod:`bwc_dock.mounting` and the mount helper build on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bwc_dock.errors import BwcDockError

SAFE_FLAGS = ("ro", "nosuid", "nodev", "noexec")
DEFAULT_MOUNTINFO = Path("/proc/self/mountinfo")
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MOUNT_POINT_MODE = 0o700
_MNT_DETACH = 2
_UMOUNT_NOFOLLOW = 8
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


def fd_path(descriptor: int) -> str:
    return f"/proc/self/fd/{descriptor}"


def check_trusted_directory(descriptor: int, path: Path) -> None:
    """A directory on the way to the mount root: root's, and no one else may change its
    entries (writable by others only with the sticky bit, as /tmp)."""
    status = os.fstat(descriptor)
    if status.st_uid != 0:
        raise MountError(f"{path} is not owned by root (uid {status.st_uid}): refusing it")
    if status.st_mode & 0o022 and not status.st_mode & stat.S_ISVTX:
        raise MountError(f"{path} is writable by others: refusing it")


def open_directory_path(path: Path, *, create: bool = False) -> int:
    """A descriptor of directory ``path``, walked from / one component at a time with
    ``O_NOFOLLOW``: no link anywhere on the path, every directory checked as it is opened.
    With ``create``, missing components are made (mode 0700)."""
    if not path.is_absolute() or any(part in {".", ".."} for part in path.parts):
        raise MountError(f"not a plain absolute path: {str(path)!r}")
    descriptor = os.open("/", DIRECTORY_FLAGS)
    walked = Path("/")
    try:
        check_trusted_directory(descriptor, walked)
        for part in path.parts[1:]:
            walked = walked / part
            child = open_child_directory(descriptor, part, walked, create=create)
            os.close(descriptor)
            descriptor = child
            check_trusted_directory(descriptor, walked)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def open_child_directory(parent: int, name: str, path: Path, *, create: bool) -> int:
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, MOUNT_POINT_MODE, dir_fd=parent)
    try:
        return os.open(name, DIRECTORY_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        raise
    except OSError as error:  # ELOOP, ENOTDIR: a link or not a directory
        raise MountError(f"{path} is a link or not a directory: refusing it") from error


def open_block_device(device: str) -> int:
    """An ``O_PATH`` descriptor of the block device node ``device`` (not a link to one)."""
    try:
        descriptor = os.open(device, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise MountError(f"{device}: {error.strerror}") from error
    if not stat.S_ISBLK(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise MountError(f"{device} is not a block device")
    return descriptor


def mount_id_of(descriptor: int) -> int:
    """The id of the mount ``descriptor`` lies on, as mountinfo numbers mounts."""
    for line in Path(f"/proc/self/fdinfo/{descriptor}").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "mnt_id":
            return int(value)
    raise MountError(f"no mnt_id in /proc/self/fdinfo/{descriptor}")


_libc = ctypes.CDLL(None, use_errno=True)


def umount2(target: str, shown: Path, *, lazy: bool) -> None:
    """umount2(2) of ``target`` (never through a link in its last component)."""
    flags = _UMOUNT_NOFOLLOW | (_MNT_DETACH if lazy else 0)
    if _libc.umount2(target.encode(), flags) != 0:
        code = ctypes.get_errno()
        raise MountError(f"umount {shown} failed: {os.strerror(code)}")
