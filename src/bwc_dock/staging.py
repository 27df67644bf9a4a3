"""The dock's staging folder: where clips wait, verified, between camera and central storage.

Copies live in one folder per clip (named from the ledger id, never from a camera path)
and stay after upload until retention ends. :class:`StagingArea` keeps the space the
dock needs free and decides which staged copies may go when copying waits for room. The
helpers at the end leave no unfinished copy behind when the copier's read of a clip fails.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from bwc_dock.durable import PendingFile
from bwc_dock.errors import HostileEntry, IntegrityError, LeaseLost, StagingFull
from bwc_dock.ledger import ClipWork, Ledger

log = structlog.get_logger(__name__)

# Evidence waiting in staging is for root and the daemon alone, whatever the umask.
STAGING_DIRECTORY_MODE = 0o700


@dataclass
class StagingArea:
    """The dock's local staging folder and the space it must leave free.

    A clip that does not fit pauses copying until uploads and purges free room; one that
    could never fit (larger than the staging filesystem minus the reserve, e.g. a sparse
    file inflated on the camera) is refused alone as hostile instead of pausing forever.
    While copying waits, :meth:`make_room` deletes staged copies of clips central storage
    has verified, oldest upload first and only as many as the waiting clip needs, so one
    clip never empties staging of the copies that retention keeps; and none at all when
    deleting every one of them would still leave the clip without room.
    """

    root: Path
    reserve_bytes: int
    _paused: bool = field(default=False, init=False)
    _waiting_bytes: int = field(default=0, init=False)  # the size of the clip paused on
    _purge_declined: bool = field(default=False, init=False)  # logged once per pause
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def clip_folder(self, clip_id: int) -> str:
        return f"clips/{clip_id:08d}"

    def free_bytes(self) -> int:
        """Free bytes on the filesystem that holds (or, before the first copy, will hold)
        staging; OSError when even that cannot be read."""
        stats = os.statvfs(_nearest_existing(self.root))
        return stats.f_bavail * stats.f_frsize

    def usable_bytes(self) -> int:
        """The most a clip can ever take: the staging filesystem's size minus the reserve."""
        stats = os.statvfs(_nearest_existing(self.root))
        return stats.f_blocks * stats.f_frsize - self.reserve_bytes

    def reserve_room(self, needed: int, camera: str) -> None:
        """Raise StagingFull (logged once per pause) when ``needed`` bytes do not fit now,
        HostileEntry when they never could."""
        self.root.mkdir(mode=STAGING_DIRECTORY_MODE, parents=True, exist_ok=True)
        usable = self.usable_bytes()
        if needed > usable:
            raise HostileEntry(
                f"clip of {needed} B can never fit staging ({usable} B usable after the "
                f"{self.reserve_bytes} B reserve): refused, the camera's other clips go on"
            )
        free = self.free_bytes()
        with self._lock:
            if free - needed < self.reserve_bytes:
                self._waiting_bytes = needed
                if not self._paused:
                    log.warning(
                        "copy.paused",
                        reason="staging full",
                        free_bytes=free,
                        needed_bytes=needed,
                        reserve_bytes=self.reserve_bytes,
                        camera=camera,
                    )
                    self._paused = True
                raise StagingFull(f"staging has {free} B free, needs {needed} B + reserve")
            if self._paused:
                log.info("copy.resumed", free_bytes=free)
                self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def shortfall_bytes(self) -> int:
        """How many bytes the clip copying waits for still lacks (0 when not paused)."""
        if not self._paused:
            return 0
        return max(0, self._waiting_bytes + self.reserve_bytes - self.free_bytes())

    def purge_uploaded(self, ledger: Ledger, uploaded_before: datetime) -> int:
        """Delete the staged copies of clips uploaded before ``uploaded_before``."""
        purged = 0
        for work in ledger.purgeable(uploaded_before):
            self._purge(ledger, work)
            purged += 1
        if purged:
            log.info("staging.purged", clips=purged)
        return purged

    def make_room(self, ledger: Ledger, now: datetime) -> int:
        """While copying waits for space: delete staged copies of uploaded clips (verified
        in central storage) before their retention ends, oldest upload first, and only
        until the waiting clip fits."""
        purged = 0
        purgeable = ledger.purgeable(now)
        releasable = sum(_folder_bytes(self.root / work.staged_path)
                         for work in purgeable if work.staged_path is not None)
        shortfall = self.shortfall_bytes()
        if shortfall > releasable:
            # purging them all would not let the waiting clip in (a sparse "clip", or
            # staging shared with other files): keep them, wait for uploads to free room
            if not self._purge_declined:
                log.warning("staging.purge_declined", shortfall_bytes=shortfall,
                            releasable_bytes=releasable,
                            why="purging every retained copy would still not make room")
                self._purge_declined = True
            return 0
        self._purge_declined = False
        for work in purgeable:
            if self.shortfall_bytes() <= 0:
                break
            self._purge(ledger, work)
            purged += 1
        if purged:
            log.info("staging.purged_for_room", clips=purged, shortfall=self.shortfall_bytes())
        return purged

    def _purge(self, ledger: Ledger, work: ClipWork) -> None:
        assert work.staged_path is not None
        folder = self.root / work.staged_path
        for staged in [folder / work.name, *(folder / s.name for s in work.sidecars)]:
            staged.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError as error:
            log.warning("staging.purge_incomplete", clip=work.id, error=str(error))
        ledger.mark_purged(work.id)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor: staging is created on the first copy, and
    until then the folder it will be made in sits on the same filesystem."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def _folder_bytes(folder: str | Path) -> int:
    """Disk space of the regular files directly in ``folder`` (allocated blocks)."""
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    except FileNotFoundError:
        pass
    return total


# -- a clip's files while the copier writes them ---------------------------------------


@contextmanager
def staging_space_errors() -> Iterator[None]:
    """A full staging disk (at write or at fsync) is StagingFull: copying waits for room."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StagingFull(f"staging filled up while copying: {error.strerror}") from error
        raise


@contextmanager
def discarded_unless_kept(files: list[PendingFile]) -> Iterator[None]:
    """On failure, close and remove the temporary files written so far (published ones
    stay for discarded_on_failure to judge)."""
    try:
        yield
    except BaseException:
        for part in files:
            part.discard()
        raise


@contextmanager
def discarded_on_failure(folder: Path, work: ClipWork) -> Iterator[None]:
    """On failure, leave no unfinished copy of the clip in staging."""
    try:
        yield
    except LeaseLost:
        raise  # another worker owns the clip, and this folder, now: leave it alone
    except IntegrityError:
        remove_partials(folder)  # what did verify stays beside the quarantined clip
        raise
    except BaseException:
        # the clip goes back to discovered and is copied whole next time: files that
        # were already in place (the clip, when a sidecar failed) must not stay behind
        _remove_copies(folder, [work.name, *(sidecar.name for sidecar in work.sidecars)])
        raise


def remove_partials(folder: Path) -> None:
    for leftover in folder.glob("*.part"):
        leftover.unlink(missing_ok=True)


def _remove_copies(folder: Path, names: list[str]) -> None:
    """Remove an unfinished copy of a clip: its files, partials and (if empty) its folder."""
    remove_partials(folder)
    for name in names:
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError as error:
        log.debug("copy.folder_kept", folder=str(folder), error=str(error))
