"""Resync's planning: read the ledger, staging, central storage and the docked cameras,
and return the repairs to make, as values. Planning changes nothing.

Each phase is planned against the world as the phases before it left it: a real run
applies a phase before planning the next (so a copy adopted from staging is checked
like any other), and a dry run passes down what it would have done (``assumed_staged``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from bwc_dock.config import Config
from bwc_dock.custody import docking_sums, stored_sums_current
from bwc_dock.errors import SourceGone, StorageError
from bwc_dock.found import DockedVolume
from bwc_dock.hashing import hash_file_from_disk
from bwc_dock.ledger import ClipState, ClipWork, Ledger
from bwc_dock.ledger.leases import owner_is_dead
from bwc_dock.ledger.snapshots import DockingRecord
from bwc_dock.manifest import KeyTemplate, ManifestIdentity, manifest_identity, manifest_key
from bwc_dock.resync.repairs import (
    CONFLICTS_PREFIX,
    Action,
    AdoptStagedCopy,
    CannotRepair,
    CleanPartials,
    DockedCamera,
    KeepConflictAside,
    QuarantineStrayFile,
    RedoWork,
    Repair,
    Requeue,
    Rescan,
    RewriteSums,
)
from bwc_dock.scanner import scan_volume
from bwc_dock.scanning import folder_profile, scan_limits
from bwc_dock.sources.base import SourceListener
from bwc_dock.storage.base import DocumentTooLarge, StorageBackend
from bwc_dock.verify import REMOTE_STATES, Mismatch, check_remote, check_staged, has_staged_copy

log = structlog.get_logger(__name__)

Progress = Callable[[int, int, str], None]
QUARANTINE_FOLDER = "quarantine"


@dataclass
class ClipsPlan:
    """The clip phase's plan, with what it looked at."""

    checked: int = 0
    busy: list[int] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)


class Planner:
    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        backend: StorageBackend,
        *,
        daemon_alive: bool,
        camera_serial: str | None,
        progress: Progress | None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.backend = backend
        self.daemon_alive = daemon_alive
        self.camera_serial = camera_serial
        self.progress = progress
        self.staging_root = config.staging_dir

    # -- staging: adopt what the ledger lost, quarantine what nobody knows ----------------

    def staging(self) -> list[Repair]:
        """Every staged file no clip expects: adopt it where its hash belongs, else
        move it to quarantine (never delete it)."""
        repairs: list[Repair] = []
        clips_root = self.staging_root / "clips"
        if self.camera_serial is not None or not clips_root.is_dir():
            return repairs
        expected = self._expected_staged_files()
        busy_folders = self._busy_folders()
        adopted_targets: set[Path] = set()
        for folder in sorted(clips_root.iterdir()):
            if folder.name in busy_folders:
                continue
            for path in sorted(_entries(folder)):
                if path.name.endswith(".part") or path in expected:
                    continue
                adoption = self._adoption_for(path, adopted_targets)
                if adoption is not None:
                    repairs.append(adoption)
                    adopted_targets.add(adoption.target)
                else:
                    relative = path.relative_to(self.staging_root)
                    target = self.staging_root / QUARANTINE_FOLDER / relative
                    repairs.append(QuarantineStrayFile(path, target))
        return repairs

    def _expected_staged_files(self) -> set[Path]:
        purged = self.ledger.purged_clip_ids()
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

    def _adoption_for(self, stray: Path, adopted_targets: set[Path]) -> AdoptStagedCopy | None:
        """Where a stray file belongs: a clip (or sidecar) with its hash and no good copy
        (a target this plan already fills counts as a good copy)."""
        if stray.is_symlink() or not stray.is_file():
            return None
        try:
            sha256 = hash_file_from_disk(stray)
        except OSError as error:
            log.warning("resync.stray_unreadable", path=str(stray), error=str(error))
            return None
        purged = self.ledger.purged_clip_ids()
        for work, name in self.ledger.clips_holding(sha256):
            if work.state in (ClipState.DISCOVERED, ClipState.COPYING) or work.lease_owner:
                continue  # the camera will be read again; the state machine has no shortcut
            staged_path = work.staged_path or f"clips/{work.id:08d}"
            target = self.staging_root / staged_path / name
            has_good_copy = target in adopted_targets or (
                work.id not in purged and target.is_file() and hash_file_from_disk(target) == sha256
            )
            if not has_good_copy:
                return AdoptStagedCopy(stray, target, work.id, work.camera_serial, staged_path)
        return None

    # -- docked cameras ------------------------------------------------------------------

    def docked_cameras(self) -> list[DockedCamera]:
        docked: list[DockedCamera] = []
        seen_devices: set[str] = set()
        for docking in self.ledger.active_dockings():
            if not Path(docking.volume_root).is_dir():
                continue
            seen_devices.add(docking.device)
            docked.append(DockedCamera(docking.id, _volume_of(docking)))
        if not self.daemon_alive:
            # no daemon: the watch folders' subfolders are docked cameras nobody reads
            for volume in _watch_folder_volumes(self.config):
                if volume.device not in seen_devices:
                    docked.append(DockedCamera(None, volume))
        if self.camera_serial is not None:
            docked = [d for d in docked if d.volume.camera_serial == self.camera_serial]
        return docked

    def rescans(self, docked: list[DockedCamera]) -> list[Repair]:
        """Scan each docked camera once; its repair records the camera and what it holds."""
        repairs: list[Repair] = []
        for camera in docked:
            volume = camera.volume
            profile = self.config.profile(volume.profile_name or "") or folder_profile(self.config)
            try:
                scan = scan_volume(volume.root, profile, scan_limits(self.config))
            except (SourceGone, OSError) as error:
                log.warning("resync.scan_failed", camera=volume.camera_serial, error=str(error))
                repairs.append(Rescan(camera, None, 0, profile.priority))
                continue
            known = {
                (w.source_path_raw, w.size, w.mtime_ns)
                for w in self.ledger.clips(camera_serial=volume.camera_serial)
            }
            new = [
                c
                for c in scan.clips
                if (c.video.source_path_raw, c.video.size, c.video.mtime_ns) not in known
            ]
            repairs.append(Rescan(camera, scan, len(new), profile.priority))
            if scan.incomplete is not None:
                # what it listed is recorded; what lies past the cut was never looked at
                repairs.append(_scan_incomplete(camera, scan.incomplete))
        return repairs

    # -- clips -----------------------------------------------------------------------------

    def clips(
        self, docked: list[DockedCamera], adopted: set[int], assumed_staged: set[int]
    ) -> ClipsPlan:
        """Check every clip not held by a live worker. ``adopted``: clips given back a
        staged copy; ``assumed_staged``: those of them whose copy is not in place yet
        (a dry run moved nothing), which count as having a good staged copy."""
        plan = ClipsPlan()
        clips = self.ledger.clips(camera_serial=self.camera_serial)
        purged = self.ledger.purged_clip_ids() - adopted
        for number, work in enumerate(clips, start=1):
            plan.checked += 1
            if work.lease_owner and not owner_is_dead(work.lease_owner):
                plan.busy.append(work.id)
            else:
                try:
                    plan.repairs.extend(self._clip(work, docked, purged, assumed_staged))
                except StorageError as error:
                    plan.repairs.append(
                        CannotRepair.of(work, f"central storage could not be checked: {error}")
                    )
            if self.progress:
                self.progress(number, len(clips), "checking clips")
        return plan

    def _clip(
        self,
        work: ClipWork,
        docked: list[DockedCamera],
        purged: set[int],
        assumed_staged: set[int],
    ) -> list[Repair]:
        staging_kept = work.id not in purged
        staged_bad = (
            check_staged(self.staging_root, work)
            if work.staged_path is not None and staging_kept and work.sha256
            else None
        )
        staged_ok = staged_bad == [] or work.id in assumed_staged
        on_camera = _camera_has(docked, work)
        if work.state in REMOTE_STATES and work.remote_key and work.duplicate_of is None:
            central_bad = check_remote(self.backend, work, self.ledger.dock_id)
            if central_bad:
                return [self._central(work, central_bad, staged_ok=staged_ok, on_camera=on_camera)]
        elif work.state is ClipState.STAGED and has_staged_copy(work, not staging_kept):
            if staged_bad and not staged_ok:
                return [self._staged(work, staged_bad, on_camera=on_camera)]
        elif work.state is ClipState.QUARANTINED:
            return [self._quarantined(work, staged_ok=staged_ok, on_camera=on_camera)]
        return []

    def _central(
        self, work: ClipWork, central_bad: list[Mismatch], *, staged_ok: bool, on_camera: bool
    ) -> Repair:
        described = _describe(central_bad)
        differing = [m for m in central_bad if m.found is not None]
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
            return CannotRepair.of(work, f"central copy {described}; {why}")
        if differing:
            how = f"keep the wrong central object(s) under {CONFLICTS_PREFIX}, then {how}"
        return Requeue(
            work,
            target,
            f"resync: central copy {described}",
            Action("central_copy_bad", described, how, work.id, work.camera_serial),
            self._keep_aside(differing),
        )

    def _staged(self, work: ClipWork, staged_bad: list[Mismatch], *, on_camera: bool) -> Repair:
        described = _describe(staged_bad)
        if not on_camera:
            return CannotRepair.of(
                work, f"staged copy {described}, not uploaded yet, and its camera is not docked"
            )
        return Requeue(
            work,
            ClipState.DISCOVERED,
            f"resync: staged copy {described}",
            Action(
                "staged_copy_bad",
                described,
                "read it off the docked camera again",
                work.id,
                work.camera_serial,
            ),
        )

    def _quarantined(self, work: ClipWork, *, staged_ok: bool, on_camera: bool) -> Repair:
        reason = work.last_error or "no reason recorded"
        if staged_ok:
            how, target = "the staged copy verifies: upload it again", ClipState.STAGED
            removals = self._keep_aside(self._wrong_objects_under_keys(work))
        elif on_camera:
            how, target, removals = "read it off the docked camera again", ClipState.DISCOVERED, ()
        else:
            return CannotRepair.of(
                work, f"quarantined ({reason}); no verified staged copy and camera not docked"
            )
        return Requeue(
            work,
            target,
            f"resync released quarantine: {reason}",
            Action("quarantined", reason, how, work.id, work.camera_serial),
            removals,
        )

    def _wrong_objects_under_keys(self, work: ClipWork) -> list[Mismatch]:
        """Objects under the keys the clip's upload will use that hold other bytes (what
        quarantined it, when storage refused to overwrite them), this offload's custody
        record included."""
        keys = KeyTemplate(self.config.storage.key_template, self.ledger.dock_id)
        clip_key = work.remote_key or keys.key(work)
        wanted = [(work.name, clip_key, work.sha256)]
        wanted += [
            (s.name, keys.key(work, s.name, s.sha256), s.sha256)
            for s in work.sidecars
            if s.sha256 is not None
        ]
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
        record_key = manifest_key(clip_key, self.ledger.dock_id, work.id)
        try:
            record: bytes | None = self.backend.read_bytes(record_key)
        except DocumentTooLarge:  # not read whole: not this offload's record
            record = b""
        if record is not None and work.sha256 is not None:
            identity = manifest_identity(record)
            if identity != ManifestIdentity(self.ledger.dock_id, work.id, work.sha256):
                recorded = identity.sha256 if identity else "unreadable"
                wrong.append(
                    Mismatch(
                        work.id,
                        work.camera_serial,
                        "central",
                        "manifest",
                        record_key,
                        work.sha256,
                        recorded,
                        "another custody record under this offload's manifest key",
                    )
                )
        return wrong

    def _keep_aside(self, wrong: list[Mismatch]) -> tuple[KeepConflictAside, ...]:
        """What to keep aside before repairing: each wrong object under the hash of its
        bytes (for a manifest the mismatch names the hash it records, not its own)."""
        kept = []
        for mismatch in wrong:
            found = mismatch.found
            if mismatch.file == "manifest":
                found = self.backend.read_sha256(mismatch.location)
            if found is None:
                continue  # gone since it was read: nothing in the way, nothing to keep
            kept.append(
                KeepConflictAside(
                    mismatch.clip_id,
                    mismatch.camera_serial,
                    mismatch.location,
                    mismatch.expected,
                    found,
                )
            )
        return tuple(kept)

    # -- with no daemon: our own work; then the anchors -----------------------------------

    def own_work(self) -> list[Repair]:
        """With no daemon running, resync does the queued work itself (a daemon would)."""
        if self.daemon_alive:
            return []
        repairs: list[Repair] = []
        # someone uploading right now (a hand-run ingest) owns parts that are no orphans
        if self.camera_serial is None and not self.ledger.clips(state="uploading"):
            repairs.append(CleanPartials())
        repairs.append(RedoWork())
        return repairs

    def anchors(self, requeued: set[int]) -> list[Repair]:
        """Dockings in central storage whose SHA256SUMS is missing or stale; dockings of
        ``requeued`` clips still on their way are left to their upload, which rewrites it."""
        docking_ids = self.ledger.delivering_dockings(self.camera_serial)
        waiting = {
            work.docking_id
            for work in self.ledger.clips(camera_serial=self.camera_serial)
            if work.id in requeued and work.state not in REMOTE_STATES
        }
        repairs: list[Repair] = []
        for docking_id in docking_ids:
            if docking_id in waiting:
                continue
            sums = docking_sums(self.ledger, docking_id)
            if sums is None or stored_sums_current(self.backend, sums):
                continue
            repairs.append(RewriteSums(docking_id, sums.key))
        return repairs


def _describe(mismatches: list[Mismatch]) -> str:
    return "; ".join(f"{m.file} {m.problem}" for m in mismatches)


def _entries(folder: Path) -> list[Path]:
    if folder.is_symlink() or not folder.is_dir():
        return [folder]
    return list(folder.iterdir())


def _volume_of(docking: DockingRecord) -> DockedVolume:
    return DockedVolume(
        source=docking.source,
        device=docking.device,
        root=Path(docking.volume_root),
        camera_serial=docking.camera_serial,
    )


def _camera_has(docked: list[DockedCamera], work: ClipWork) -> bool:
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


def _scan_incomplete(camera: DockedCamera, reason: str) -> CannotRepair:
    serial = camera.volume.camera_serial
    docking = "" if camera.docking_id is None else f" (docking {camera.docking_id})"
    return CannotRepair(
        None,
        serial,
        f"camera {serial}{docking} was not read whole: its scan stopped ({reason}); "
        "files past the cut stay on it, not offloaded",
    )
