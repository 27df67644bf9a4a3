"""Read-only mounts of camera volumes, verified against the kernel's own view.

Every camera volume is mounted on a private mount point under ``Config.mount_dir`` with
``ro,nosuid,nodev,noexec``. What ``mount`` was asked for is not trusted: afterwards the
flags are read back from ``/proc/self/mountinfo``. FUSE helpers (``mount.exfat-fuse``
from Debian's exfat-fuse) silently drop ``noexec``: they rebuild the option string they
hand to libfuse and keep only what they know. Such a mount gets its missing flags through
a bind remount (``mount -o remount,bind,...``), which changes only the per-mount flags in
the VFS and so works for any filesystem; if the flags are still wrong after that, the
volume is unmounted and refused.

The module runs ``mount`` as a subprocess: the same call works with the kernel drivers of
a production dock and with the FUSE helpers found by mount's helper lookup.

No name is trusted between a check and its use. The mount root is opened component by
component from ``/`` with ``O_NOFOLLOW`` (no link anywhere on the path, every directory
root's, none writable by others unless sticky), the mount point is made with ``mkdirat``
and opened with ``O_NOFOLLOW`` relative to it, and ``mount(8)`` is handed both the device
and the mount point as ``/proc/self/fd/N`` of descriptors it inherits (``-c``: no
canonicalising back to names). The kernel, and a FUSE helper that opens the device
itself, follow those links to the very inode that was checked. Unmounting takes only
what mountinfo reports directly under the mount root, checked by mount id, and calls
``umount2`` with ``UMOUNT_NOFOLLOW`` relative to the root's descriptor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from bwc_dock.mount_options import FS_TIME_OPTIONS, SAFE_NAME, validate_profile_options
from bwc_dock.mount_paths import (
    DEFAULT_MOUNTINFO,
    MOUNT_POINT_MODE,
    SAFE_FLAGS,
    MountError,
    MountInfo,
    fd_path,
    missing_flags,
    mount_id_of,
    open_block_device,
    open_child_directory,
    open_directory_path,
    read_mountinfo,
    umount2,
)

# the mount paths' names the rest of bwc-dock knows from here
__all__ = [
    "DEFAULT_MOUNTINFO", "FS_TIME_OPTIONS", "SAFE_FLAGS", "SAFE_NAME", "WRITABLE_FLAGS",
    "CommandRunner", "MountError", "MountInfo", "MountedVolume", "Mounter", "VolumeMounter",
    "missing_flags", "mount_helper_for", "open_directory_path", "read_mountinfo", "run_command",
    "validate_profile_options",
]

log = structlog.get_logger(__name__)

WRITABLE_FLAGS = ("rw", "nosuid", "nodev", "noexec")
COMMAND_TIMEOUT_SECONDS = 30.0
_MAX_STACKED_MOUNTS = 16


@dataclass(frozen=True)
class MountedVolume:
    """A camera volume mounted by :class:`Mounter`."""

    device: str
    mount_point: Path
    fs_type: str  # what was asked of mount(8), e.g. "exfat"
    kernel_fs_type: str  # what the kernel reports, e.g. "fuseblk" or "fuse.fusefat"


# a mount(8) call and the descriptors it must inherit (its /proc/self/fd/N arguments)
CommandRunner = Callable[[Sequence[str], Sequence[int]], None]


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


def run_command(arguments: Sequence[str], pass_fds: Sequence[int] = ()) -> None:
    """Run ``arguments`` with ``pass_fds`` inherited; raise :class:`MountError` with its
    stderr when it fails."""
    try:
        completed = subprocess.run(
            list(arguments),
            pass_fds=tuple(pass_fds),
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


def _is_fuse(kernel_fs_type: str) -> bool:
    return kernel_fs_type == "fuse" or kernel_fs_type.startswith(("fuse.", "fuseblk"))


def _names_its_device(kernel_fs_type: str) -> bool:
    """Whether mountinfo's major:minor is the mounted block device's (kernel drivers and
    fuseblk) rather than an anonymous number (a FUSE server that reads the device itself)."""
    return not _is_fuse(kernel_fs_type) or kernel_fs_type == "fuseblk"


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
        if not SAFE_NAME.fullmatch(name):
            raise MountError(f"unsafe mount point name: {name!r}")
        return self.mount_dir / name

    def mount(
        self,
        device: str,
        fs_type: str,
        name: str,
        profile_options: Sequence[str] = (),
        *,
        device_fd: int | None = None,
    ) -> MountedVolume:
        """Mount ``device`` read-only at ``mount_dir/name`` and prove the flags took hold.

        ``device_fd``, when given, is an already checked descriptor of the device (the
        mount helper's); the mount is made from it, never from the name again.
        """
        extra = validate_profile_options(profile_options)
        mount_point = self.mount_point_for(name)
        source = open_block_device(device) if device_fd is None else device_fd
        time_options = FS_TIME_OPTIONS.get(fs_type, ())
        try:
            with self._made_root() as root:
                point = self._prepare_mount_point(root, name)
                entry = self._mount_and_check(
                    root, name, fs_type, source, point, (*time_options, *extra), SAFE_FLAGS
                )
        finally:
            if device_fd is None:
                os.close(source)
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
        self.unmount_point(volume.mount_point, lazy=lazy)
        log.info(
            "mount.unmounted", device=volume.device, mount_point=str(volume.mount_point), lazy=lazy
        )

    def unmount_point(self, mount_point: Path, *, lazy: bool = False) -> None:
        """Unmount what mountinfo reports at ``mount_point`` (directly under mount_dir) and
        remove the directory; nothing there is fine."""
        name = self._own_name(mount_point)
        with self._root(create=False) as root:
            if root is not None:
                self._unmount_name(root, name, lazy=lazy)

    def cleanup_stale_mounts(self) -> list[Path]:
        """Lazily unmount everything under mount_dir (left by a crash) and remove the dirs."""
        with self._root(create=False) as root:
            if root is None:
                return []
            stale = sorted(
                {
                    entry.mount_point
                    for entry in read_mountinfo(self._mountinfo)
                    if entry.mount_point.is_relative_to(self.mount_dir)
                    and entry.mount_point != self.mount_dir
                }
            )
            # a lazy unmount detaches everything beneath, so the top names suffice
            for name in sorted({point.relative_to(self.mount_dir).parts[0] for point in stale}):
                if not SAFE_NAME.fullmatch(name):
                    log.error("mount.stale_not_ours", mount_point=str(self.mount_dir / name))
                    continue
                log.warning("mount.stale_cleaned", mount_point=str(self.mount_dir / name))
                self._unmount_name(root, name, lazy=True)
            self._remove_empty_dirs(root)
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

    def switch_mode(
        self, volume: MountedVolume, *, writable: bool, device_fd: int | None = None
    ) -> MountedVolume:
        """Make ``volume`` writable (to clear it) or read-only again, and prove the flags.

        If going back to read-only fails the volume is unmounted: a camera never stays
        mounted writable. (The mount helper calls this once per step of ``writable``, with
        ``device_fd`` its freshly checked descriptor of the device.)
        """
        if writable:
            switched = self._switch(volume, WRITABLE_FLAGS, device_fd)
            log.info("mount.writable", device=volume.device, mount_point=str(volume.mount_point))
            return switched
        try:
            switched = self._switch(volume, SAFE_FLAGS, device_fd)
        except MountError:
            log.error(
                "mount.read_only_restore_failed",
                device=volume.device,
                mount_point=str(volume.mount_point),
                exc_info=True,
            )
            self._discard(self._own_name(volume.mount_point))
            raise
        log.info("mount.read_only", device=volume.device, mount_point=str(volume.mount_point))
        return switched

    # -- internals -------------------------------------------------------------------------

    @contextmanager
    def _root(self, *, create: bool) -> Iterator[int | None]:
        """A checked descriptor of mount_dir (made 0700 root's), or None if it is absent."""
        try:
            root = open_directory_path(self.mount_dir, create=create)
        except FileNotFoundError:
            if create:
                raise MountError(f"cannot create {self.mount_dir}") from None
            yield None
            return
        try:
            status = os.fstat(root)
            if stat.S_IMODE(status.st_mode) != MOUNT_POINT_MODE:
                # private: other users must not even look at evidence while it is mounted
                os.fchmod(root, MOUNT_POINT_MODE)
            yield root
        finally:
            os.close(root)

    @contextmanager
    def _made_root(self) -> Iterator[int]:
        with self._root(create=True) as root:
            if root is None:  # _root raises first; said for the type checker
                raise MountError(f"cannot create {self.mount_dir}")
            yield root

    def _own_name(self, mount_point: Path) -> str:
        if mount_point.parent != self.mount_dir or not SAFE_NAME.fullmatch(mount_point.name):
            raise MountError(f"refusing to unmount outside {self.mount_dir}: {mount_point}")
        return mount_point.name

    def _mounts_at(self, mount_point: Path) -> list[MountInfo]:
        return [entry for entry in read_mountinfo(self._mountinfo)
                if entry.mount_point == mount_point]

    def _top_mount(self, root: int, name: str) -> MountInfo | None:
        """The mount at ``root/name`` as mountinfo reports it, if the directory entry there
        really is that mount (same mount id; not a link, not a plain directory)."""
        try:
            point = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC,
                            dir_fd=root)
        except OSError:
            return None
        try:
            mount_id = mount_id_of(point)
        finally:
            os.close(point)
        return next((entry for entry in self._mounts_at(self.mount_dir / name)
                     if entry.mount_id == mount_id), None)

    def _prepare_mount_point(self, root: int, name: str) -> int:
        """A descriptor of the empty directory ``root/name``: root's, 0700, no mount on it."""
        mount_point = self.mount_dir / name
        if self._mounts_at(mount_point):
            log.warning("mount.replacing_stale", mount_point=str(mount_point))
            self._unmount_name(root, name, lazy=True, remove=False)
        point = open_child_directory(root, name, mount_point, create=True)
        try:
            status = os.fstat(point)
            if status.st_uid != 0 or stat.S_IMODE(status.st_mode) != MOUNT_POINT_MODE:
                raise MountError(f"mount point {mount_point} is not root's with mode 0700")
            if status.st_dev != os.fstat(root).st_dev:
                raise MountError(f"something is already mounted at {mount_point}")
            if os.listdir(point):  # noqa: PTH208 (a descriptor has no Path)
                raise MountError(f"mount point is not empty: {mount_point}")
        except BaseException:
            os.close(point)
            raise
        return point

    def _mount_and_check(
        self, root: int, name: str, fs_type: str, source: int, point: int,
        extra: Sequence[str], flags: Sequence[str],
    ) -> MountInfo:
        """mount(8) from descriptor ``source`` onto descriptor ``point`` (closed here), then
        prove the flags and that the kernel mounted that very device."""
        try:
            self._mount(fs_type, source, point, (*extra, *flags))
        finally:
            os.close(point)
        try:
            entry = self._enforce_flags(root, name, flags)
            self._check_device_number(entry, source)
        except MountError:
            self._discard(name)
            raise
        return entry

    def _mount(self, fs_type: str, source: int, point: int, options: Sequence[str]) -> None:
        # the safety flags come last: with repeated options mount(8) keeps the last one;
        # -c: mount(8) passes the /proc/self/fd paths on as they are, not as names
        self._run(
            ["mount", "-c", "-t", fs_type, "-o", ",".join(options),
             fd_path(source), fd_path(point)],
            (source, point),
        )

    def _check_device_number(self, entry: MountInfo, source: int) -> None:
        device = os.fstat(source).st_rdev
        number = f"{os.major(device)}:{os.minor(device)}"
        if _names_its_device(entry.fs_type) and entry.device_number != number:
            raise MountError(
                f"{entry.mount_point}: the kernel mounted device {entry.device_number}, "
                f"not {number}; refusing the volume"
            )

    def _enforce_flags(self, root: int, name: str, wanted: Sequence[str]) -> MountInfo:
        mount_point = self.mount_dir / name
        entry = self._top_mount(root, name)
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
        self._remount(root, name, ("remount", "bind", *wanted))
        entry = self._top_mount(root, name)
        if entry is None or missing_flags(entry, wanted):
            raise MountError(
                f"{mount_point}: the kernel does not report {','.join(wanted)} even after a "
                "bind remount; refusing the volume"
            )
        return entry

    def _remount(self, root: int, name: str, options: Sequence[str]) -> None:
        """mount -o remount,... of the mount at ``root/name``, through its descriptor."""
        point = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC,
                        dir_fd=root)
        try:
            self._run(["mount", "-c", "-i", "-o", ",".join(options), fd_path(point)], (point,))
        finally:
            os.close(point)

    def _switch(
        self, volume: MountedVolume, flags: Sequence[str], device_fd: int | None
    ) -> MountedVolume:
        name = self._own_name(volume.mount_point)
        with self._root(create=False) as root:
            entry = None if root is None else self._top_mount(root, name)
            if root is None or entry is None:
                raise MountError(f"{volume.mount_point} is not mounted")
            if _is_fuse(entry.fs_type):
                self._unmount_name(root, name, lazy=False, remove=False)
                source = open_block_device(volume.device) if device_fd is None else device_fd
                try:
                    point = self._prepare_mount_point(root, name)
                    # a FUSE volume is mounted anew: its times must come through unshifted
                    # as at the first mount, or the clearer's mtime check would refuse
                    time_options = FS_TIME_OPTIONS.get(volume.fs_type, ())
                    entry = self._mount_and_check(
                        root, name, volume.fs_type, source, point, time_options, flags
                    )
                finally:
                    if device_fd is None:
                        os.close(source)
            else:
                self._remount(root, name, ("remount", *flags))
                entry = self._enforce_flags(root, name, flags)
        return MountedVolume(volume.device, volume.mount_point, volume.fs_type, entry.fs_type)

    def _unmount_name(self, root: int, name: str, *, lazy: bool, remove: bool = True) -> None:
        """Unmount every mount mountinfo stacks at ``root/name``, each checked by mount id."""
        mount_point = self.mount_dir / name
        for _attempt in range(_MAX_STACKED_MOUNTS):
            if self._top_mount(root, name) is None:
                if self._mounts_at(mount_point):
                    raise MountError(
                        f"{mount_point} is not the mount mountinfo reports there; "
                        "refusing to unmount it"
                    )
                break
            umount2(f"{fd_path(root)}/{name}", mount_point, lazy=lazy)
        else:
            raise MountError(f"{mount_point} is still mounted after {_MAX_STACKED_MOUNTS} unmounts")
        if remove:
            self._remove_point(root, name)

    def _discard(self, name: str) -> None:
        try:
            with self._root(create=False) as root:
                if root is not None:
                    self._unmount_name(root, name, lazy=True)
        except MountError:
            log.error("mount.discard_failed", mount_point=str(self.mount_dir / name),
                      exc_info=True)

    def _remove_point(self, root: int, name: str) -> None:
        try:
            os.rmdir(name, dir_fd=root)
        except FileNotFoundError:
            pass
        except OSError as error:
            # never recurse: a directory with contents here may be a mount we did not see
            log.warning(
                "mount.point_not_removed",
                mount_point=str(self.mount_dir / name),
                error=error.strerror,
            )

    def _remove_empty_dirs(self, root: int) -> None:
        for name in sorted(os.listdir(root)):
            with contextlib.suppress(OSError):
                if SAFE_NAME.fullmatch(name) and stat.S_ISDIR(
                    os.stat(name, dir_fd=root, follow_symlinks=False).st_mode
                ):
                    self._remove_point(root, name)


def mount_helper_for(fs_type: str) -> str | None:
    """The mount(8) helper that will serve ``fs_type`` here, if any (for diagnostics)."""
    for directory in ("/sbin", "/usr/sbin"):
        candidate = Path(directory) / f"mount.{fs_type}"
        if candidate.exists():
            return str(candidate.resolve())
    return shutil.which(f"mount.{fs_type}")
