"""What every source of docked cameras hands to the rest of bwc-dock.

A source (udev, watch folders, a hand-run ingest) turns its own world into plain
:class:`DockedVolume` values and docked/undocked callbacks; nothing past this module
sees a pyudev device or a watchdog event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DockedVolume:
    """A camera volume ready to be read: mounted read-only, or a folder."""

    source: str  # "udev", "watch" or "ingest"
    device: str  # /dev/sdb1, or the folder path for watch/ingest; unique while docked
    root: Path  # where the volume's files are readable
    camera_serial: str
    profile_name: str | None = None
    usb_vendor_id: str | None = None
    usb_product_id: str | None = None
    fs_label: str | None = None
    fs_uuid: str | None = None


class SourceListener(ABC):
    """What a source reports to (the daemon)."""

    @abstractmethod
    def docked(self, volume: DockedVolume) -> None:
        """A camera volume became readable."""

    @abstractmethod
    def undocked(self, device: str) -> None:
        """The volume on ``device`` went away (or is about to)."""


class Source(ABC):
    name: str

    @abstractmethod
    def start(self, listener: SourceListener) -> None:
        """Begin watching; report volumes already present (coldplug) before returning."""

    @abstractmethod
    def rescan(self) -> None:
        """Look again at what is present, in case an event was missed."""

    @abstractmethod
    def release(self, volume: DockedVolume) -> None:
        """The offload of ``volume`` is done: unmount it (udev) or just forget it."""

    @abstractmethod
    def stop(self) -> None:
        """Stop watching and release everything this source holds."""


VolumeCallback = Callable[[DockedVolume], None]
