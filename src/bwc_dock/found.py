"""What a camera hands to the rest of bwc-dock, as plain frozen values.

A source turns a docked camera into a :class:`DockedVolume`; the scanner turns what it
finds on it into :class:`FoundClip` values. They live here, in the base layer, because
the ledger records both and imports nothing above itself (``sources/`` and ``scanner``
are above it); ``sources.base`` and ``scanner`` re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from bwc_dock.names import display_text, safe_name


def display_path(raw: bytes) -> str:
    """A printable form of a camera path: invalid UTF-8 and control characters escaped."""
    return display_text(raw.decode("utf-8", "backslashreplace"))


@dataclass(frozen=True)
class DockedVolume:
    """A camera volume ready to be read: mounted read-only, or a folder."""

    source: str  # "udev", "watch" or "ingest"
    device: str  # /dev/sdb1, or the folder path for watch/ingest; unique while docked
    root: Path  # where the volume's files are readable
    camera_serial: str
    # the device identity the dock saw; None where this source has no such thing (a watch
    # folder has no USB ids): absent, never invented
    profile_name: str | None = None
    usb_vendor_id: str | None = None
    usb_product_id: str | None = None
    fs_type: str | None = None
    fs_label: str | None = None
    fs_uuid: str | None = None

    def device_identity(self) -> dict[str, str | None]:
        """Which device this was, as logged, recorded in the ledger and in custody records."""
        return {
            "profile": self.profile_name,
            "usb_vendor_id": self.usb_vendor_id,
            "usb_product_id": self.usb_product_id,
            "fs_type": self.fs_type,
            "fs_label": self.fs_label,
            "fs_uuid": self.fs_uuid,
        }


@dataclass(frozen=True)
class FoundFile:
    source_path_raw: bytes  # relative to the volume root, b"/"-joined raw names
    size: int
    mtime_ns: int

    @property
    def source_path(self) -> str:
        return display_path(self.source_path_raw)

    @property
    def name(self) -> str:
        return safe_name(self.source_path_raw.rsplit(b"/", 1)[-1])


TimeFlag = Literal["nonexistent", "ambiguous"]


@dataclass(frozen=True)
class CameraTime:
    """When a clip was recorded, as the camera's clock wrote it and read in its zone.

    ``utc`` is that reading taken at its word (no clock-offset correction). A wall-clock
    time that daylight saving skips (``nonexistent``) or repeats (``ambiguous``) carries
    a flag and the rule used to read it, never resolved silently.
    """

    wall: datetime  # naive: the camera's own reading
    zone: str  # "UTC" or the profile's IANA name
    utc: datetime
    source: Literal["name", "mtime"]
    flag: TimeFlag | None = None
    rule: str | None = None

    @property
    def reading(self) -> str:
        """The camera's reading with its zone, e.g. ``2026-11-01T01:30:00 America/New_York``."""
        return f"{self.wall.isoformat()} {self.zone}"


@dataclass(frozen=True)
class FoundClip:
    video: FoundFile
    recorded_at: datetime  # the camera's reading in UTC, before any clock correction
    sidecars: tuple[FoundFile, ...] = ()
    camera_time: CameraTime | None = None  # None: a UTC reading with nothing to add
