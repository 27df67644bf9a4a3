"""bwc-dock-mount: the small privileged part that mounts camera volumes for the daemon.

Runs as root with CAP_SYS_ADMIN (bwc-dock-mount.service, socket-activated on a root-only
unix socket) and nothing else: no network, and no code that reads camera content. The
daemon, which parses camera files and talks to the network, holds no privilege to mount
(docs/design.md, "Trust boundaries"). The protocol is in ``mount_protocol.py``.

It accepts only narrow requests, and checks each before it acts:

- the peer is root or an allowed uid (SO_PEERCRED);
- the device is named ``/dev/<kernel name>`` and nothing else; the helper reads that
  name's device number from sysfs itself, finds it tagged as a camera in udev's database
  (``BWC_CAMERA=1`` from the generated rules), opens the node once (``O_PATH``,
  ``O_NOFOLLOW``: a link is refused) and checks that it is a block device with that very
  number; the mount is made from that descriptor, never from the name again;
- its disk holds no mounted filesystem elsewhere and nothing is stacked on it (LVM,
  RAID, dm-crypt): a partition of the system disk is refused even if tagged;
- the filesystem type is one a camera uses, profile options are only ones that change how
  names, times and owners are shown (a short list below), and the flags are the helper's:
  ``ro,nosuid,nodev,noexec``, verified in the kernel's mountinfo, as is the mounted
  device's number;
- the mount point is its own choice: ``<mount root>/<kernel name>``, in a mount root the
  daemon cannot write (its unit leaves all of /run read-only but its own directory); the
  root is walked from / without following links and every mount point is made and
  checked through descriptors (``mounting.py``); unmount and remount take only mount
  points directly under the mount root, and act on what mountinfo reports there.

It runs in the host's mount namespace (the unit sets no option that would give it one),
so its mounts reach the daemon's namespace through mount propagation.

Why a helper of our own: udisks2 with a polkit rule would put the daemon on the system
D-Bus and grant by user, not by device tag, with a large daemon parsing the camera's
filesystem metadata as root; ``systemd-mount`` needs PID 1's bus, the very way out of
the sandbox the daemon must not have, and could not verify the flags afterwards. This
helper is a few hundred lines, speaks one JSON line each way, checks the udev tag and
the disk, and reads the flags back from the kernel (``mounting.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import stat
import struct
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bwc_dock.mount_protocol import encode, read_message
from bwc_dock.mounting import (
    DEFAULT_MOUNTINFO,
    SAFE_NAME,
    MountedVolume,
    Mounter,
    MountError,
    open_directory_path,
    read_mountinfo,
    validate_profile_options,
)

log = structlog.get_logger(__name__)

# outside /run/bwc-dock, which is the daemon's (RuntimeDirectory=) and writable by it
DEFAULT_MOUNT_ROOT = Path("/run/bwc-dock-mount/cameras")
DEFAULT_UDEV_DATA = Path("/run/udev/data")
DEFAULT_SYS_CLASS_BLOCK = Path("/sys/class/block")
DEFAULT_DEVICE_DIR = Path("/dev")
CAMERA_TAG = "E:BWC_CAMERA=1"
# filesystems cameras and their cards carry; anything else is refused before mount(8)
CAMERA_FILESYSTEMS = frozenset({"vfat", "exfat", "msdos", "ntfs3", "udf"})
# What a profile may add: how names, times and owners are shown, nothing more. Not
# errors= (errors=panic would let a corrupt camera stop the dock PC), not helper=.
PROFILE_OPTION_NAMES = frozenset(
    {"utf8", "iocharset", "codepage", "shortname", "tz", "time_offset", "uid", "gid",
     "umask", "dmask", "fmask", "quiet", "showexec", "noatime", "nodiratime", "relatime",
     "nls", "namecase"}
)
_DEVICE_PATH = re.compile(r"/dev/(?P<name>[^/]+)")
_DEVICE_NUMBER = re.compile(r"(\d{1,10}):(\d{1,10})")
_CONNECTION_TIMEOUT_SECONDS = 10.0
_SYSTEMD_FIRST_FD = 3


class RequestRefused(Exception):
    """The request is outside what the helper does; the text goes back to the client."""


@dataclass
class MountService:
    """Validates requests and carries them out with :class:`Mounter` under ``mount_root``."""

    mount_root: Path
    udev_data: Path = DEFAULT_UDEV_DATA
    sys_class_block: Path = DEFAULT_SYS_CLASS_BLOCK
    device_dir: Path = DEFAULT_DEVICE_DIR
    mountinfo: Path = DEFAULT_MOUNTINFO
    allowed_uids: frozenset[int] = frozenset({0})
    volumes: dict[Path, MountedVolume] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._mounter = Mounter(self.mount_root, mountinfo=self.mountinfo)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out one request; a refusal or failure is an answer, never an exception."""
        operation = request.get("op")
        try:
            if operation == "mount":
                return self._mount(request)
            if operation == "remount":
                return self._remount(request)
            if operation == "unmount":
                return self._unmount(request)
            if operation == "cleanup":
                return self._cleanup()
            raise RequestRefused(f"unknown op {operation!r}")
        except (RequestRefused, MountError) as error:
            log.warning("mount_helper.refused", op=str(operation)[:32], reason=str(error))
            return {"ok": False, "error": str(error)}
        except OSError as error:
            log.error("mount_helper.failed", op=str(operation)[:32], exc_info=True)
            return {"ok": False, "error": f"{error.strerror or error}"}

    # -- operations ----------------------------------------------------------------------

    def _mount(self, request: dict[str, Any]) -> dict[str, Any]:
        device = _text(request, "device")
        fs_type = _text(request, "fs_type")
        options = request.get("options", [])
        if not isinstance(options, list) or not all(isinstance(item, str) for item in options):
            raise RequestRefused("options must be a list of strings")
        if fs_type not in CAMERA_FILESYSTEMS:
            raise RequestRefused(f"filesystem type not allowed: {fs_type!r}")
        check_profile_options(options)
        with self.camera_device(device) as (kernel_name, descriptor):
            volume = self._mounter.mount(
                device, fs_type, kernel_name, options, device_fd=descriptor
            )
        self.volumes[volume.mount_point] = volume
        return _volume_answer(volume)

    def _remount(self, request: dict[str, Any]) -> dict[str, Any]:
        mount_point = self._own_mount_point(request)
        mode = request.get("mode")
        if mode not in ("ro", "rw"):
            raise RequestRefused(f"mode must be 'ro' or 'rw', not {mode!r}")
        volume = self.volumes.get(mount_point)
        if volume is None:
            raise RequestRefused(f"{mount_point} was not mounted by this helper")
        try:
            # still the tagged camera it was; a FUSE volume is mounted again from it
            with self.camera_device(volume.device) as (_kernel_name, descriptor):
                switched = self._mounter.switch_mode(
                    volume, writable=mode == "rw", device_fd=descriptor
                )
        except RequestRefused:
            if mode == "ro":  # not the camera any more: gone rather than left writable
                self._mounter.unmount_point(mount_point, lazy=True)
                self.volumes.pop(mount_point, None)
            raise
        except MountError:
            if mode == "ro":  # switch_mode unmounted it rather than leave it writable
                self.volumes.pop(mount_point, None)
            raise
        self.volumes[mount_point] = switched
        return _volume_answer(switched)

    def _unmount(self, request: dict[str, Any]) -> dict[str, Any]:
        mount_point = self._own_mount_point(request)
        lazy = request.get("lazy", False)
        if not isinstance(lazy, bool):
            raise RequestRefused("lazy must be true or false")
        self._mounter.unmount_point(mount_point, lazy=lazy)
        self.volumes.pop(mount_point, None)
        log.info("mount_helper.unmounted", mount_point=str(mount_point), lazy=lazy)
        return {"ok": True, "mount_point": str(mount_point)}

    def _cleanup(self) -> dict[str, Any]:
        stale = self._mounter.cleanup_stale_mounts()
        self.volumes.clear()
        return {"ok": True, "unmounted": [str(point) for point in stale]}

    # -- checks --------------------------------------------------------------------------

    @contextmanager
    def camera_device(self, device: str) -> Iterator[tuple[str, int]]:
        """The kernel name and an ``O_PATH`` descriptor of ``device``, a tagged camera's
        block device whose number the helper read itself; else RequestRefused."""
        match = _DEVICE_PATH.fullmatch(device)
        if match is None or not SAFE_NAME.fullmatch(match["name"]):
            raise RequestRefused(f"not /dev/<kernel name>: {device!r}")
        kernel_name = match["name"]
        number = self._device_number(device, kernel_name)
        if not self._tagged_as_camera(number):
            raise RequestRefused(f"{device} ({number}) is not tagged BWC_CAMERA=1 by udev")
        descriptor = self._open_node(device, kernel_name, number)
        try:
            self._check_disk_unused(device, (self.sys_class_block / kernel_name).resolve())
            yield kernel_name, descriptor
        finally:
            os.close(descriptor)

    def _device_number(self, device: str, kernel_name: str) -> str:
        """The "major:minor" sysfs gives the block device named ``kernel_name``."""
        try:
            number = (self.sys_class_block / kernel_name / "dev").read_text().strip()
        except OSError as error:
            raise RequestRefused(f"{device}: no block device {kernel_name!r} in sysfs") from error
        if not _DEVICE_NUMBER.fullmatch(number):
            raise RequestRefused(f"{device}: unexpected device number {number!r} in sysfs")
        return number

    def _open_node(self, device: str, kernel_name: str, number: str) -> int:
        """Open the node once, without following a link, and check it is that device."""
        directory = open_directory_path(self.device_dir)
        try:
            descriptor = os.open(
                kernel_name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory
            )
        except OSError as error:
            raise RequestRefused(f"{device}: {error.strerror}") from error
        finally:
            os.close(directory)
        status = os.fstat(descriptor)
        found = f"{os.major(status.st_rdev)}:{os.minor(status.st_rdev)}"
        if stat.S_ISLNK(status.st_mode):
            reason = "is a link"
        elif not stat.S_ISBLK(status.st_mode):
            reason = "is not a block device"
        elif found != number:
            reason = f"is device {found}, not {number} that sysfs gives {kernel_name}"
        else:
            return descriptor
        os.close(descriptor)
        raise RequestRefused(f"{device} {reason}")

    def _tagged_as_camera(self, number: str) -> bool:
        try:
            database = (self.udev_data / f"b{number}").read_text(errors="replace")
        except OSError:
            return False
        return CAMERA_TAG in database.splitlines()

    def _check_disk_unused(self, device: str, sys_path: Path) -> None:
        """Refuse a device whose disk holds a mount outside our root or a stacked device."""
        disk = sys_path.parent if (sys_path / "partition").exists() else sys_path
        members = [disk, *(child for child in disk.iterdir() if (child / "partition").exists())]
        numbers: set[str] = set()
        for member in members:
            holders = member / "holders"
            if holders.is_dir() and any(holders.iterdir()):
                raise RequestRefused(f"{device}: {member.name} is in use by another device")
            numbers.add((member / "dev").read_text().strip())
        for entry in read_mountinfo(self.mountinfo):
            ours = entry.mount_point.is_relative_to(self.mount_root)
            if not ours and (entry.device_number in numbers or entry.source == device):
                raise RequestRefused(
                    f"{device}: its disk {disk.name} is mounted at {entry.mount_point}"
                )

    def _own_mount_point(self, request: dict[str, Any]) -> Path:
        mount_point = Path(_text(request, "mount_point"))
        if mount_point.parent != self.mount_root or not SAFE_NAME.fullmatch(mount_point.name):
            raise RequestRefused(f"not a mount point of this helper: {str(mount_point)!r}")
        return mount_point


def check_profile_options(options: Sequence[str]) -> None:
    """Refuse what the daemon's own check refuses, and any option not on the helper's list."""
    try:
        validate_profile_options(options)
    except MountError as error:
        raise RequestRefused(str(error)) from error
    for option in options:
        if option.split("=", 1)[0] not in PROFILE_OPTION_NAMES:
            raise RequestRefused(f"mount option not allowed by the mount helper: {option!r}")


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise RequestRefused(f"{key} must be a non-empty string")
    return value


def _volume_answer(volume: MountedVolume) -> dict[str, Any]:
    return {
        "ok": True,
        "mount_point": str(volume.mount_point),
        "kernel_fs_type": volume.kernel_fs_type,
        "device": volume.device,
    }


def peer_uid(connection: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket, as the kernel saw it."""
    credentials = connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return int(uid)


def serve_connection(service: MountService, connection: socket.socket) -> None:
    """Answer one request on ``connection``."""
    connection.settimeout(_CONNECTION_TIMEOUT_SECONDS)
    uid = peer_uid(connection)
    # read the request (bounded in size and time) before any answer, even a refusal: a
    # client still sending when we close would see a broken pipe instead of the reason
    try:
        request = read_message(connection)
    except (OSError, ValueError) as error:  # UnicodeError and JSON errors are ValueErrors
        request, answer = None, {"ok": False, "error": f"bad request: {error}"}
    if uid not in service.allowed_uids:
        log.warning("mount_helper.peer_refused", uid=uid)
        answer = {"ok": False, "error": f"uid {uid} may not use the mount helper"}
    elif request is not None:
        connection.settimeout(None)  # the work itself has its own command timeouts
        answer = service.handle(request)
    try:
        connection.sendall(encode(answer))
    except OSError as error:
        log.warning("mount_helper.answer_lost", error=error.strerror)


def listening_socket(path: Path | None) -> socket.socket:
    """The socket systemd passed (socket activation), else one bound at ``path`` (0600)."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        return socket.socket(fileno=_SYSTEMD_FIRST_FD)
    if path is None:
        raise SystemExit("bwc-dock-mount: no socket from systemd and no --socket given")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    old_umask = os.umask(0o177)  # root-only from the moment it exists
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(8)
    return listener


def serve(service: MountService, listener: socket.socket) -> None:
    """One request at a time: mounts are rare, and serial requests need no locking."""
    while True:
        connection, _address = listener.accept()
        with connection:
            try:
                serve_connection(service, connection)
            except OSError:
                log.warning("mount_helper.connection_failed", exc_info=True)


def parse_arguments(arguments: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bwc-dock-mount", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, help="bind here when systemd passed no socket")
    parser.add_argument("--mount-root", type=Path, default=DEFAULT_MOUNT_ROOT)
    parser.add_argument("--allow-uid", type=int, action="append", default=[],
                        help="a uid besides root that may send requests (repeatable)")
    parser.add_argument("--udev-data", type=Path, default=DEFAULT_UDEV_DATA)
    return parser.parse_args(arguments)


def main(arguments: Sequence[str] | None = None) -> None:
    options = parse_arguments(sys.argv[1:] if arguments is None else arguments)
    os.umask(0o077)
    service = MountService(
        mount_root=options.mount_root,
        udev_data=options.udev_data,
        allowed_uids=frozenset({0, *options.allow_uid}),
    )
    listener = listening_socket(options.socket)
    log.info("mount_helper.started", mount_root=str(service.mount_root))
    try:
        serve(service, listener)
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
