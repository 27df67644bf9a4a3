"""The daemon's registry of docked cameras: which volume is docked, which copier reads it,
and which docked camera cannot be read at all.

All work state lives in the ledger; this only remembers, per device, the docking, the
source that reported it, whether its volume was scanned, and which copier worker reads
it now. Sources call in from their own threads, copiers and the main loop from theirs:
every look and change goes through one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bwc_dock.found import DockedVolume
from bwc_dock.ledger.models import utc_now
from bwc_dock.sources.base import HANDED_OVER, Source, SourceCapabilities, UnreadableCamera


@dataclass
class Docked:
    """One docked camera volume, as the daemon holds it."""

    docking_id: int
    volume: DockedVolume
    source: Source | None  # None for a folder a hand-run ingest handed over
    cancel: threading.Event = field(default_factory=threading.Event)
    reader: str | None = None  # the copier worker reading it now
    finished_logged: bool = False
    last_progress_at: datetime = field(default_factory=utc_now)
    # False until a scan of the volume succeeded: an unscanned camera is never "done"
    scanned: bool = False
    # why its last scan stopped short at a budget ("" when it was read whole): such a
    # camera is not done, and stays docked (and alarmed) until it leaves or reads whole
    scan_incomplete: str = ""

    @property
    def capabilities(self) -> SourceCapabilities:
        return self.source.capabilities if self.source is not None else HANDED_OVER

    @property
    def idle(self) -> bool:
        """Scanned, still docked, and no copier reads it."""
        return self.reader is None and not self.cancel.is_set() and self.scanned


class DockedRegistry:
    def __init__(self) -> None:
        self._docked: dict[str, Docked] = {}
        self._unrecorded: dict[str, DockedVolume] = {}  # dockings the ledger did not take yet
        self._unreadable: dict[str, UnreadableCamera] = {}  # docked, but cannot be mounted
        self._lock = threading.Lock()

    def add(self, docked: Docked) -> None:
        with self._lock:
            self._unrecorded.pop(docked.volume.device, None)
            self._docked[docked.volume.device] = docked

    def add_unrecorded(self, volume: DockedVolume) -> None:
        """A volume whose docking the ledger could not record: tried again at a rescan."""
        with self._lock:
            self._unrecorded[volume.device] = volume

    def add_unreadable(self, camera: UnreadableCamera) -> None:
        """A docked camera that cannot be mounted (for the alarm); reported again while so."""
        with self._lock:
            self._unreadable[camera.device] = camera

    def readable_again(self, device: str) -> None:
        with self._lock:
            self._unreadable.pop(device, None)

    def unreadable(self) -> list[UnreadableCamera]:
        with self._lock:
            return list(self._unreadable.values())

    def undock(self, device: str) -> Docked | None:
        """The device went away: forget it, recorded or not."""
        with self._lock:
            self._unrecorded.pop(device, None)
            return self._docked.pop(device, None)

    def discard(self, docked: Docked) -> None:
        """The offload is done: the volume is no longer the daemon's."""
        with self._lock:
            self._docked.pop(docked.volume.device, None)

    def everything(self) -> list[Docked]:
        with self._lock:
            return list(self._docked.values())

    def unrecorded(self) -> list[DockedVolume]:
        with self._lock:
            return list(self._unrecorded.values())

    def idle(self) -> list[Docked]:
        with self._lock:
            return [docked for docked in self._docked.values() if docked.idle]

    def take(self, reader: str, has_work: Callable[[Docked], bool]) -> Docked | None:
        """An idle docked volume with work (``has_work``, asked outside the lock) for
        ``reader``, now marked as read by it; None when there is none."""
        for docked in self.idle():
            if not has_work(docked):
                continue
            with self._lock:
                if docked.reader is None:
                    docked.reader = reader
                    return docked
        return None

    def put_back(self, docked: Docked) -> None:
        """The reader is done with it for now."""
        with self._lock:
            docked.reader = None

    def count(self) -> int:
        with self._lock:
            return len(self._docked)

    def cancel_all(self) -> None:
        """Copies in progress stop at their next chunk."""
        with self._lock:
            for docked in self._docked.values():
                docked.cancel.set()

    def clear(self) -> list[Docked]:
        """Forget everything; what was docked."""
        with self._lock:
            everything = list(self._docked.values())
            self._docked.clear()
        return everything
