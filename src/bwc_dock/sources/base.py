"""What every source of docked cameras hands to the rest of bwc-dock.

A source (udev, watch folders, a hand-run ingest) turns its own world into plain
:class:`DockedVolume` values and docked/undocked callbacks; nothing past this module
sees a pyudev device or a watchdog event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from bwc_dock.camera_profiles import CameraProfile
from bwc_dock.errors import BwcDockError
from bwc_dock.found import DockedVolume


@dataclass(frozen=True)
class SourceCapabilities:
    """What the daemon may do with the volumes of a source; each source declares its own."""

    # a volume may fill up while docked (a watch folder): scan it again at every rescan
    rescans_while_docked: bool = False
    # once offloaded, the volume is handed back (unmounted) and its docking ends; otherwise
    # it stays docked until it goes away
    releases_after_offload: bool = True
    # the source can make a volume writable for a moment (``Source.writable``), so a
    # profile's ``clear_after_upload`` can be honoured
    clears_after_upload: bool = False


HANDED_OVER = SourceCapabilities()
"""A folder a hand-run ``ingest`` handed to the daemon: no source object watches it."""


@dataclass(frozen=True)
class UnreadableCamera:
    """A device a camera profile claims that could not be mounted (or holds no filesystem
    the profile accepts): nothing is copied off it, so somebody must be told."""

    device: str  # /dev/sdb1
    profile_name: str
    camera_serial: str | None  # known before mounting only for USB serials
    error: str  # one line, as the mount or the probe reported it
    since: datetime  # the first failure of this docking


class SourceListener(ABC):
    """What a source reports to (the daemon)."""

    def unreadable(self, camera: UnreadableCamera) -> None:  # noqa: B027 - optional hook
        """A docked camera cannot be read; reported again while it stays so."""

    def readable_again(self, device: str) -> None:  # noqa: B027 - optional hook
        """``device`` mounted after all, or went away: its unreadable report is over."""

    @abstractmethod
    def docked(self, volume: DockedVolume) -> None:
        """A camera volume became readable."""

    @abstractmethod
    def undocked(self, device: str) -> None:
        """The volume on ``device`` went away (or is about to)."""


class Source(ABC):
    name: str
    capabilities: ClassVar[SourceCapabilities] = SourceCapabilities()

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

    def use_profiles(self, profiles: tuple[CameraProfile, ...]) -> None:  # noqa: B027
        """A reload changed the camera profiles: match what docks from now on by these
        (a volume docked already keeps the profile it docked under)."""

    def writable(self, volume: DockedVolume) -> AbstractContextManager[Path]:
        """The volume's root, writable for the body of the ``with`` only (clear after upload).

        Only sources that declare ``clears_after_upload`` can do this.
        """
        raise BwcDockError(f"the {self.name} source cannot make {volume.device} writable")


VolumeCallback = Callable[[DockedVolume], None]
