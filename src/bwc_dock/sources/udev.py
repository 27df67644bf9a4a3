"""Cameras docked on USB: udev block events in, read-only mounted DockedVolumes out.

The udev adapter, and the only module that imports pyudev. One thread listens to udevd;
every event about a block device only marks that device for a look once udev has been
quiet about it for a moment (udev sends add, change and bind for one plug, twice at
times). The look itself is state-based (``bays.py``): it compares what the device is now
(filesystem, USB identity, disk sequence number) with what is held for it, so a repeated
event changes nothing and one docking stays one docking. ``remove`` is acted on at once:
a copier must hear of a yank within a second. A periodic rescan looks at every block
device again, so a missed event delays an offload but never loses one.

A device is a camera only when a profile of the configuration matches it
(``identity.py``); anything else is logged once with its ids and never mounted. A camera
a profile claims that cannot be read raises an alarm (``unreadable.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyudev
import structlog

from bwc_dock.config import CameraProfile, Config
from bwc_dock.errors import BwcDockError
from bwc_dock.found import DockedVolume
from bwc_dock.mount_protocol import make_mounter
from bwc_dock.mounting import VolumeMounter
from bwc_dock.sources.base import Source, SourceCapabilities, SourceListener
from bwc_dock.sources.bays import Bays
from bwc_dock.sources.identity import (
    BlockIdentity,
    hex_id,
    identity_from_properties,
    plain_text,
    sysfs_attribute,
    usb_location,
)
from bwc_dock.usb import UsbLocation, UsbPort

log = structlog.get_logger(__name__)

SETTLE_SECONDS = 0.3
_POLL_SECONDS = 1.0


def _usb_parent(device: Any) -> Any:
    try:
        return device.find_parent("usb", "usb_device")
    except (KeyError, ValueError, OSError):
        return None


def identity_from_device(device: Any) -> BlockIdentity:
    properties = dict(device.properties.items())
    needs_parent = not all(
        properties.get(key) for key in ("ID_VENDOR_ID", "ID_MODEL_ID", "ID_SERIAL_SHORT")
    )
    # the USB location is wanted for descriptors too, so look the parent up when it exists
    parent = _usb_parent(device) if needs_parent or properties.get("ID_BUS") == "usb" else None
    identity = identity_from_properties(device.sys_path, properties, parent)
    size = plain_text(sysfs_attribute(device, "size"))
    if size is not None and size.isdigit() and int(size) == 0:
        return dataclasses.replace(identity, has_medium=False)
    return identity


class UdevSource(Source):
    """The production docking path: udev events -> camera profile -> read-only mount."""

    name = "udev"
    capabilities = SourceCapabilities(clears_after_upload=True)

    def __init__(
        self,
        config: Config,
        *,
        mounter: VolumeMounter | None = None,
        usb: UsbPort | None = None,
        context: Any = None,
        rescan_interval_seconds: float | None = None,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        """``rescan_interval_seconds``: None takes ``[sources] rescan_interval_seconds``."""
        self._rescan_interval = rescan_interval_seconds or config.sources.rescan_interval_seconds
        self._lock = threading.RLock()
        self._bays = Bays(
            self.name,
            tuple(config.camera),
            mounter or make_mounter(config.mount_dir),
            usb or UsbPort(),
            self._lock,
            self._rescan_interval,
        )
        self._context = context or pyudev.Context()
        self._settle = settle_seconds
        self._monitor: Any = None
        self._thread: threading.Thread | None = None
        self._pending: dict[str, float] = {}
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = os.pipe()

    @property
    def _profiles(self) -> tuple[CameraProfile, ...]:
        return self._bays.profiles

    def _serial_before_mount(self, identity: BlockIdentity, profile: CameraProfile) -> str | None:
        return self._bays.serial_before_mount(identity, profile)

    # -- Source interface ----------------------------------------------------------------

    def start(self, listener: SourceListener) -> None:
        self._bays.attach(listener)
        self._bays.mounter.cleanup_stale_mounts()
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
            for sys_path in self._present_block_devices() | self._bays.held():
                self._pending.setdefault(sys_path, now)
        self._wake()

    def use_profiles(self, profiles: tuple[CameraProfile, ...]) -> None:
        """A reload changed the profiles: a device plugged in now, or one no profile
        claimed so far, is matched by these at the next look (a rescan, queued here)."""
        with self._lock:
            self._bays.profiles = profiles
            self._bays.unreadable.profiles = profiles
        log.info("udev.profiles_changed", profiles=[profile.name for profile in profiles])
        self.rescan()

    def release(self, volume: DockedVolume) -> None:
        self._bays.release(volume)

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._bays.release_all()
        os.close(self._wake_read)
        os.close(self._wake_write)
        log.info("udev.stopped")

    @contextlib.contextmanager
    def writable(self, volume: DockedVolume) -> Iterator[Path]:
        """The volume's root, writable for the body of the ``with`` only (clear after upload)."""
        with self._bays.writable(volume) as root:
            yield root

    def docked_volumes(self) -> list[DockedVolume]:
        """The volumes this source currently holds mounted (for status and tests)."""
        return self._bays.docked_volumes()

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
                self._bays.usb_device_gone(device.sys_path)
            return
        if action == "remove":
            with self._lock:
                self._pending.pop(device.sys_path, None)
                self._bays.gone(device.sys_path)
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

    # -- looking -------------------------------------------------------------------------

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
        self._bays.look_at(sys_path, self._identity(sys_path))

    def _identity(self, sys_path: str) -> BlockIdentity | None:
        try:
            device = pyudev.Devices.from_sys_path(self._context, sys_path)
        except pyudev.DeviceNotFoundError:
            return None
        if device.device_node is None or not device.is_initialized:
            return None
        return identity_from_device(device)

    # -- USB control transfers -----------------------------------------------------------

    def _maybe_send_control_transfer(self, usb_device: Any) -> None:
        """Some cameras expose their storage only after a vendor request: send it once."""
        vendor_id = hex_id(sysfs_attribute(usb_device, "idVendor"))
        product_id = hex_id(sysfs_attribute(usb_device, "idProduct"))
        location = usb_location(usb_device)
        self.send_control_transfer_if_wanted(usb_device.sys_path, vendor_id, product_id, location)

    def send_control_transfer_if_wanted(
        self,
        sys_path: str,
        vendor_id: str | None,
        product_id: str | None,
        location: UsbLocation | None,
    ) -> bool:
        """Send the control transfer of the first profile that wants one for these ids."""
        return self._bays.send_control_transfer_if_wanted(
            sys_path, vendor_id, product_id, location
        )

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # closed by stop(): nothing left to wake
            os.write(self._wake_write, b"x")


@dataclasses.dataclass(frozen=True)
class AttachedStorage:
    """A USB block device as ``bwc-dock devices`` shows it: its identity and the names its
    maker gives it (text from the device: shown as text, never trusted)."""

    identity: BlockIdentity
    vendor: str | None
    model: str | None


def attached_usb_storage(context: Any = None) -> list[AttachedStorage]:
    """Every USB block device udev has finished with, in device order; a partitioned whole
    disk is left out (its partitions are listed). Nothing is opened or mounted."""
    found = []
    for device in (context or pyudev.Context()).list_devices(subsystem="block"):
        if device.device_node is None or not device.is_initialized:
            continue
        identity = identity_from_device(device)
        if identity.bus != "usb" or (identity.whole_disk and identity.partition_table):
            continue
        vendor = plain_text(device.properties.get("ID_VENDOR"))
        model = plain_text(device.properties.get("ID_MODEL"))
        found.append(AttachedStorage(identity, vendor, model))
    return sorted(found, key=lambda storage: storage.identity.device)
