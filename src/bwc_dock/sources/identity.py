"""Who a block device is: its udev identity as plain values, the camera profile it matches,
and a serial safe to use in names and keys.

Policy only: nothing here imports pyudev. The udev adapter (``udev.py``) hands in a
device's properties and, where they lack the USB ids, its USB parent, which is read
through its sysfs ``attributes`` alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bwc_dock.config import CameraProfile
from bwc_dock.usb import UsbLocation

log = structlog.get_logger(__name__)

_SERIAL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_SERIAL_LENGTH = 64
_MAX_SERIAL_FILE_BYTES = 256
_HEX_ID = re.compile(r"^[0-9a-f]{4}$")


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


def hex_id(value: object) -> str | None:
    """A USB id as 4 lowercase hex digits, from any of the spellings udev and sysfs use."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if not isinstance(text, str):
        return None
    digits = text.strip().lower().removeprefix("0x").rjust(4, "0")
    return digits if _HEX_ID.match(digits) else None


def plain_text(value: object) -> str | None:
    """A udev property or sysfs attribute as stripped text; None when empty or not text."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return text.strip() or None if isinstance(text, str) else None


def sysfs_attribute(device: Any, name: str) -> object:
    """One sysfs attribute of a device (anything with an ``attributes`` mapping), or None."""
    try:
        return device.attributes.get(name)
    except (KeyError, OSError, UnicodeDecodeError):
        return None


def usb_location(usb_device: Any) -> UsbLocation | None:
    """Where a USB device sits (bus, address), from its sysfs attributes."""
    try:
        bus = int(plain_text(sysfs_attribute(usb_device, "busnum")) or "")
        address = int(plain_text(sysfs_attribute(usb_device, "devnum")) or "")
    except ValueError:
        return None
    return UsbLocation(bus, address)


def identity_from_properties(
    sys_path: str, properties: Mapping[str, str], usb_parent: Any = None
) -> BlockIdentity:
    """The identity in udev properties, completed from the USB parent where they lack it."""
    vendor_id = hex_id(properties.get("ID_VENDOR_ID"))
    product_id = hex_id(properties.get("ID_MODEL_ID"))
    serial = plain_text(properties.get("ID_SERIAL_SHORT"))
    location = None
    if usb_parent is not None:
        vendor_id = vendor_id or hex_id(sysfs_attribute(usb_parent, "idVendor"))
        product_id = product_id or hex_id(sysfs_attribute(usb_parent, "idProduct"))
        serial = serial or plain_text(sysfs_attribute(usb_parent, "serial"))
        location = usb_location(usb_parent)
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
