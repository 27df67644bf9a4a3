"""``bwc-dock resync``: reconcile the ledger, staging, central storage and docked cameras.

Resync first *plans*: it reads every view and lists what is wrong and what it would
do about it. ``--dry-run`` stops there and changes nothing (no audit row, no file
moved). Otherwise it applies the plan through the ledger's own methods (every state
change audited and checked against the state machine) and, when no daemon runs,
does the copying and uploading itself with the same Copier and Uploader under the
same leases; with a daemon alive, putting clips back in the queue is enough.

Repairs, in order: staged files the ledger lost are adopted when their hash is
known, staged files nobody knows are moved to ``staging/quarantine`` (never
deleted); docked cameras are rescanned; clips whose central copy is missing or
wrong are re-queued from staging, or re-read from a docked camera; damaged
staged copies of clips not yet uploaded are re-read from a docked camera; the
per-docking SHA256SUMS anchors are rewritten where they are missing or stale;
leftovers of interrupted uploads are removed when nothing uploads. What none of
these can fix is listed as unrepairable and makes the command exit 1.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import structlog
from sqlalchemy import select

from bwc_dock.config import Config
from bwc_dock.custody import docking_sums, stored_sums_current, write_docking_sums
from bwc_dock.errors import BwcDockError, SourceGone, StorageError
from bwc_dock.hashing import fsync_directory, hash_file_from_disk
from bwc_dock.ledger import ClipState, ClipWork, Ledger
from bwc_dock.ledger import audit as audit_chain
from bwc_dock.ledger.leases import current_owner, owner_is_dead
from bwc_dock.ledger.models import Clip, Docking, Sidecar
from bwc_dock.manifest import KeyTemplate
from bwc_dock.scanner import scan_volume
from bwc_dock.scanning import folder_profile, scan_into_ledger, scan_limits
from bwc_dock.sources.base import DockedVolume, SourceListener
from bwc_dock.storage.base import StorageBackend
from bwc_dock.verify import (
    REMOTE_STATES,
    Mismatch,
    check_remote,
    check_staged,
    has_staged_copy,
    purged_clip_ids,
)
from bwc_dock.wiring import Stages

log = structlog.get_logger(__name__)

Progress = Callable[[int, int, str], None]
QUARANTINE_FOLDER = "quarantine"


@dataclass(frozen=True)
class Action:
    """One thing resync found, and what it does (or would do) about it."""

    kind: str
    detail: str
    action: str
    clip_id: int | None = None
    camera_serial: str | None = None


@dataclass(frozen=True)
class Unrepairable:
    clip_id: int | None
    camera_serial: str | None
    problem: str


@dataclass
class ResyncReport:
    dry_run: bool
    daemon_alive: bool
    clips_checked: int = 0
    actions: list[Action] = field(default_factory=list)
    unrepairable: list[Unrepairable] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    copied: int = 0
    uploaded: int = 0

    @property
    def ok(self) -> bool:
        return not self.unrepairable

    def document(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "daemon_alive": self.daemon_alive,
            "clips_checked": self.clips_checked,
            "actions": [asdict(a) for a in self.actions],
            "unrepairable": [asdict(u) for u in self.unrepairable],
            "busy": self.busy,
            "copied": self.copied,
            "uploaded": self.uploaded,
        }


@dataclass(frozen=True)
class _Docked:
    docking_id: int | None  # None: seen by resync, no docking recorded yet (dry run)
    volume: DockedVolume


@dataclass(frozen=True)
class _Adoption:
    stray: Path
    target: Path
    clip_id: int
    camera_serial: str
    staged_path: str


class Resync:
    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        backend: StorageBackend,
        *,
        daemon_alive: bool,
        camera_serial: str | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.backend = backend
        self.camera_serial = camera_serial
        self.dry_run = dry_run
        self.progress = progress
        self.staging_root = config.staging_dir
        self.owner = current_owner("resync")
        self.report = ResyncReport(dry_run, daemon_alive)
        self._opened_dockings: list[int] = []
        self._touched: set[int] = set()

    # -- the whole run ------------------------------------------------------------------

    def run(self) -> ResyncReport:
        log.info("resync.started", dry_run=self.dry_run, daemon_alive=self.report.daemon_alive)
        if not self.dry_run:
            self.ledger.record_event(
                "resync.started",
                camera_serial=self.camera_serial,
                details={"daemon_alive": self.report.daemon_alive},
            )
        try:
            adopted = self._reconcile_staging() if self.camera_serial is None else set()
            docked = self._docked_cameras()
            self._rescan(docked)
            self._check_clips(docked, adopted)
            if not self.report.daemon_alive and not self.dry_run:
                self._cleanup_partials()
                self._work_off(docked)
            self._check_anchors()
        finally:
            for docking_id in self._opened_dockings:
                self.ledger.end_docking(docking_id, "resync done")
        self._finish()
        return self.report

    def _finish(self) -> None:
        for problem in self.report.unrepairable:
            log.error(
                "resync.unrepairable",
                clip=problem.clip_id,
                camera=problem.camera_serial,
                problem=problem.problem,
            )
        summary = {
            "actions": len(self.report.actions),
            "unrepairable": len(self.report.unrepairable),
            "copied": self.report.copied,
            "uploaded": self.report.uploaded,
        }
        log.info("resync.done", dry_run=self.dry_run, **summary)
        if not self.dry_run:
            self.ledger.record_event(
                "resync.done", camera_serial=self.camera_serial, details=summary
            )

    def _act(self, action: Action) -> None:
        self.report.actions.append(action)
        log.warning(
            "resync.found",
            kind=action.kind,
            clip=action.clip_id,
            camera=action.camera_serial,
            detail=action.detail,
            action=action.action,
            dry_run=self.dry_run,
        )

    def _unrepairable(self, work: ClipWork | None, problem: str) -> None:
        self.report.unrepairable.append(
            Unrepairable(work.id if work else None, work.camera_serial if work else None, problem)
        )

    # -- staging: adopt what the ledger lost, quarantine what nobody knows ----------------

    def _reconcile_staging(self) -> set[int]:
        """Walk the staging clip folders; return the ids of clips given back a staged copy."""
        expected = self._expected_staged_files()
        busy_folders = self._busy_folders()
        adopted: set[int] = set()
        clips_root = self.staging_root / "clips"
        if not clips_root.is_dir():
            return adopted
        for folder in sorted(clips_root.iterdir()):
            if folder.name in busy_folders:
                continue
            for path in sorted(_entries(folder)):
                if path.name.endswith(".part") or path in expected:
                    continue
                adoption = self._adoption_for(path)
                if adoption is not None:
                    self._adopt(adoption)
                    adopted.add(adoption.clip_id)
                    expected.add(adoption.target)
                else:
                    self._quarantine_file(path)
        return adopted

    def _expected_staged_files(self) -> set[Path]:
        purged = purged_clip_ids(self.ledger)
        expected: set[Path] = set()
        for work in self.ledger.clips():
            if work.staged_path is None or work.id in purged:
                continue
            folder = self.staging_root / work.staged_path
            expected.add(folder / work.name)
            expected.update(folder / sidecar.name for sidecar in work.sidecars)
        return expected

    def _busy_folders(self) -> set[str]:
        """Staging folders a live copier may be writing right now."""
        return {
            f"{work.id:08d}"
            for work in self.ledger.clips()
            if work.lease_owner and not owner_is_dead(work.lease_owner)
        }

    def _adoption_for(self, stray: Path) -> _Adoption | None:
        """Where a stray file belongs: a clip (or sidecar) with its hash and no good copy."""
        if stray.is_symlink() or not stray.is_file():
            return None
        try:
            sha256 = hash_file_from_disk(stray)
        except OSError as error:
            log.warning("resync.stray_unreadable", path=str(stray), error=str(error))
            return None
        purged = purged_clip_ids(self.ledger)
        with self.ledger.transaction() as session:
            candidates = [
                (clip, clip.name)
                for clip in session.scalars(select(Clip).where(Clip.sha256 == sha256))
            ]
            for sidecar in session.scalars(select(Sidecar).where(Sidecar.sha256 == sha256)):
                parent = session.get(Clip, sidecar.clip_id)
                if parent is not None:
                    candidates.append((parent, sidecar.name))
        for clip, name in candidates:
            if clip.state in (ClipState.DISCOVERED, ClipState.COPYING) or clip.lease_owner:
                continue  # the camera will be read again; the state machine has no shortcut
            staged_path = clip.staged_path or f"clips/{clip.id:08d}"
            target = self.staging_root / staged_path / name
            has_good_copy = (
                clip.id not in purged and target.is_file() and hash_file_from_disk(target) == sha256
            )
            if not has_good_copy:
                return _Adoption(stray, target, clip.id, clip.camera_serial, staged_path)
        return None

    def _adopt(self, adoption: _Adoption) -> None:
        self._act(
            Action(
                "lost_staged_copy",
                f"{adoption.stray} hashes to a file of clip {adoption.clip_id}",
                f"adopt it as {adoption.target}",
                adoption.clip_id,
                adoption.camera_serial,
            )
        )
        if self.dry_run:
            return
        adoption.target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(adoption.stray, adoption.target)
        fsync_directory(adoption.target.parent)
        fsync_directory(adoption.stray.parent)
        with self.ledger.transaction() as session:
            clip = session.get(Clip, adoption.clip_id)
            assert clip is not None
            clip.staged_path = adoption.staged_path
            clip.staged_purged_at = None
            audit_chain.append(
                session,
                dock_id=self.ledger.dock_id,
                actor=self.ledger.actor,
                event="clip.staging_adopted",
                camera_serial=clip.camera_serial,
                clip_id=clip.id,
                sha256=clip.sha256,
                details={"from": str(adoption.stray), "to": str(adoption.target)},
            )

    def _quarantine_file(self, stray: Path) -> None:
        relative = stray.relative_to(self.staging_root)
        target = self.staging_root / QUARANTINE_FOLDER / relative
        self._act(
            Action(
                "unknown_staged_file",
                f"{stray} belongs to no clip the ledger knows",
                f"move it to {target}",
            )
        )
        if self.dry_run:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target = target.with_name(f"{target.name}.{datetime.now().strftime('%Y%m%d%H%M%S%f')}")
        os.replace(stray, target)  # a rename: never follows a symlink, never loses bytes
        fsync_directory(target.parent)
        self.ledger.record_event(
            "staging.quarantined_file", details={"from": str(stray), "to": str(target)}
        )

    # -- docked cameras ------------------------------------------------------------------

    def _docked_cameras(self) -> list[_Docked]:
        docked: list[_Docked] = []
        seen_devices: set[str] = set()
        for docking in self.ledger.active_dockings():
            if not Path(docking.volume_root).is_dir():
                continue
            seen_devices.add(docking.device)
            docked.append(_Docked(docking.id, _volume_of(docking)))
        if not self.report.daemon_alive:
            # no daemon: the watch folders' subfolders are docked cameras nobody reads
            for volume in _watch_folder_volumes(self.config):
                if volume.device not in seen_devices:
                    docked.append(_Docked(None, volume))
        if self.camera_serial is not None:
            docked = [d for d in docked if d.volume.camera_serial == self.camera_serial]
        return docked

    def _rescan(self, docked: list[_Docked]) -> None:
        for index, entry in enumerate(docked):
            volume = entry.volume
            try:
                if self.dry_run:
                    self._plan_scan(volume)
                    continue
                docking_id = entry.docking_id
                if docking_id is None:
                    docking_id = self.ledger.record_docking(volume, self.owner)
                    self._opened_dockings.append(docking_id)
                    docked[index] = _Docked(docking_id, volume)
                new_ids, _found = scan_into_ledger(self.ledger, self.config, docking_id, volume)
            except (SourceGone, OSError) as error:
                log.warning("resync.scan_failed", camera=volume.camera_serial, error=str(error))
                continue
            if new_ids:
                self._act(
                    Action(
                        "new_on_camera",
                        f"{len(new_ids)} clips on {volume.device} were not in the ledger",
                        "recorded them to be copied",
                        camera_serial=volume.camera_serial,
                    )
                )

    def _plan_scan(self, volume: DockedVolume) -> None:
        profile = self.config.profile(volume.profile_name or "") or folder_profile(self.config)
        found = scan_volume(volume.root, profile, scan_limits(self.config))
        known = {
            (w.source_path_raw, w.size, w.mtime_ns)
            for w in self.ledger.clips(camera_serial=volume.camera_serial)
        }
        new = [
            c
            for c in found.clips
            if (c.video.source_path_raw, c.video.size, c.video.mtime_ns) not in known
        ]
        if new:
            self._act(
                Action(
                    "new_on_camera",
                    f"{len(new)} clips on {volume.device} are not in the ledger",
                    "record them to be copied",
                    camera_serial=volume.camera_serial,
                )
            )

    # -- clips -----------------------------------------------------------------------------

    def _check_clips(self, docked: list[_Docked], adopted: set[int]) -> None:
        clips = self.ledger.clips(camera_serial=self.camera_serial)
        purged = purged_clip_ids(self.ledger) - adopted
        for number, work in enumerate(clips, start=1):
            self.report.clips_checked += 1
            if work.lease_owner and not owner_is_dead(work.lease_owner):
                self.report.busy.append(work.id)
            else:
                try:
                    self._check_clip(work, docked, purged, adopted)
                except StorageError as error:
                    self._unrepairable(work, f"central storage could not be checked: {error}")
            if self.progress:
                self.progress(number, len(clips), "checking clips")

    def _check_clip(
        self, work: ClipWork, docked: list[_Docked], purged: set[int], adopted: set[int]
    ) -> None:
        staging_kept = work.id not in purged
        staged_bad = (
            check_staged(self.staging_root, work)
            if work.staged_path is not None and staging_kept and work.sha256
            else None
        )
        # a dry run moved nothing: a copy it would adopt counts as there
        staged_ok = staged_bad == [] or (self.dry_run and work.id in adopted)
        on_camera = _camera_has(docked, work)
        if work.state in REMOTE_STATES and work.remote_key and work.duplicate_of is None:
            central_bad = check_remote(self.backend, work)
            if central_bad:
                self._repair_central(work, central_bad, staged_ok=staged_ok, on_camera=on_camera)
        elif work.state is ClipState.STAGED and has_staged_copy(work, not staging_kept):
            if staged_bad and not staged_ok:
                self._repair_staged(work, staged_bad, on_camera=on_camera)
        elif work.state is ClipState.QUARANTINED:
            self._release_quarantined(work, staged_ok=staged_ok, on_camera=on_camera)

    def _repair_central(
        self, work: ClipWork, central_bad: list[Mismatch], *, staged_ok: bool, on_camera: bool
    ) -> None:
        described = _describe(central_bad)
        differing = [m for m in central_bad if m.found is not None and m.file != "manifest"]
        if staged_ok:
            target, how = ClipState.STAGED, "re-upload from the staged copy"
        elif on_camera and work.state is ClipState.UPLOADED:
            target, how = ClipState.DISCOVERED, "read it off the docked camera again"
        else:
            why = "its staged copy is gone or damaged" + (
                " and the camera was already cleared"
                if work.state is ClipState.CLEARED
                else " and its camera is not docked"
            )
            self._unrepairable(work, f"central copy {described}; {why}")
            return
        if differing:
            how = f"remove the wrong central object(s), then {how}"
        self._act(Action("central_copy_bad", described, how, work.id, work.camera_serial))
        if self.dry_run:
            return
        try:
            for mismatch in differing:
                self._remove_wrong_object(work, mismatch)
            self._requeue(work, target, f"resync: central copy {described}")
        except BwcDockError as error:
            self._unrepairable(work, f"repair failed: {error}")

    def _remove_wrong_object(self, work: ClipWork, mismatch: Mismatch) -> None:
        """An object under the clip's own key that does not hash to the evidence is not the
        evidence; the create-only upload can only put the right bytes back once it is gone."""
        self.ledger.record_event(
            "central.wrong_object_removed",
            camera_serial=work.camera_serial,
            clip_id=work.id,
            sha256=mismatch.found,
            details={"key": mismatch.location, "expected": mismatch.expected},
        )
        self.backend.delete(mismatch.location)

    def _repair_staged(
        self, work: ClipWork, staged_bad: list[Mismatch], *, on_camera: bool
    ) -> None:
        described = _describe(staged_bad)
        if not on_camera:
            self._unrepairable(
                work, f"staged copy {described}, not uploaded yet, and its camera is not docked"
            )
            return
        self._act(
            Action(
                "staged_copy_bad",
                described,
                "read it off the docked camera again",
                work.id,
                work.camera_serial,
            )
        )
        if not self.dry_run:
            self._requeue(work, ClipState.DISCOVERED, f"resync: staged copy {described}")

    def _release_quarantined(self, work: ClipWork, *, staged_ok: bool, on_camera: bool) -> None:
        reason = work.last_error or "no reason recorded"
        if staged_ok:
            differing = self._wrong_objects_under_keys(work)
            self._act(
                Action(
                    "quarantined",
                    reason,
                    "the staged copy verifies: upload it again",
                    work.id,
                    work.camera_serial,
                )
            )
            if not self.dry_run:
                for mismatch in differing:
                    self._remove_wrong_object(work, mismatch)
                self._requeue(work, ClipState.STAGED, f"resync released quarantine: {reason}")
        elif on_camera:
            self._act(
                Action(
                    "quarantined",
                    reason,
                    "read it off the docked camera again",
                    work.id,
                    work.camera_serial,
                )
            )
            if not self.dry_run:
                self._requeue(work, ClipState.DISCOVERED, f"resync released quarantine: {reason}")
        else:
            self._unrepairable(
                work, f"quarantined ({reason}); no verified staged copy and camera not docked"
            )

    def _wrong_objects_under_keys(self, work: ClipWork) -> list[Mismatch]:
        """Objects under the keys the clip's upload will use that hold other bytes (what
        quarantined it, when storage refused to overwrite them)."""
        keys = KeyTemplate(self.config.storage.key_template, self.ledger.dock_id)
        wanted = [(work.name, work.remote_key or keys.key(work), work.sha256)]
        wanted += [(s.name, keys.key(work, s.name), s.sha256) for s in work.sidecars]
        wrong = []
        for name, key, expected in wanted:
            found = self.backend.read_sha256(key)
            if found is not None and found != expected:
                wrong.append(
                    Mismatch(
                        work.id,
                        work.camera_serial,
                        "central",
                        name,
                        key,
                        expected,
                        found,
                        "content differs from the ledger hash",
                    )
                )
        return wrong

    def _requeue(self, work: ClipWork, target: ClipState, reason: str) -> None:
        if work.state is ClipState.CLEARED:
            # cleared -> staged is no transition of its own: the clip is quarantined first,
            # so the audit log says plainly that a cleared clip lost its central copy
            self.ledger.quarantine(work, None, reason)
        self.ledger.requeue(work.id, target, reason)
        self._touched.add(work.id)

    # -- anchors, partial uploads ---------------------------------------------------------

    def _check_anchors(self) -> None:
        with self.ledger.transaction() as session:
            query = (
                select(Clip.docking_id)
                .where(Clip.state.in_([str(s) for s in REMOTE_STATES]))
                .distinct()
            )
            if self.camera_serial is not None:
                query = query.where(Clip.camera_serial == self.camera_serial)
            docking_ids = sorted(session.scalars(query))
        waiting = {  # re-queued clips: their upload rewrites the list when it is done
            work.docking_id
            for work in self.ledger.clips(camera_serial=self.camera_serial)
            if work.id in self._touched and work.state not in REMOTE_STATES
        }
        for docking_id in docking_ids:
            if docking_id in waiting:
                continue
            sums = docking_sums(self.ledger, docking_id)
            if sums is None or stored_sums_current(self.backend, sums):
                continue
            self._act(Action("anchor_missing", f"{sums.key} is missing or stale", "write it again"))
            if not self.dry_run:
                write_docking_sums(self.ledger, self.backend, docking_id)

    def _cleanup_partials(self) -> None:
        if self.camera_serial is not None:
            return
        if any(w.state is ClipState.UPLOADING for w in self.ledger.clips(state="uploading")):
            return  # someone uploads right now (a hand-run ingest): their parts are not orphans
        try:
            removed = self.backend.cleanup_partials()
        except StorageError as error:
            log.warning("resync.cleanup_failed", error=str(error))
            return
        if removed:
            self._act(
                Action(
                    "partial_uploads", f"{removed} leftovers of interrupted uploads", "removed them"
                )
            )

    # -- no daemon: do the work ourselves ---------------------------------------------------

    def _work_off(self, docked: list[_Docked]) -> None:
        stages = Stages(self.config, self.ledger, self.backend)
        copier = stages.copier(current_owner("resync-copier"))
        cancel = threading.Event()
        for entry in docked:
            if entry.docking_id is None:
                continue
            while copier.copy_next(cancel, entry.docking_id):
                self.report.copied += 1
                if self.progress:
                    self.progress(self.report.copied, self.report.copied, "copying")
        uploader = stages.uploader(current_owner("resync-uploader"))
        # every due staged clip, not only ours: with no daemon nobody else would send them
        while uploader.upload_next():
            self.report.uploaded += 1
            if self.progress:
                self.progress(self.report.uploaded, self.report.uploaded, "uploading")
        for work in self.ledger.clips(camera_serial=self.camera_serial):
            if work.id in self._touched and work.state not in REMOTE_STATES:
                self._unrepairable(
                    work, f"repair attempted, clip is {work.state}: {work.last_error or '-'}"
                )


def _describe(mismatches: list[Mismatch]) -> str:
    return "; ".join(f"{m.file} {m.problem}" for m in mismatches)


def _entries(folder: Path) -> list[Path]:
    if folder.is_symlink() or not folder.is_dir():
        return [folder]
    return list(folder.iterdir())


def _volume_of(docking: Docking) -> DockedVolume:
    return DockedVolume(
        source=docking.source,
        device=docking.device,
        root=Path(docking.volume_root),
        camera_serial=docking.camera_serial,
    )


def _camera_has(docked: list[_Docked], work: ClipWork) -> bool:
    """The clip's camera is docked and still holds the file as it was discovered."""
    for entry in docked:
        if entry.volume.camera_serial != work.camera_serial:
            continue
        path = os.fsencode(entry.volume.root) + b"/" + work.source_path_raw
        try:
            stat = os.lstat(path)
        except OSError:
            continue
        if stat.st_size == work.size and stat.st_mtime_ns == work.mtime_ns:
            return True
    return False


class _Collector(SourceListener):
    def __init__(self) -> None:
        self.volumes: list[DockedVolume] = []

    def docked(self, volume: DockedVolume) -> None:
        self.volumes.append(volume)

    def undocked(self, device: str) -> None:
        """Not needed: resync looks once."""


def _watch_folder_volumes(config: Config) -> list[DockedVolume]:
    if not config.sources.watch_dirs:
        return []
    from bwc_dock.sources.watch import WatchFolderSource

    source = WatchFolderSource(config.sources.watch_dirs, folder_profile(config))
    collector = _Collector()
    source.start(collector)  # docks every subfolder present now, then we stop watching
    source.stop()
    return collector.volumes
