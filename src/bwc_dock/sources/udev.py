"""Cameras docked on USB: udev block events in, read-only mounted DockedVolumes out.

The only module that imports pyudev. One thread listens to udevd; every event about a
block device only marks that device for a look once udev has been quiet about it for a
moment (udev sends add, change and bind for one plug, twice at times). The look itself is
state-based: it compares what the device is now (filesystem, USB identity, disk sequence
number) with what this source holds for it, so a repeated event changes nothing and one
docking stays one docking. ``remove`` is acted on at once: a copier must hear of a yank
within a second. A periodic rescan looks at every block device again, so a missed event
delays an offload but never loses one.

A device is a camera only when a profile of the configuration matches it; anything else
is logged once with its ids and never mounted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import select
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyudev
import structlog

from bwc_dock.config import CameraProfile, Config
from bwc_dock.errors import BwcDockError
from bwc_dock.mounting import MountedVolume, Mounter, MountError
from bwc_dock.sources.base import (
    DockedVolume,
    Source,
    SourceCapabilities,
    SourceListener,
    UnreadableCamera,
)
from bwc_dock.usb import UsbError, UsbLocation, UsbPort

log = structlog.get_logger(__name__)

SETTLE_SECONDS = 0.3
_POLL_SECONDS = 1.0
_SERIAL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_SERIAL_LENGTH = 64
_MAX_SERIAL_FILE_BYTES = 256
_HEX_ID = re.compile(r"^[0-9a-f]{4}$")
# An unreadable camera is tried again at rescans, waiting longer each time up to this: a
# bad moment heals at once, a corrupt card does not need a mount attempt every minute.
_UNREADABLE_RETRY_MAX_SECONDS = 15 * 60.0


@dataclass(frozen=True)
class BlockIdentity:
    """What udev knows about one block device, as plain values."""

    sys_path: str
    device: str  # /dev/sdb1
    kernel_name: str  # sdb1
    disk_sequence: str | None  # new for every medium, also on a reused /dev/loopN
    bus: str | None  # ID_BUS: "usb" for USB mass storage
    vendor_id: str | None  # 4 lowercase hex digits
    product_id: str | None
    serial: str | None  # ID_SERIAL_SHORT or the USB parent's serial
    fs_type: str | None
    fs_usage: str | None
    fs_label: str | None
    fs_uuid: str | None
    usb_location: UsbLocation | None
    whole_disk: bool = False  # DEVTYPE=disk (a partition otherwise)
    partition_table: str | None = None  # ID_PART_TABLE_TYPE: "dos", "gpt" on a whole disk
    has_medium: bool = True  # False for an empty card reader (size 0)

    @property
    def has_filesystem(self) -> bool:
        return self.fs_usage == "filesystem" and bool(self.fs_type)

    @property
    def could_hold_a_volume(self) -> bool:
        """A superfloppy disk or a partition with a medium: where a camera's volume lives.
        A partitioned whole disk holds its volumes in its partitions, not itself."""
        if not self.has_medium:
            return False
        return not (self.whole_disk and self.partition_table)

    @property
    def docking_key(self) -> tuple[str | None, ...]:
        """Equal for the same medium in the same device; different after a replug."""
        return (
            self.disk_sequence,
            self.vendor_id,
            self.product_id,
            self.serial,
            self.fs_type,
            self.fs_uuid,
            self.fs_label,
        )

    def ids(self) -> dict[str, str | None]:
        return {
            "device": self.device,
            "vendor_id": self.vendor_id,
            "product_id": self.product_id,
            "serial": self.serial,
            "fs_type": self.fs_type,
            "fs_label": self.fs_label,
            "fs_uuid": self.fs_uuid,
        }


def _hex_id(value: object) -> str | None:
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if not isinstance(text, str):
        return None
    digits = text.strip().lower().removeprefix("0x").rjust(4, "0")
    return digits if _HEX_ID.match(digits) else None


def _text(value: object) -> str | None:
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return text.strip() or None if isinstance(text, str) else None


def _usb_parent(device: Any) -> Any:
    try:
        return device.find_parent("usb", "usb_device")
    except (KeyError, ValueError, OSError):
        return None


def _attribute(device: Any, name: str) -> object:
    try:
        return device.attributes.get(name)
    except (KeyError, OSError, UnicodeDecodeError):
        return None


def identity_from_properties(
    sys_path: str, properties: Mapping[str, str], usb_parent: Any = None
) -> BlockIdentity:
    """The identity in udev properties, completed from the USB parent where they lack it."""
    vendor_id = _hex_id(properties.get("ID_VENDOR_ID"))
    product_id = _hex_id(properties.get("ID_MODEL_ID"))
    serial = _text(properties.get("ID_SERIAL_SHORT"))
    location = None
    if usb_parent is not None:
        vendor_id = vendor_id or _hex_id(_attribute(usb_parent, "idVendor"))
        product_id = product_id or _hex_id(_attribute(usb_parent, "idProduct"))
        serial = serial or _text(_attribute(usb_parent, "serial"))
        location = _location(usb_parent)
    device = properties.get("DEVNAME", "")
    return BlockIdentity(
        sys_path=sys_path,
        device=device,
        kernel_name=Path(device).name,
        disk_sequence=properties.get("DISKSEQ"),
        bus=properties.get("ID_BUS") or ("usb" if usb_parent is not None else None),
        vendor_id=vendor_id,
        product_id=product_id,
        serial=serial,
        fs_type=properties.get("ID_FS_TYPE") or None,
        fs_usage=properties.get("ID_FS_USAGE") or None,
        fs_label=properties.get("ID_FS_LABEL") or None,
        fs_uuid=properties.get("ID_FS_UUID") or None,
        usb_location=location,
        whole_disk=properties.get("DEVTYPE") == "disk",
        partition_table=properties.get("ID_PART_TABLE_TYPE") or None,
    )


def _location(usb_device: Any) -> UsbLocation | None:
    try:
        bus = int(_text(_attribute(usb_device, "busnum")) or "")
        address = int(_text(_attribute(usb_device, "devnum")) or "")
    except ValueError:
        return None
    return UsbLocation(bus, address)


def identity_from_device(device: Any) -> BlockIdentity:
    properties = dict(device.properties.items())
    needs_parent = not all(
        properties.get(key) for key in ("ID_VENDOR_ID", "ID_MODEL_ID", "ID_SERIAL_SHORT")
    )
    # the USB location is wanted for descriptors too, so look the parent up when it exists
    parent = _usb_parent(device) if needs_parent or properties.get("ID_BUS") == "usb" else None
    identity = identity_from_properties(device.sys_path, properties, parent)
    size = _text(_attribute(device, "size"))
    if size is not None and size.isdigit() and int(size) == 0:
        return dataclasses.replace(identity, has_medium=False)
    return identity


def _profile_applies(profile: CameraProfile) -> bool:
    """Profiles for USB docking name a USB id or a label; folder profiles are not ours."""
    has_criteria = bool(profile.usb_vendor_id or profile.usb_product_id or profile.label)
    return has_criteria and profile.serial_source != "folder"


def match_profile(
    identity: BlockIdentity, profiles: Iterable[CameraProfile]
) -> CameraProfile | None:
    """The highest-priority profile matching ``identity`` (first in config order on a tie)."""
    return _best(
        profile
        for profile in profiles
        if _claims_device(profile, identity) and identity.fs_type in profile.filesystem_types
    )


def claiming_profile(
    identity: BlockIdentity, profiles: Iterable[CameraProfile]
) -> CameraProfile | None:
    """The profile whose USB ids claim this device whatever its filesystem: a camera whose
    volume cannot be read is still a camera somebody must hear about. A profile that
    names only a label claims nothing here (the label is on the unreadable filesystem)."""
    return _best(
        profile
        for profile in profiles
        if (profile.usb_vendor_id or profile.usb_product_id) and _claims_device(profile, identity)
    )


def _claims_device(profile: CameraProfile, identity: BlockIdentity) -> bool:
    return (
        _profile_applies(profile)
        and profile.usb_vendor_id in (None, identity.vendor_id)
        and profile.usb_product_id in (None, identity.product_id)
        and (
            profile.label is None
            or (identity.fs_label or "").casefold() == profile.label.casefold()
        )
    )


def _best(candidates: Iterable[CameraProfile]) -> CameraProfile | None:
    ordered = sorted(candidates, key=lambda profile: -profile.priority)  # sort is stable
    return ordered[0] if ordered else None


def clean_serial(raw: str | None) -> str | None:
    """A camera serial safe to use in names and keys, or None when nothing usable is left."""
    if raw is None:
        return None
    cleaned = _SERIAL_UNSAFE.sub("_", raw.strip())[:_MAX_SERIAL_LENGTH].strip("._")
    return cleaned or None


def read_serial_file(root: Path, relative: str) -> str | None:
    """First line of ``relative`` under ``root``, refusing symlinks at every step."""
    parts = [part for part in Path(relative).parts if part not in {"/", ""}]
    if not parts or any(part == ".." for part in parts):
        return None
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        handle = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
        try:
            data = os.read(handle, _MAX_SERIAL_FILE_BYTES)
        finally:
            os.close(handle)
    except OSError as error:
        log.warning("dock.serial_file_unreadable", path=relative, error=error.strerror)
        return None
    finally:
        os.close(directory)
    first_line = data.decode("ascii", errors="replace").splitlines()[:1]
    return first_line[0] if first_line else None


@dataclass
class _Docking:
    identity: BlockIdentity
    volume: DockedVolume | None  # None after release(): offload done, still plugged in
    mounted: MountedVolume | None


@dataclass
class _Unreadable:
    """A claimed device that could not be read, and when to try it again."""

    report: UnreadableCamera
    docking_key: tuple[str | None, ...]
    attempts: int
    retry_at: float  # time.monotonic()


class UdevSource(Source):
    """The production docking path: udev events -> camera profile -> read-only mount."""

    name = "udev"
    capabilities = SourceCapabilities(clears_after_upload=True)

    def __init__(
        self,
        config: Config,
        *,
        mounter: Mounter | None = None,
        usb: UsbPort | None = None,
        context: Any = None,
        rescan_interval_seconds: float | None = None,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        """``rescan_interval_seconds``: None takes ``[sources] rescan_interval_seconds``."""
        self._profiles = tuple(config.camera)
        self._mounter = mounter or Mounter(config.mount_dir)
        self._usb = usb or UsbPort()
        self._context = context or pyudev.Context()
        self._rescan_interval = rescan_interval_seconds or config.sources.rescan_interval_seconds
        self._settle = settle_seconds
        self._listener: SourceListener | None = None
        self._monitor: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._dockings: dict[str, _Docking] = {}
        self._unreadable: dict[str, _Unreadable] = {}  # by sys_path
        self._pending: dict[str, float] = {}
        self._reported_unknown: set[tuple[str | None, ...]] = set()
        self._transfers_sent: set[str] = set()
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = os.pipe()

    # -- Source interface ----------------------------------------------------------------

    def start(self, listener: SourceListener) -> None:
        self._listener = listener
        self._mounter.cleanup_stale_mounts()
        monitor = pyudev.Monitor.from_netlink(self._context)
        monitor.filter_by("block")
        monitor.filter_by("usb", "usb_device")
        monitor.start()  # before coldplug: events during the enumeration wait in the socket
        self._monitor = monitor
        self._coldplug()
        self._thread = threading.Thread(target=self._run, name="udev-source", daemon=True)
        self._thread.start()
        log.info("udev.started", profiles=[profile.name for profile in self._profiles])

    def rescan(self) -> None:
        """Queue a look at every block device present and every one held; runs in our thread."""
        now = time.monotonic()
        with self._lock:
            for sys_path in self._present_block_devices() | set(self._dockings):
                self._pending.setdefault(sys_path, now)
        self._wake()

    def release(self, volume: DockedVolume) -> None:
        with self._lock:
            for docking in self._dockings.values():
                if docking.volume == volume:
                    self._unmount(docking, lazy=False)
                    docking.volume = None
                    log.info("dock.released", device=volume.device, camera=volume.camera_serial)
                    return
        log.warning("dock.release_unknown", device=volume.device)

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for docking in self._dockings.values():
                self._unmount(docking, lazy=True)
            self._dockings.clear()
        os.close(self._wake_read)
        os.close(self._wake_write)
        log.info("udev.stopped")

    @contextlib.contextmanager
    def writable(self, volume: DockedVolume) -> Iterator[Path]:
        """The volume's root, writable for the body of the ``with`` only (clear after upload).

        Repeated udev events during the step (closing a written device makes udev look at
        it again) do not count as a new docking: the identity has not changed.
        """
        with self._lock:
            docking = next(
                (item for item in self._dockings.values() if item.volume == volume), None
            )
            mounted = docking.mounted if docking else None
        if mounted is None:
            raise MountError(f"{volume.device} is not docked and mounted by this source")
        with self._mounter.writable(mounted) as writable:
            yield writable.mount_point

    def docked_volumes(self) -> list[DockedVolume]:
        """The volumes this source currently holds mounted (for status and tests)."""
        with self._lock:
            return [docking.volume for docking in self._dockings.values() if docking.volume]

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        next_rescan = time.monotonic() + self._rescan_interval
        while not self._stopping.is_set():
            readable, _, _ = select.select(
                [self._monitor, self._wake_read], [], [], self._poll_timeout()
            )
            if self._wake_read in readable:
                os.read(self._wake_read, 4096)
            self._drain_events()
            if time.monotonic() >= next_rescan:
                next_rescan = time.monotonic() + self._rescan_interval
                self.rescan()
            self._evaluate_due()

    def _poll_timeout(self) -> float:
        with self._lock:
            if not self._pending:
                return _POLL_SECONDS
            return max(0.0, min(self._pending.values()) - time.monotonic())

    def _drain_events(self) -> None:
        while (device := self._monitor.poll(timeout=0)) is not None:
            try:
                self._on_event(device)
            except (BwcDockError, OSError, pyudev.DeviceNotFoundError):
                # one bad device must not stop the listener for all the bays
                log.error("udev.event_failed", sys_path=device.sys_path, exc_info=True)

    def _on_event(self, device: Any) -> None:
        action = device.action
        log.debug("udev.event", action=action, sys_path=device.sys_path)
        if device.subsystem == "usb":
            if action == "add":
                self._maybe_send_control_transfer(device)
            elif action == "remove":
                self._transfers_sent.discard(device.sys_path)
            return
        if action == "remove":
            with self._lock:
                self._pending.pop(device.sys_path, None)
                self._gone(device.sys_path)
            return
        with self._lock:
            # debounce: each new event pushes the look back until udev is quiet
            self._pending[device.sys_path] = time.monotonic() + self._settle

    def _evaluate_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [path for path, deadline in self._pending.items() if deadline <= now]
            for sys_path in due:
                del self._pending[sys_path]
        for sys_path in due:
            try:
                self._evaluate(sys_path)
            except (BwcDockError, OSError, pyudev.DeviceNotFoundError):
                log.error("udev.evaluate_failed", sys_path=sys_path, exc_info=True)

    # -- deciding ------------------------------------------------------------------------

    def _coldplug(self) -> None:
        for usb_device in self._context.list_devices(subsystem="usb", DEVTYPE="usb_device"):
            self._maybe_send_control_transfer(usb_device)
        for sys_path in sorted(self._present_block_devices()):
            self._evaluate(sys_path)

    def _present_block_devices(self) -> set[str]:
        return {
            device.sys_path
            for device in self._context.list_devices(subsystem="block")
            if device.is_initialized
        }

    def _evaluate(self, sys_path: str) -> None:
        identity = self._identity(sys_path)
        with self._lock:
            current = self._dockings.get(sys_path)
            if identity is None or not identity.has_filesystem:
                if current is not None:
                    self._gone(sys_path)
                if identity is None or not identity.could_hold_a_volume:
                    self._readable_again(sys_path)
                else:
                    self._check_claimed_without_filesystem(identity)
                return
            if current is not None and current.identity.docking_key == identity.docking_key:
                return  # the same docking: a repeated event, or already offloaded
            if current is not None:
                self._gone(sys_path)  # another medium in the same device
            if self._waiting_to_retry(identity):
                return
            self._dock(identity)

    def _identity(self, sys_path: str) -> BlockIdentity | None:
        try:
            device = pyudev.Devices.from_sys_path(self._context, sys_path)
        except pyudev.DeviceNotFoundError:
            return None
        if device.device_node is None or not device.is_initialized:
            return None
        return identity_from_device(device)

    def _dock(self, identity: BlockIdentity) -> None:
        profile = match_profile(identity, self._profiles)
        if profile is None:
            claimed = claiming_profile(identity, self._profiles)
            if claimed is not None and identity.could_hold_a_volume:
                accepted = ", ".join(claimed.filesystem_types)
                self._report_unreadable(
                    identity,
                    claimed,
                    f"filesystem {identity.fs_type} is not one the profile accepts ({accepted})",
                    serial=None,
                )
                return
            self._report_unknown(identity)
            return
        serial = self._serial_before_mount(identity, profile)
        if serial is None and profile.serial_source != "file":
            log.warning(
                "dock.no_serial",
                profile=profile.name,
                serial_source=profile.serial_source,
                **identity.ids(),
            )
            self._remember_unusable(identity)
            return
        mounted = self._mount(identity, profile, serial)
        if mounted is None:
            return
        self._readable_again(identity.sys_path)
        if profile.serial_source == "file":
            assert profile.serial_file is not None  # the config validator demands it
            serial = clean_serial(read_serial_file(mounted.mount_point, profile.serial_file))
            if serial is None:
                log.warning(
                    "dock.no_serial", profile=profile.name, serial_source="file", **identity.ids()
                )
                self._mounter.unmount(mounted)
                self._remember_unusable(identity)
                return
        assert serial is not None
        volume = DockedVolume(
            source=self.name,
            device=identity.device,
            root=mounted.mount_point,
            camera_serial=serial,
            profile_name=profile.name,
            usb_vendor_id=identity.vendor_id,
            usb_product_id=identity.product_id,
            fs_label=identity.fs_label,
            fs_uuid=identity.fs_uuid,
        )
        self._dockings[identity.sys_path] = _Docking(identity, volume, mounted)
        log.info(
            "dock.docked",
            camera=serial,
            profile=profile.name,
            device=identity.device,
            mount_point=str(mounted.mount_point),
        )
        self._notify_docked(volume)

    def _serial_before_mount(self, identity: BlockIdentity, profile: CameraProfile) -> str | None:
        if profile.serial_source == "fs_uuid":
            return clean_serial(identity.fs_uuid)
        if profile.serial_source == "fs_label":
            return clean_serial(identity.fs_label)
        if profile.serial_source != "usb":
            return None
        if identity.serial is None and identity.usb_location is not None:
            try:
                return clean_serial(self._usb.descriptors(identity.usb_location).serial)
            except UsbError as error:
                log.warning("dock.usb_descriptors_unreadable", error=str(error), **identity.ids())
                return None
        return clean_serial(identity.serial)

    def _mount(
        self, identity: BlockIdentity, profile: CameraProfile, serial: str | None
    ) -> MountedVolume | None:
        assert identity.fs_type is not None
        try:
            return self._mounter.mount(
                identity.device, identity.fs_type, identity.kernel_name, profile.mount_options
            )
        except MountError as error:
            # tried again at later rescans (it may have been a bad moment), ever more slowly
            self._report_unreadable(identity, profile, str(error), serial=serial)
            return None

    # -- cameras that cannot be read -----------------------------------------------------

    def _check_claimed_without_filesystem(self, identity: BlockIdentity) -> None:
        """A camera's disk with no filesystem at all (a corrupt boot sector, say)."""
        profile = claiming_profile(identity, self._profiles)
        if profile is None:
            self._readable_again(identity.sys_path)
            return
        known = self._unreadable.get(identity.sys_path)
        if known is not None and known.docking_key == identity.docking_key:
            return  # reported already; only a new medium can change this
        self._report_unreadable(
            identity,
            profile,
            "no filesystem found on the device (corrupt or unformatted)",
            serial=clean_serial(identity.serial),
        )

    def _report_unreadable(
        self, identity: BlockIdentity, profile: CameraProfile, error: str, *, serial: str | None
    ) -> None:
        """Log (loudly once, quietly after) and tell the listener, which raises an alarm."""
        known = self._unreadable.get(identity.sys_path)
        if known is not None and known.docking_key != identity.docking_key:
            known = None  # another medium in the same bay: a report of its own
        attempts = 1 if known is None else known.attempts + 1
        delay = min(self._rescan_interval * 2 ** (attempts - 1), _UNREADABLE_RETRY_MAX_SECONDS)
        report = UnreadableCamera(
            device=identity.device,
            profile_name=profile.name,
            camera_serial=serial,
            error=error,
            since=known.report.since if known else datetime.now(UTC),
        )
        self._unreadable[identity.sys_path] = _Unreadable(
            report, identity.docking_key, attempts, time.monotonic() + delay
        )
        level = log.error if known is None or known.report.error != error else log.debug
        level(
            "dock.mount_failed",
            profile=profile.name,
            error=error,
            attempts=attempts,
            retry_in_seconds=round(delay),
            **identity.ids(),
        )
        self._notify_unreadable(report)

    def _waiting_to_retry(self, identity: BlockIdentity) -> bool:
        known = self._unreadable.get(identity.sys_path)
        if known is None:
            return False
        if known.docking_key != identity.docking_key:
            self._readable_again(identity.sys_path)  # a new medium: judge it afresh
            return False
        return time.monotonic() < known.retry_at

    def _readable_again(self, sys_path: str) -> None:
        known = self._unreadable.pop(sys_path, None)
        if known is None:
            return
        log.info(
            "dock.readable_again", device=known.report.device, profile=known.report.profile_name
        )
        if self._listener is not None:
            try:
                self._listener.readable_again(known.report.device)
            except Exception:  # error boundary: a listener bug must not stop docking
                log.error("dock.listener_failed", callback="readable_again", exc_info=True)

    def _notify_unreadable(self, report: UnreadableCamera) -> None:
        assert self._listener is not None
        try:
            self._listener.unreadable(report)
        except Exception:  # error boundary: a listener bug must not stop docking
            log.error("dock.listener_failed", callback="unreadable", device=report.device,
                      exc_info=True)

    def _remember_unusable(self, identity: BlockIdentity) -> None:
        """Held without a volume, so repeated events do not retry a hopeless device."""
        self._dockings[identity.sys_path] = _Docking(identity, None, None)

    def _report_unknown(self, identity: BlockIdentity) -> None:
        key = identity.docking_key[1:]
        if key in self._reported_unknown:
            return
        self._reported_unknown.add(key)
        # USB storage that no profile claims is worth a line; internal disks are not
        level = log.info if identity.bus == "usb" else log.debug
        level("dock.unknown_device", **identity.ids())

    def _gone(self, sys_path: str) -> None:
        """The device went away or lost its medium: tell the listener, then unmount."""
        self._readable_again(sys_path)
        docking = self._dockings.pop(sys_path, None)
        if docking is None:
            return
        if docking.volume is not None:
            log.info(
                "dock.undocked", camera=docking.volume.camera_serial, device=docking.identity.device
            )
            self._notify_undocked(docking.identity.device)
        self._unmount(docking, lazy=True)

    def _unmount(self, docking: _Docking, *, lazy: bool) -> None:
        if docking.mounted is None:
            return
        try:
            self._mounter.unmount(docking.mounted, lazy=lazy)
        except MountError:
            if lazy:
                log.error("dock.unmount_failed", device=docking.identity.device, exc_info=True)
                return
            log.warning("dock.unmount_busy", device=docking.identity.device)
            self._mounter.unmount(docking.mounted, lazy=True)
        docking.mounted = None

    def _notify_docked(self, volume: DockedVolume) -> None:
        assert self._listener is not None
        try:
            self._listener.docked(volume)
        except Exception:  # error boundary: a listener bug must not stop docking
            log.error(
                "dock.listener_failed", callback="docked", device=volume.device, exc_info=True
            )

    def _notify_undocked(self, device: str) -> None:
        assert self._listener is not None
        try:
            self._listener.undocked(device)
        except Exception:  # error boundary, as above
            log.error("dock.listener_failed", callback="undocked", device=device, exc_info=True)

    # -- USB control transfers -----------------------------------------------------------

    def _maybe_send_control_transfer(self, usb_device: Any) -> None:
        """Some cameras expose their storage only after a vendor request: send it once."""
        vendor_id = _hex_id(_attribute(usb_device, "idVendor"))
        product_id = _hex_id(_attribute(usb_device, "idProduct"))
        location = _location(usb_device)
        self.send_control_transfer_if_wanted(usb_device.sys_path, vendor_id, product_id, location)

    def send_control_transfer_if_wanted(
        self,
        sys_path: str,
        vendor_id: str | None,
        product_id: str | None,
        location: UsbLocation | None,
    ) -> bool:
        """Send the control transfer of the first profile that wants one for these ids."""
        if sys_path in self._transfers_sent or location is None:
            return False
        for profile in self._profiles:
            if (
                profile.control_transfer is not None
                and profile.usb_vendor_id == vendor_id
                and profile.usb_product_id in (None, product_id)
            ):
                self._transfers_sent.add(sys_path)
                try:
                    self._usb.send_control_transfer(location, profile.control_transfer)
                except UsbError as error:
                    log.warning(
                        "usb.control_transfer_failed",
                        profile=profile.name,
                        error=str(error),
                        vendor_id=vendor_id,
                        product_id=product_id,
                    )
                    return False
                return True
        return False

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # closed by stop(): nothing left to wake
            os.write(self._wake_write, b"x")
