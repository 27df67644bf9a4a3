"""The daemon's side of the mount helper, and the protocol both sides speak.

The daemon parses camera content and talks to the network, so it holds no privilege to
mount (docs/design.md, "Trust boundaries"). Camera volumes are mounted by ``bwc-dock-mount``
(``mount_helper.py``), a small root service listening on a root-only unix socket.

Protocol: one connection per request; the client sends one JSON object on one line, the
helper answers with one JSON object on one line and closes. Requests::

    {"op": "mount", "device": "/dev/sdb1", "fs_type": "vfat", "options": ["utf8"]}
    {"op": "remount", "mount_point": "/run/bwc-dock-mount/cameras/sdb1", "mode": "rw" | "ro"}
    {"op": "unmount", "mount_point": "/run/bwc-dock-mount/cameras/sdb1", "lazy": false}
    {"op": "cleanup"}

Answers: ``{"ok": true, ...}`` with ``mount_point`` and ``kernel_fs_type`` (mount,
remount) or ``unmounted`` (cleanup); ``{"ok": false, "error": "text"}`` otherwise. The
helper, not the client, chooses the mount point (under its mount root, named after the
device's kernel name) and the flags (always ``nosuid,nodev,noexec``; ``ro`` except while
a clear-after-upload step holds the volume writable).

:func:`make_mounter` picks the helper when its socket is configured or present, and
mounts directly otherwise (host tests, development machines).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from bwc_dock.mounting import MountedVolume, Mounter, MountError, VolumeMounter

log = structlog.get_logger(__name__)

DEFAULT_SOCKET = Path("/run/bwc-dock-mount.sock")
SOCKET_ENVIRONMENT = "BWC_DOCK_MOUNT_HELPER_SOCKET"
MAX_LINE_BYTES = 8192
# a FUSE mount, the bind remount that enforces its flags and the helper's own checks
REQUEST_TIMEOUT_SECONDS = 120.0


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line of JSON."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def read_message(connection: socket.socket) -> dict[str, Any]:
    """Read one line of JSON (at most MAX_LINE_BYTES) and decode it as an object."""
    buffer = b""
    while b"\n" not in buffer:
        chunk = connection.recv(MAX_LINE_BYTES)
        if not chunk:
            raise ValueError("connection closed before a full line arrived")
        buffer += chunk
        if len(buffer) > MAX_LINE_BYTES:
            raise ValueError(f"message longer than {MAX_LINE_BYTES} bytes")
    line = buffer.split(b"\n", 1)[0]
    message = json.loads(line.decode("utf-8"))
    if not isinstance(message, dict):
        raise ValueError("a message must be a JSON object")
    return message


class HelperMounter:
    """A :class:`~bwc_dock.mounting.VolumeMounter` that asks the mount helper for every mount."""

    def __init__(self, socket_path: Path, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self.socket_path = socket_path
        self._timeout = timeout
        # the helper chooses; known after the first mount (for logs and status only)
        self.mount_dir = Path("/run/bwc-dock-mount/cameras")

    def mount(
        self, device: str, fs_type: str, name: str, profile_options: Sequence[str] = ()
    ) -> MountedVolume:
        """Ask for ``device`` mounted read-only; ``name`` is the helper's choice, not ours."""
        answer = self._ask(
            {"op": "mount", "device": device, "fs_type": fs_type, "options": list(profile_options)}
        )
        mount_point = Path(answer["mount_point"])
        volume = MountedVolume(device, mount_point, fs_type, answer["kernel_fs_type"])
        self.mount_dir = volume.mount_point.parent
        log.info(
            "mount.mounted",
            device=device,
            mount_point=str(volume.mount_point),
            fs_type=fs_type,
            kernel_fs_type=volume.kernel_fs_type,
            helper=str(self.socket_path),
            requested_name=name,
        )
        return volume

    def unmount(self, volume: MountedVolume, *, lazy: bool = False) -> None:
        self.unmount_point(volume.mount_point, lazy=lazy)
        log.info(
            "mount.unmounted", device=volume.device, mount_point=str(volume.mount_point), lazy=lazy
        )

    def unmount_point(self, mount_point: Path, *, lazy: bool = False) -> None:
        self._ask({"op": "unmount", "mount_point": str(mount_point), "lazy": lazy})

    def cleanup_stale_mounts(self) -> list[Path]:
        """Ask the helper to unmount every camera it still holds (left by our crash)."""
        answer = self._ask({"op": "cleanup"})
        stale = [Path(point) for point in answer.get("unmounted", [])]
        for mount_point in stale:
            log.warning("mount.stale_cleaned", mount_point=str(mount_point))
        return stale

    @contextmanager
    def writable(self, volume: MountedVolume) -> Iterator[MountedVolume]:
        """``volume`` writable for the body of the ``with`` only; the helper restores ro
        (or unmounts the volume when it cannot)."""
        writable = self._remount(volume, "rw")
        log.info("mount.writable", device=volume.device, mount_point=str(volume.mount_point))
        try:
            yield writable
        finally:
            self._remount(volume, "ro")
            log.info("mount.read_only", device=volume.device, mount_point=str(volume.mount_point))

    def _remount(self, volume: MountedVolume, mode: str) -> MountedVolume:
        answer = self._ask({"op": "remount", "mount_point": str(volume.mount_point), "mode": mode})
        return MountedVolume(
            volume.device, volume.mount_point, volume.fs_type, answer["kernel_fs_type"]
        )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return the helper's answer; raise MountError for a refusal."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(self._timeout)
                connection.connect(str(self.socket_path))
                connection.sendall(encode(request))
                answer = read_message(connection)
        except (OSError, ValueError) as error:
            raise MountError(
                f"mount helper at {self.socket_path} did not answer {request['op']}: {error}"
            ) from error
        if answer.get("ok") is not True:
            raise MountError(f"mount helper refused {request['op']}: {answer.get('error')}")
        return answer


def make_mounter(mount_dir: Path) -> VolumeMounter:
    """The helper when ``$BWC_DOCK_MOUNT_HELPER_SOCKET`` names its socket (the installed
    unit sets it) or the default socket exists; else direct mounts under ``mount_dir``."""
    configured = os.environ.get(SOCKET_ENVIRONMENT)
    if configured:
        return HelperMounter(Path(configured))
    if DEFAULT_SOCKET.is_socket():
        return HelperMounter(DEFAULT_SOCKET)
    return Mounter(mount_dir)
