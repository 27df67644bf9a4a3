"""One orchestration of the stages: the worker loops the daemon and ``ingest`` drive.

A :class:`Scheduler` is given the stages (one ledger, one staging area, the hand-over
register), a stop event and a wake event. Its loops are the only ones that claim work:

- :meth:`Scheduler.copy_docking` copies a docking's clips until none is left to claim;
  :meth:`Scheduler.copy_cameras` is the daemon's copier thread, camera after camera;
- :meth:`Scheduler.upload_until` uploads due clips, waiting for work inside the hand-over
  register so that a clip staged meanwhile is read at once (handoff.py), until stopped
  or a stop condition holds (the daemon's: never; ``ingest --wait``: the folder is done);
- :meth:`Scheduler.copy_all` copies a docking with no daemon beside it: while staging is
  full it makes room itself (one upload, then staged copies central storage holds) and
  gives up when nothing moved for ``stall_seconds``;
- :meth:`Scheduler.offload` is ``ingest --wait``: copy_all in the calling thread while
  one thread per uploader runs upload_until, stopping when this folder is done; a clip
  whose copy left for its upload was found damaged is read off the folder again;
- :meth:`Scheduler.redo` is ``resync`` with no daemon: the same, over the dockings resync
  scanned, uploading every due clip and stopping when none is left to claim.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol, TypeVar

import structlog

from bwc_dock.copier import Copier
from bwc_dock.ledger import ClipState, ClipWork
from bwc_dock.ledger.leases import current_owner
from bwc_dock.ledger.models import utc_now
from bwc_dock.ledger.states import PENDING_STATES
from bwc_dock.uploader import Uploader
from bwc_dock.wiring import Stages

log = structlog.get_logger(__name__)

# Without a daemon, copying waiting for staging space gives up when nothing moved this long.
STALL_SECONDS = 60.0


class ProgressSink(Protocol):
    """Where hand-run work reports how far it got (a progress bar, or nothing)."""

    def update(self, done: int, total: int, label: str) -> None:
        """Called after each step."""


class CameraAtDock(Protocol):
    """A docked camera as the daemon's registry hands it to a copier (docked.py)."""

    docking_id: int
    cancel: threading.Event  # set when the camera went
    last_progress_at: datetime  # the stalled-offload alarm reads it


CameraT = TypeVar("CameraT", bound=CameraAtDock)


def _progressed(camera: CameraAtDock) -> None:
    camera.last_progress_at = utc_now()


class Scheduler:
    """The worker loops over one set of stages, until ``stop`` is set (or ``deadline``,
    a time.monotonic() value, has passed)."""

    def __init__(
        self,
        stages: Stages,
        stop: threading.Event,
        wake: threading.Event,
        *,
        idle_seconds: float,
        deadline: float | None = None,
        role: str = "ingest",
    ) -> None:
        """``wake`` is set when there may be new work (a clip staged, a camera docked);
        ``role`` names the hand-run command in its copier's lease owner."""
        self.role = role
        self.stages = stages
        self.ledger = stages.ledger
        self.stop = stop
        self.wake = wake
        self.idle_seconds = idle_seconds
        self.deadline = deadline
        self.stall_seconds = STALL_SECONDS

    def stopped(self) -> bool:
        return self.stop.is_set() or (
            self.deadline is not None and time.monotonic() >= self.deadline
        )

    def idle(self) -> None:
        """Wait for new work, or ``idle_seconds`` at most."""
        self.wake.wait(self.idle_seconds)
        self.wake.clear()

    # -- copying -------------------------------------------------------------------------

    def copy_cameras(
        self,
        copier: Copier,
        take: Callable[[], CameraT | None],
        put_back: Callable[[CameraT], None],
    ) -> None:
        """The daemon's copier worker: camera after camera (``take``, ``put_back``), each
        until nothing is left to copy or it went. While staging is full it pauses between
        turns (the daemon's main loop makes room)."""
        while not self.stop.is_set():
            camera = take()
            if camera is None:
                self.idle()
                continue
            try:
                self.copy_docking(
                    copier, camera.docking_id, camera.cancel, partial(_progressed, camera)
                )
                if self.stages.staging.paused:
                    self.stop.wait(self.idle_seconds)
            finally:
                put_back(camera)
        copier.wait_verified()  # the clip being verified reaches staged before we stop

    def copy_docking(
        self,
        copier: Copier,
        docking_id: int,
        cancel: threading.Event,
        on_copied: Callable[[], None] | None = None,
    ) -> None:
        """Copy the docking's clips until none is left to claim now, the camera went
        (``cancel``) or the scheduler stops. Verifying clip N from disk overlaps reading
        clip N+1 (the copier's own verify thread). A deadline does not cut a copy short."""
        while not self.stop.is_set() and not cancel.is_set():
            if not copier.copy_next(cancel, docking_id, verify_in_background=True):
                return
            if on_copied is not None:
                on_copied()

    def copy_all(
        self, docking_id: int, uploader: Uploader, progress: ProgressSink | None = None
    ) -> str | None:
        """Copy every clip of the docking with no daemon to make room in staging: None
        when done, else why copying stopped short (staging stayed full with nothing to
        upload or purge, or the deadline passed)."""
        copier = self.stages.copier(current_owner(f"{self.role}-copier"), self.wake.set)
        total = len(self.ledger.clips(docking_id=docking_id))
        copied = [0]
        last_progress = time.monotonic()

        def on_copied() -> None:
            nonlocal last_progress
            copied[0] += 1
            last_progress = time.monotonic()
            if progress:
                progress.update(copied[0], total, "copying")

        cancel = threading.Event()
        while True:
            self.copy_docking(copier, docking_id, cancel, on_copied)
            if not self.stages.staging.paused:
                return None
            if self._make_room(uploader):
                last_progress = time.monotonic()
            stalled = time.monotonic() - last_progress
            if stalled >= self.stall_seconds or self.stopped():
                return self._staging_stalled(stalled)

    def _make_room(self, uploader: Uploader) -> bool:
        """Staging is full and no daemon runs: upload a staged clip, then drop as many
        staged copies central storage already holds as the waiting clip needs (retention
        gives way to space, and only that far). Whether any room was made."""
        if not uploader.upload_next():
            self.stop.wait(self.idle_seconds)
        return self.stages.staging.make_room(self.ledger, utc_now()) > 0

    def _staging_stalled(self, stalled_seconds: float) -> str:
        staging = self.stages.staging
        return (
            f"staging full: the next clip needs {staging.shortfall_bytes()} B more and "
            f"nothing was copied, uploaded or purged for {stalled_seconds:.0f} s "
            f"(free {staging.free_bytes()} B, reserve {staging.reserve_bytes} B); "
            "free space in staging or run the daemon, then ingest again"
        )

    # -- uploading -----------------------------------------------------------------------

    def upload_until(
        self,
        uploader: Uploader,
        finished: Callable[[], bool] | None = None,
        only: Collection[int] | None = None,
        on_uploaded: Callable[[], None] | None = None,
    ) -> None:
        """Upload due clips (of ``only``, if given) until the scheduler stops or, when
        none could be claimed, ``finished()`` says there is nothing left to wait for."""
        while not self.stopped():
            work = self.ledger.claim_for_upload(uploader.owner, only)
            if work is not None:
                uploader.upload(work)
                if on_uploaded is not None:
                    on_uploaded()
                continue
            if finished is not None and finished():
                return
            with self.stages.handoff.waiting():  # a clip staged now is read at once
                self.idle()

    # -- ingest --wait -------------------------------------------------------------------

    def offload(
        self,
        docking_id: int,
        camera_serial: str,
        clip_ids: Collection[int],
        uploaders: Sequence[Uploader],
        progress: ProgressSink | None = None,
    ) -> str | None:
        """Copy the docking in this thread while one thread per uploader uploads the
        folder's clips as they are staged, until this folder is done: clip N goes to
        central storage while clip N+1 is read off the camera, as in the daemon. What
        copy_all says (why copying stopped short, or None)."""
        folder = _Folder(self, set(clip_ids), progress)

        def copy() -> str | None:
            stopped = self._copy_and_read_again(docking_id, camera_serial, uploaders[0], progress)
            self.ledger.end_docking(docking_id, "ingest copied")
            return stopped

        return self._while_uploading(copy, uploaders, folder)

    # -- resync with no daemon -----------------------------------------------------------

    def redo(
        self,
        dockings: Sequence[tuple[int, str]],
        uploaders: Sequence[Uploader],
        progress: ProgressSink | None = None,
    ) -> Redone:
        """Copy the clips of each (docking, camera serial) in turn in this thread while
        one thread per uploader uploads every due clip (not only these: with no daemon
        nobody else would), until copying is over and none is left to claim."""
        drain = _Drain(self, progress)
        waiting = {
            work.id: work.state
            for state in PENDING_STATES
            for work in self.ledger.clips(state=str(state))
        }

        def copy() -> str | None:
            for docking_id, camera_serial in dockings:
                stopped = self._copy_and_read_again(docking_id, camera_serial, uploaders[0], drain)
                if stopped is not None:
                    return stopped
            return None

        stopped = self._while_uploading(copy, uploaders, drain)
        now = self._states_now(list(waiting))
        return Redone(
            copied=sum(
                1
                for clip, state in waiting.items()
                if state in _TO_COPY and now.get(clip) in _COPIED
            ),
            uploaded=sum(1 for clip in waiting if now.get(clip) in _IN_STORAGE),
            stopped=stopped,
        )

    def _states_now(self, clip_ids: list[int]) -> dict[int, ClipState]:
        """The clips' states, read in batches below SQLite's limit on bound parameters."""
        states: dict[int, ClipState] = {}
        for start in range(0, len(clip_ids), _READ_BATCH):
            batch = clip_ids[start : start + _READ_BATCH]
            states.update((work.id, work.state) for work in self.ledger.clips(ids=batch))
        return states

    # -- copying while uploading ---------------------------------------------------------

    def _while_uploading(
        self, copy: Callable[[], str | None], uploaders: Sequence[Uploader], until: _Until
    ) -> str | None:
        """Run ``copy`` in this thread while one thread per uploader runs upload_until
        with ``until``'s stop condition: clip N goes to central storage while clip N+1
        is read off the camera, as in the daemon. What ``copy`` says."""
        failures: list[Exception] = []

        def upload(uploader: Uploader) -> None:
            try:
                self.upload_until(uploader, until.done, until.clip_ids, until.uploaded)
            except Exception as error:  # handed to the caller's thread below
                log.exception(f"{self.role}.upload_failed", error=str(error))
                failures.append(error)

        threads = [
            threading.Thread(target=upload, args=(uploader,), name=uploader.owner, daemon=True)
            for uploader in uploaders
        ]
        for thread in threads:
            thread.start()
        try:
            stopped = copy()
        except BaseException:
            self.stop.set()  # the uploads in progress finish; no new one starts
            raise
        finally:
            until.copied.set()
            self.wake.set()
            for thread in threads:
                thread.join()
        if failures:
            raise failures[0]
        return stopped

    def _copy_and_read_again(
        self,
        docking_id: int,
        camera_serial: str,
        uploader: Uploader,
        progress: ProgressSink | None,
    ) -> str | None:
        """copy_all; then, once no copy of the camera waits for its upload to verify it,
        again as long as one was found damaged and sent back (handoff.py)."""
        stopped = self.copy_all(docking_id, uploader, progress)
        while stopped is None and self._sent_back(camera_serial):
            stopped = self.copy_all(docking_id, uploader, progress)
        return stopped

    def _sent_back(self, camera_serial: str) -> bool:
        """Once every clip of the camera left to an upload to verify is verified (or the
        scheduler stopped), whether one was found damaged and sent back to be read again."""
        handoff = self.stages.handoff
        while not self.stopped() and self.ledger.unverified_staged(camera_serial) > 0:
            handoff.wait_for_change(self.idle_seconds)
        return handoff.sent_back(camera_serial) > 0


_READ_BATCH = 500
_TO_COPY = {ClipState.DISCOVERED, ClipState.COPYING}
_IN_STORAGE = {ClipState.UPLOADED, ClipState.CLEARED}
_COPIED = {ClipState.STAGED, ClipState.UPLOADING} | _IN_STORAGE


@dataclass(frozen=True)
class Redone:
    """What :meth:`Scheduler.redo` did, as the ledger shows it: clips that were waiting
    to be copied and now are staged or further, clips that were pending and are now in
    central storage, and why copying stopped short (None: it did not)."""

    copied: int
    uploaded: int
    stopped: str | None


class _Until(Protocol):
    """When the uploading threads beside a copy stop, and what they report."""

    copied: threading.Event  # copying is over: no more clips to come

    @property
    def clip_ids(self) -> Collection[int] | None:
        """The clips to upload (None: every due clip)."""

    def done(self) -> bool:
        """Asked when no clip could be claimed: nothing is left to wait for."""

    def uploaded(self) -> None:
        """A clip was uploaded (or put back)."""


class _Drain:
    """The stop condition of ``resync`` with no daemon: copying is over and no clip can
    be claimed for upload; reports copies and uploads as they happen."""

    clip_ids: Collection[int] | None = None

    def __init__(self, scheduler: Scheduler, progress: ProgressSink | None) -> None:
        self.wake = scheduler.wake
        self.progress = progress
        self.copied = threading.Event()
        self.copies = 0  # copy attempts: a clip waiting for room in staging counts again
        self.uploads = 0
        self._lock = threading.Lock()  # the uploading threads count here

    def done(self) -> bool:
        return self.copied.is_set()

    def update(self, done: int, total: int, label: str) -> None:
        """copy_all's progress: one call per clip copied."""
        self.copies += 1  # only the copying thread calls this
        if self.progress:
            self.progress.update(self.copies, self.copies, "copying")

    def uploaded(self) -> None:
        self.wake.set()  # the other uploaders may have nothing left to wait for now
        with self._lock:
            self.uploads += 1
            uploads = self.uploads
        if self.progress:
            self.progress.update(uploads, uploads, "uploading")


class _Folder:
    """The stop condition of ``ingest --wait``: this folder's clips are all done."""

    def __init__(
        self, scheduler: Scheduler, clip_ids: set[int], progress: ProgressSink | None
    ) -> None:
        self.ledger = scheduler.ledger
        self.wake = scheduler.wake
        self.clip_ids = clip_ids
        self.progress = progress
        self.copied = threading.Event()  # copying is over: no more clips to come

    def done(self) -> bool:
        """Copying is over and nothing is left to wait for. The folder's clips are read
        only when none could be claimed: reading them after every upload made a folder
        of n clips cost n² rows (2,000 small clips took 4.5 minutes)."""
        if not self.copied.is_set():
            return False
        pending = [w for w in self.ledger.clips(ids=self.clip_ids) if w.state in PENDING_STATES]
        return not pending or _stuck_for_good(pending)

    def uploaded(self) -> None:
        """A clip of the folder was uploaded (or put back): the other uploaders may have
        nothing left to wait for now."""
        self.wake.set()
        if self.progress:
            total = len(self.clip_ids)
            done = total - self.ledger.pending_among(self.clip_ids)
            self.progress.update(done, total, "uploading")


def _stuck_for_good(pending: list[ClipWork]) -> bool:
    """Only clips that cannot move without a camera (not docked any more) are left."""
    return all(w.state is ClipState.DISCOVERED for w in pending)
