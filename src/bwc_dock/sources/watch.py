"""Watch folders: each subfolder of a watched folder is one docked camera volume.

Useful for card readers, cameras that mount themselves, and the demo. The camera
serial is the subfolder's name unless the folder profile reads it from a file. A
subfolder present when the daemon starts counts as docked; removing it undocks.
Drop a finished folder in with a rename (``mv``): a folder still being filled is
read as far as it goes, and the periodic rescan picks up the rest.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from bwc_dock.config import CameraProfile
from bwc_dock.found import DockedVolume, display_path
from bwc_dock.names import safe_name
from bwc_dock.scanner import parent_directory
from bwc_dock.sources.base import Source, SourceCapabilities, SourceListener

log = structlog.get_logger(__name__)

MAX_SERIAL_FILE_BYTES = 256


class WatchFolderSource(Source):
    name = "watch"
    # a folder may still be filling up; it stays docked until it is removed
    capabilities = SourceCapabilities(rescans_while_docked=True, releases_after_offload=False)

    def __init__(self, watch_dirs: tuple[Path, ...], profile: CameraProfile) -> None:
        self.watch_dirs = watch_dirs
        self.profile = profile
        self._listener: SourceListener | None = None
        self._present: dict[str, DockedVolume] = {}
        self._lock = threading.Lock()
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._watches: dict[Path, ObservedWatch] = {}

    def start(self, listener: SourceListener) -> None:
        self._listener = listener
        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._observe(self.watch_dirs)
        self.rescan()

    def watch(self, watch_dirs: tuple[Path, ...], profile: CameraProfile) -> None:
        """A reload: watch these folders with this profile from now on. The subfolders
        of a new folder dock, those of a folder no longer watched undock."""
        with self._lock:
            before, self.watch_dirs, self.profile = self.watch_dirs, watch_dirs, profile
        for gone in set(before) - set(watch_dirs):
            watch = self._watches.pop(gone, None)
            if watch is not None and self._observer is not None:
                self._observer.unschedule(watch)
        if self._observer is not None:  # started: else start() watches them
            self._observe(tuple(d for d in watch_dirs if d not in before))
            self.rescan()

    def _observe(self, watch_dirs: tuple[Path, ...]) -> None:
        assert self._observer is not None
        handler = _Handler(self)
        for watch_dir in watch_dirs:
            watch_dir.mkdir(parents=True, exist_ok=True)
            self._watches[watch_dir] = self._observer.schedule(
                handler, str(watch_dir), recursive=False
            )

    def rescan(self) -> None:
        """Dock every subfolder present and undock every one that is gone."""
        found: set[str] = set()
        for watch_dir in self.watch_dirs:
            try:
                children = [child for child in watch_dir.iterdir() if _is_real_directory(child)]
            except OSError as error:
                log.warning("source.watch_unreadable", folder=str(watch_dir), error=str(error))
                continue
            for child in children:
                found.add(str(child))
                self._appeared(child)
        with self._lock:
            gone = [device for device in self._present if device not in found]
        for device in gone:
            self._disappeared(device)

    def release(self, volume: DockedVolume) -> None:
        """A folder stays docked until it is removed; nothing to unmount."""

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _appeared(self, folder: Path) -> None:
        if not _is_real_directory(folder):
            return
        device = str(folder)
        with self._lock:
            if device in self._present:
                return
            volume = self._volume(folder)
            if volume is None:
                return
            self._present[device] = volume
        log.info("dock.docked", source="watch", camera=volume.camera_serial, device=device,
                 **volume.device_identity())
        assert self._listener is not None
        self._listener.docked(volume)

    def _disappeared(self, device: str) -> None:
        with self._lock:
            volume = self._present.pop(device, None)
        if volume is not None:
            log.info("dock.undocked", source="watch", camera=volume.camera_serial, device=device)
            assert self._listener is not None
            self._listener.undocked(device)

    def _volume(self, folder: Path) -> DockedVolume | None:
        serial = self._serial(folder)
        if serial is None:
            return None
        return DockedVolume(
            source="watch",
            device=str(folder),
            root=folder,
            camera_serial=serial,
            profile_name=self.profile.name,
        )

    def _serial(self, folder: Path) -> str | None:
        if self.profile.serial_source != "file":
            return folder_serial(folder)
        assert self.profile.serial_file is not None
        try:
            first_line = _read_serial_file(folder, self.profile.serial_file)
        except OSError as error:
            log.warning(
                "source.no_serial",
                folder=str(folder),
                file=self.profile.serial_file,
                error=str(error),
            )
            return None
        serial = safe_name(first_line[0].strip()) if first_line else ""
        return serial if serial and serial != "unnamed" else None


def _read_serial_file(folder: Path, serial_file: str) -> list[bytes]:
    """The first line of ``serial_file`` below ``folder``, reached and opened without
    following a link anywhere on the way (the folder's content is the camera's)."""
    with parent_directory(folder, os.fsencode(serial_file)) as (directory_fd, name):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=directory_fd)
    with os.fdopen(fd, "rb") as opened:
        if not stat.S_ISREG(os.fstat(opened.fileno()).st_mode):  # a FIFO would block
            raise OSError("not a regular file")
        return opened.read(MAX_SERIAL_FILE_BYTES).splitlines()[:1]


def folder_serial(folder: Path) -> str:
    """The camera serial a folder name stands for, made safe for keys and logs."""
    raw = bytes(folder.name, "utf-8", "surrogateescape")
    serial = safe_name(raw)
    if serial != folder.name:
        log.warning("source.serial_sanitised", folder=display_path(raw), serial=serial)
    return serial


def _is_real_directory(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


class _Handler(FileSystemEventHandler):
    def __init__(self, source: WatchFolderSource) -> None:
        self.source = source

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Events only say "look again"; the folder listing is the truth. This also
        # covers moves in and out and the burst of events a copy into the folder makes.
        if isinstance(event, DirCreatedEvent | DirDeletedEvent | DirMovedEvent):
            self.source.rescan()
