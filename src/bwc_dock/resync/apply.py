"""Carrying out resync's plan: each repair value through the ledger's own methods (every
state change checked against the state machine and audited), the staging folder and
central storage; with no daemon running, the copying and uploading too, through the
daemon's own worker loops (scheduler.py) under the same leases.

:class:`PlanOnly` is the dry run's stand-in: it carries out nothing and reports each
repair as planned, so the run itself never asks whether it is a dry run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

import structlog

from bwc_dock.config import Config
from bwc_dock.custody import write_docking_sums
from bwc_dock.durable import rename_durably
from bwc_dock.errors import BwcDockError, RefusalKind, StorageError
from bwc_dock.ledger import ClipState, Ledger
from bwc_dock.ledger.leases import current_owner
from bwc_dock.resync.repairs import (
    Action,
    AdoptStagedCopy,
    CannotRepair,
    CleanPartials,
    KeepConflictAside,
    Outcome,
    QuarantineStrayFile,
    RedoWork,
    Repair,
    Requeue,
    Rescan,
    RewriteSums,
    Status,
    Unrepairable,
)
from bwc_dock.scheduler import Redone, Scheduler
from bwc_dock.storage.base import StorageBackend
from bwc_dock.verify import REMOTE_STATES
from bwc_dock.wiring import Stages

log = structlog.get_logger(__name__)

Progress = Callable[[int, int, str], None]
# how long an idle uploading thread waits for a clip to be staged before it looks again
IDLE_SECONDS = 0.5


class Carrier(Protocol):
    """What the run hands each repair to: the applier, or the dry run's PlanOnly."""

    requeued: set[int]  # clips actually put back in the queue

    def begin(self, details: Mapping[str, object]) -> None: ...

    def apply(self, repair: Repair) -> Outcome: ...

    def end(self, summary: Mapping[str, object]) -> None: ...

    def close(self) -> None: ...


def unrepairable(repair: CannotRepair) -> Outcome:
    problem = Unrepairable(repair.clip_id, repair.camera_serial, repair.problem)
    return Outcome(Status.CANNOT_REPAIR, unrepairable=(problem,))


class PlanOnly:
    """A dry run: nothing carried out, nothing audited; each repair's finding reported."""

    def __init__(self) -> None:
        self.requeued: set[int] = set()

    def begin(self, details: Mapping[str, object]) -> None:
        """A dry run leaves no audit row."""

    def apply(self, repair: Repair) -> Outcome:
        if isinstance(repair, CannotRepair):
            return unrepairable(repair)
        return Outcome(Status.PLANNED, action=repair.finding())

    def end(self, summary: Mapping[str, object]) -> None:
        """A dry run leaves no audit row."""

    def close(self) -> None:
        """Nothing was opened."""


class Applier:
    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        backend: StorageBackend,
        *,
        camera_serial: str | None,
        progress: Progress | None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.backend = backend
        self.camera_serial = camera_serial
        self.progress = progress
        self.owner = current_owner("resync")
        self.requeued: set[int] = set()
        self._opened_dockings: list[int] = []
        # (docking, camera serial) of every docked camera, for RedoWork
        self._scanned_dockings: list[tuple[int, str]] = []

    def begin(self, details: Mapping[str, object]) -> None:
        self.ledger.record_event(
            "resync.started", camera_serial=self.camera_serial, details=dict(details)
        )

    def end(self, summary: Mapping[str, object]) -> None:
        self.ledger.record_event(
            "resync.done", camera_serial=self.camera_serial, details=dict(summary)
        )

    def close(self) -> None:
        """End the dockings resync itself opened for cameras nobody else read."""
        for docking_id in self._opened_dockings:
            self.ledger.end_docking(docking_id, "resync done")

    def apply(self, repair: Repair) -> Outcome:
        outcome = Outcome(Status.DONE, action=repair.finding())
        match repair:
            case AdoptStagedCopy():
                outcome = self._adopt(repair)
            case QuarantineStrayFile():
                outcome = self._quarantine_file(repair)
            case Rescan():
                outcome = self._rescan(repair)
            case Requeue():
                outcome = self._requeue(repair)
            case KeepConflictAside():
                outcome = self._keep_conflict_aside(repair) or outcome
            case RewriteSums():
                outcome = self._rewrite_sums(repair) or outcome
            case CleanPartials():
                outcome = self._clean_partials()
            case RedoWork():
                outcome = self._redo_work()
            case CannotRepair():
                outcome = unrepairable(repair)
        return outcome

    # -- staging -------------------------------------------------------------------------

    def _adopt(self, repair: AdoptStagedCopy) -> Outcome:
        repair.target.parent.mkdir(parents=True, exist_ok=True)
        rename_durably(repair.stray, repair.target)
        try:
            self.ledger.adopt_staged_copy(
                repair.clip_id, repair.staged_path, str(repair.stray), str(repair.target)
            )
        except BwcDockError as error:  # a worker took the clip since it was planned
            return self._failed(repair.finding(), repair.clip_id, repair.camera_serial, error)
        return Outcome(Status.DONE, action=repair.finding())

    def _quarantine_file(self, repair: QuarantineStrayFile) -> Outcome:
        target = repair.target
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target = target.with_name(f"{target.name}.{datetime.now().strftime('%Y%m%d%H%M%S%f')}")
        rename_durably(repair.stray, target)  # a rename: never follows a symlink, never loses bytes
        self.ledger.record_event(
            "staging.quarantined_file", details={"from": str(repair.stray), "to": str(target)}
        )
        return Outcome(Status.DONE, action=repair.finding())

    # -- docked cameras ------------------------------------------------------------------

    def _rescan(self, repair: Rescan) -> Outcome:
        volume = repair.camera.volume
        docking_id = repair.camera.docking_id
        if docking_id is None:
            docking_id = self.ledger.record_docking(volume, self.owner)
            self._opened_dockings.append(docking_id)
        self._scanned_dockings.append((docking_id, volume.camera_serial))
        if repair.scan is None:
            return Outcome(Status.FAILED, error="the scan failed")
        new_ids = self.ledger.record_scan(
            docking_id, repair.scan.clips, len(repair.scan.refused), priority=repair.priority
        )
        log.info(
            "dock.scanned",
            camera=volume.camera_serial,
            docking=docking_id,
            clips=len(repair.scan.clips),
            new=len(new_ids),
            refused=len(repair.scan.refused),
        )
        found = (
            repair.found(f"{len(new_ids)} clips on {{}} were not in the ledger", "recorded")
            if new_ids
            else None
        )
        return Outcome(Status.DONE, action=found)

    # -- clips -----------------------------------------------------------------------------

    def _requeue(self, repair: Requeue) -> Outcome:
        work = repair.work
        try:
            for kept in repair.keep_aside_first:
                refused = self._keep_conflict_aside(kept)
                if refused is not None:
                    return refused
            if work.state is ClipState.CLEARED:
                # cleared -> staged is no transition of its own: the clip is quarantined
                # first, so the audit log says plainly that a cleared clip lost its copy
                self.ledger.quarantine(work, None, repair.reason)
            self.ledger.requeue(work.id, repair.target, repair.reason)
        except BwcDockError as error:
            return self._failed(repair.found, work.id, work.camera_serial, error)
        self.requeued.add(work.id)
        return Outcome(Status.DONE, action=repair.found)

    def _keep_conflict_aside(self, kept: KeepConflictAside) -> Outcome | None:
        """Copy the other bytes under a clip's key aside (verified by their hash) and audit
        it; they are never removed, so the clip cannot be repaired here (a person decides);
        None when they are gone already."""
        try:
            copy = self.backend.copy_object(kept.key, kept.aside_key)
        except StorageError as error:
            if getattr(error, "kind", None) is RefusalKind.MISSING_OBJECT:
                return None  # gone since it was read: nothing in the way, nothing to keep
            return self._cannot(
                kept, f"could not be kept aside at {kept.aside_key} ({error}); nothing removed"
            )
        if copy.sha256 != kept.found:
            return self._cannot(
                kept,
                f"its copy at {kept.aside_key} hashes to {copy.sha256} (changed while resync "
                "ran?); nothing removed",
            )
        self.ledger.record_event(
            "object.conflict_kept",
            camera_serial=kept.camera_serial,
            clip_id=kept.clip_id,
            sha256=kept.found,
            details={
                "key": kept.key,
                "their_sha256": kept.found,
                "expected": kept.expected,
                "aside_key": kept.aside_key,
            },
        )
        log.error(
            "resync.conflict_kept",
            clip=kept.clip_id,
            camera=kept.camera_serial,
            key=kept.key,
            their_sha256=kept.found,
            expected=kept.expected,
            aside_key=kept.aside_key,
        )
        # Never removed, even kept aside: the bytes may be another dock's evidence under a
        # key both make (an old template), and central storage is never ours to clean.
        return self._cannot(
            kept,
            f"a copy is kept at {kept.aside_key}; the object under the key is left as it"
            f" is (it may be another dock's evidence): a person reviews it, and only if it"
            f" is not evidence removes it, then runs resync again",
        )

    @staticmethod
    def _cannot(kept: KeepConflictAside, what: str) -> Outcome:
        problem = (
            f"{kept.key} holds other content (sha256 {kept.found}, expected "
            f"{kept.expected}): tampering or corruption; {what}"
        )
        return unrepairable(CannotRepair(kept.clip_id, kept.camera_serial, problem))

    @staticmethod
    def _failed(
        action: Action, clip_id: int, camera_serial: str, error: BwcDockError
    ) -> Outcome:
        problem = Unrepairable(clip_id, camera_serial, f"repair failed: {error}")
        return Outcome(Status.FAILED, action=action, unrepairable=(problem,), error=str(error))

    def _rewrite_sums(self, repair: RewriteSums) -> Outcome | None:
        """Write a docking's list; a refusal is reported with the rest, not raised
        (one unwritable name must not end resync before its report); None when done."""
        try:
            write_docking_sums(self.ledger, self.backend, repair.docking_id)
        except StorageError as error:
            problem = Unrepairable(None, None, f"docking {repair.docking_id}: its"
                                   f" SHA256SUMS could not be written: {error}")
            return Outcome(Status.FAILED, action=repair.finding(), unrepairable=(problem,),
                           error=str(error))
        return None

    # -- no daemon: do the work ourselves ---------------------------------------------------

    def _clean_partials(self) -> Outcome:
        try:
            removed = self.backend.cleanup_partials()
        except StorageError as error:
            log.warning("resync.cleanup_failed", error=str(error))
            return Outcome(Status.FAILED, error=str(error))
        action = (
            Action("partial_uploads", f"{removed} leftovers of interrupted uploads", "removed them")
            if removed
            else None
        )
        return Outcome(Status.DONE, action=action)

    def _redo_work(self) -> Outcome:
        redone = self._copy_and_upload()
        problems = tuple(
            Unrepairable(
                work.id,
                work.camera_serial,
                f"repair attempted, clip is {work.state}: {work.last_error or '-'}",
            )
            for work in self.ledger.clips(camera_serial=self.camera_serial)
            if work.id in self.requeued and work.state not in REMOTE_STATES
        )
        if redone.stopped is not None:
            problems += (Unrepairable(None, None, f"copying stopped short: {redone.stopped}"),)
        return Outcome(
            Status.DONE, unrepairable=problems, copied=redone.copied, uploaded=redone.uploaded
        )

    def _copy_and_upload(self) -> Redone:
        """The daemon's worker loops (scheduler.py) over the docked cameras resync
        scanned, with as many uploading threads as the daemon has upload workers, until
        nothing is left to copy or to claim for upload."""
        stages = Stages(self.config, self.ledger, self.backend)
        uploaders = [
            stages.uploader(current_owner(f"resync-uploader-{number}"))
            for number in range(1, self.config.dock.upload_workers + 1)
        ]
        scheduler = Scheduler(
            stages, threading.Event(), threading.Event(), idle_seconds=IDLE_SECONDS,
            role="resync",
        )
        progress = _ProgressCalls(self.progress) if self.progress else None
        return scheduler.redo(self._scanned_dockings, uploaders, progress)


class _ProgressCalls:
    """The scheduler's progress sink over resync's progress callable."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def update(self, done: int, total: int, label: str) -> None:
        self.progress(done, total, label)
