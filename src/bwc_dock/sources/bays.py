"""The USB camera bays: a block device's identity in, a read-only mounted DockedVolume out.

Decides, from what a device is now, whether it is a new docking, the same one again
(a repeated udev event changes nothing), or gone; which profile claims it; where its
serial comes from; and mounts, releases and unmounts it. The udev adapter (``udev.py``)
feeds it identities; nothing here imports pyudev.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from bwc_dock.config import CameraProfile
from bwc_dock.found import DockedVolume
from bwc_dock.mounting import MountedVolume, MountError, VolumeMounter
from bwc_dock.sources.base import SourceListener
from bwc_dock.sources.identity import (
    BlockIdentity,
    claiming_profile,
    clean_serial,
    match_profile,
    read_serial_file,
)
from bwc_dock.sources.unreadable import UnreadableCameras
from bwc_dock.usb import UsbError, UsbLocation, UsbPort

log = structlog.get_logger(__name__)


@dataclass
class _Docking:
    identity: BlockIdentity
    volume: DockedVolume | None  # None after release(): offload done, still plugged in
    mounted: MountedVolume | None


class Bays:
    """Dockings by sys path; every call holds ``lock`` (shared with the udev adapter)."""

    def __init__(
        self,
        source_name: str,
        profiles: tuple[CameraProfile, ...],
        mounter: VolumeMounter,
        usb: UsbPort,
        lock: threading.RLock,
        rescan_interval: float,
    ) -> None:
        self.source_name = source_name
        self.profiles = profiles
        self.mounter = mounter
        self.usb = usb
        self.lock = lock
        self.listener: SourceListener | None = None
        self.unreadable = UnreadableCameras(profiles, rescan_interval)
        self._dockings: dict[str, _Docking] = {}
        self._reported_unknown: set[tuple[str | None, ...]] = set()
        self._transfers_sent: set[str] = set()

    def attach(self, listener: SourceListener) -> None:
        """Where dockings, undockings and unreadable cameras are reported."""
        self.listener = listener
        self.unreadable.listener = listener

    def held(self) -> set[str]:
        """The sys paths of every device held (docked, offloaded or unusable)."""
        with self.lock:
            return set(self._dockings)

    def look_at(self, sys_path: str, identity: BlockIdentity | None) -> None:
        """Compare what the device is now with what is held for it, and act on the change."""
        with self.lock:
            current = self._dockings.get(sys_path)
            if identity is None or not identity.has_filesystem:
                if current is not None:
                    self.gone(sys_path)
                if identity is None or not identity.could_hold_a_volume:
                    self.unreadable.readable_again(sys_path)
                else:
                    self.unreadable.check_claimed_without_filesystem(identity)
                return
            if current is not None and current.identity.docking_key == identity.docking_key:
                return  # the same docking: a repeated event, or already offloaded
            if current is not None:
                self.gone(sys_path)  # another medium in the same device
            if self.unreadable.waiting_to_retry(identity):
                return
            self._dock(identity)

    def gone(self, sys_path: str) -> None:
        """The device went away or lost its medium: tell the listener, then unmount."""
        with self.lock:
            self.unreadable.readable_again(sys_path)
            docking = self._dockings.pop(sys_path, None)
            if docking is None:
                return
            if docking.volume is not None:
                log.info(
                    "dock.undocked",
                    camera=docking.volume.camera_serial,
                    device=docking.identity.device,
                )
                self._notify_undocked(docking.identity.device)
            self._unmount(docking, lazy=True)

    def release(self, volume: DockedVolume) -> None:
        with self.lock:
            for docking in self._dockings.values():
                if docking.volume == volume:
                    self._unmount(docking, lazy=False)
                    docking.volume = None
                    log.info("dock.released", device=volume.device, camera=volume.camera_serial)
                    return
        log.warning("dock.release_unknown", device=volume.device)

    def release_all(self) -> None:
        """Stopping: unmount everything (lazily: a reader may still hold a file)."""
        with self.lock:
            for docking in self._dockings.values():
                self._unmount(docking, lazy=True)
            self._dockings.clear()

    @contextlib.contextmanager
    def writable(self, volume: DockedVolume) -> Iterator[Path]:
        """The volume's root, writable for the body of the ``with`` only (clear after upload).

        Repeated udev events during the step (closing a written device makes udev look at
        it again) do not count as a new docking: the identity has not changed.
        """
        with self.lock:
            docking = next(
                (item for item in self._dockings.values() if item.volume == volume), None
            )
            mounted = docking.mounted if docking else None
        if mounted is None:
            raise MountError(f"{volume.device} is not docked and mounted by this source")
        with self.mounter.writable(mounted) as writable:
            yield writable.mount_point

    def docked_volumes(self) -> list[DockedVolume]:
        with self.lock:
            return [docking.volume for docking in self._dockings.values() if docking.volume]

    # -- docking -------------------------------------------------------------------------

    def _dock(self, identity: BlockIdentity) -> None:
        profile = match_profile(identity, self.profiles)
        if profile is None:
            claimed = claiming_profile(identity, self.profiles)
            if claimed is not None and identity.could_hold_a_volume:
                accepted = ", ".join(claimed.filesystem_types)
                self.unreadable.report(
                    identity,
                    claimed,
                    f"filesystem {identity.fs_type} is not one the profile accepts ({accepted})",
                    serial=None,
                )
                return
            self._report_unknown(identity)
            return
        serial = self.serial_before_mount(identity, profile)
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
        self.unreadable.readable_again(identity.sys_path)
        if profile.serial_source == "file":
            assert profile.serial_file is not None  # the config validator demands it
            serial = clean_serial(read_serial_file(mounted.mount_point, profile.serial_file))
            if serial is None:
                log.warning(
                    "dock.no_serial", profile=profile.name, serial_source="file", **identity.ids()
                )
                self.mounter.unmount(mounted)
                self._remember_unusable(identity)
                return
        assert serial is not None
        volume = DockedVolume(
            source=self.source_name,
            device=identity.device,
            root=mounted.mount_point,
            camera_serial=serial,
            profile_name=profile.name,
            usb_vendor_id=identity.vendor_id,
            usb_product_id=identity.product_id,
            fs_type=identity.fs_type,
            fs_label=identity.fs_label,
            fs_uuid=identity.fs_uuid,
        )
        self._dockings[identity.sys_path] = _Docking(identity, volume, mounted)
        log.info(
            "dock.docked",
            camera=serial,
            device=identity.device,
            mount_point=str(mounted.mount_point),
            **volume.device_identity(),
        )
        self._notify_docked(volume)

    def serial_before_mount(self, identity: BlockIdentity, profile: CameraProfile) -> str | None:
        if profile.serial_source == "fs_uuid":
            return clean_serial(identity.fs_uuid)
        if profile.serial_source == "fs_label":
            return clean_serial(identity.fs_label)
        if profile.serial_source != "usb":
            return None
        if identity.serial is None and identity.usb_location is not None:
            try:
                return clean_serial(self.usb.descriptors(identity.usb_location).serial)
            except UsbError as error:
                log.warning("dock.usb_descriptors_unreadable", error=str(error), **identity.ids())
                return None
        return clean_serial(identity.serial)

    def _mount(
        self, identity: BlockIdentity, profile: CameraProfile, serial: str | None
    ) -> MountedVolume | None:
        assert identity.fs_type is not None
        try:
            return self.mounter.mount(
                identity.device, identity.fs_type, identity.kernel_name, profile.mount_options
            )
        except MountError as error:
            # tried again at later rescans (it may have been a bad moment), ever more slowly
            self.unreadable.report(identity, profile, str(error), serial=serial)
            return None

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

    def _unmount(self, docking: _Docking, *, lazy: bool) -> None:
        if docking.mounted is None:
            return
        try:
            self.mounter.unmount(docking.mounted, lazy=lazy)
        except MountError:
            if lazy:
                log.error("dock.unmount_failed", device=docking.identity.device, exc_info=True)
                return
            log.warning("dock.unmount_busy", device=docking.identity.device)
            self.mounter.unmount(docking.mounted, lazy=True)
        docking.mounted = None

    def _notify_docked(self, volume: DockedVolume) -> None:
        assert self.listener is not None
        try:
            self.listener.docked(volume)
        except Exception:  # error boundary: a listener bug must not stop docking
            log.error(
                "dock.listener_failed", callback="docked", device=volume.device, exc_info=True
            )

    def _notify_undocked(self, device: str) -> None:
        assert self.listener is not None
        try:
            self.listener.undocked(device)
        except Exception:  # error boundary, as above
            log.error("dock.listener_failed", callback="undocked", device=device, exc_info=True)

    # -- USB control transfers -----------------------------------------------------------

    def usb_device_gone(self, sys_path: str) -> None:
        """The USB device was unplugged: its next appearance gets its transfer again."""
        self._transfers_sent.discard(sys_path)

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
        for profile in self.profiles:
            if (
                profile.control_transfer is not None
                and profile.usb_vendor_id == vendor_id
                and profile.usb_product_id in (None, product_id)
            ):
                self._transfers_sent.add(sys_path)
                try:
                    self.usb.send_control_transfer(location, profile.control_transfer)
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
