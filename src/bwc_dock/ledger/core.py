"""The ledger: the single source of truth and the work queue of every stage.

Each method is one transaction. Workers take a clip with a ``claim_*`` method (which
moves it into a leased state and names them its owner), do their work outside any
transaction, and record the result with one of the ``finish``/``fail`` methods,
which check that the lease is still theirs. Callers get frozen :class:`ClipWork`
snapshots, never ORM objects, so nothing crosses threads attached to a session.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, and_, case, delete, func, or_, select
from sqlalchemy.orm import Session

from bwc_dock.config import Config
from bwc_dock.errors import LeaseLost
from bwc_dock.ledger import audit
from bwc_dock.ledger.db import check_durability, create_ledger_engine, migrate
from bwc_dock.ledger.leases import owner_is_dead
from bwc_dock.ledger.models import (
    AuditEntry,
    Camera,
    Clip,
    DaemonHeartbeat,
    Docking,
    MultipartPart,
    MultipartUpload,
    Sidecar,
    utc_now,
)
from bwc_dock.ledger.states import LEASED_STATES, PENDING_STATES, ClipState, check_transition
from bwc_dock.scanner import FoundClip
from bwc_dock.sources.base import DockedVolume
from bwc_dock.storage.base import MultipartState, PartRecord

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SidecarWork:
    id: int
    source_path_raw: bytes
    source_path: str
    name: str
    size: int
    sha256: str | None
    remote_key: str | None


@dataclass(frozen=True)
class ClipWork:
    """A snapshot of a clip handed to a worker."""

    id: int
    camera_serial: str
    docking_id: int
    source_path_raw: bytes
    source_path: str
    name: str
    size: int
    mtime_ns: int
    recorded_at: datetime
    sha256: str | None
    state: ClipState
    staged_path: str | None
    remote_key: str | None
    remote_sha256: str | None
    duplicate_of: int | None
    copy_attempts: int
    upload_attempts: int
    sidecars: tuple[SidecarWork, ...]
    volume_root: Path | None  # where the camera is readable now (copy claims only)
    lease_owner: str | None
    last_error: str | None = None


class Ledger:
    def __init__(self, engine: Engine, dock_id: str, actor: str, lease_seconds: int = 120) -> None:
        self.engine = engine
        self.dock_id = dock_id
        self.actor = actor
        self.lease = timedelta(seconds=lease_seconds)

    @classmethod
    def open(cls, config: Config, actor: str, *, check: bool = True) -> Ledger:
        """Open (creating or migrating) the configured ledger."""
        engine = create_ledger_engine(config.ledger_url)
        migrate(engine)
        if check:
            check_durability(engine)
        return cls(engine, config.dock.id, actor, config.dock.lease_seconds)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    # -- audit ---------------------------------------------------------------------

    def _audit(self, session: Session, event: str, **fields: Any) -> None:
        audit.append(session, dock_id=self.dock_id, actor=self.actor, event=event, **fields)

    def record_event(self, event: str, **fields: Any) -> None:
        """An audit event that is not a clip state change (assignment, deletion, resync)."""
        with self.transaction() as session:
            self._audit(session, event, **fields)

    # -- cameras and dockings ------------------------------------------------------

    def record_docking(self, volume: DockedVolume, owner: str | None) -> int:
        """A new docking of ``volume``; ``owner`` (a lease-owner name) is who reads it."""
        now = utc_now()
        with self.transaction() as session:
            camera = session.get(Camera, volume.camera_serial)
            if camera is None:
                camera = Camera(serial=volume.camera_serial, first_seen_at=now)
                session.add(camera)
            camera.profile_name = volume.profile_name
            camera.usb_vendor_id = volume.usb_vendor_id
            camera.usb_product_id = volume.usb_product_id
            camera.fs_label = volume.fs_label
            camera.fs_uuid = volume.fs_uuid
            camera.last_docked_at = now
            docking = Docking(
                camera_serial=volume.camera_serial,
                dock_id=self.dock_id,
                source=volume.source,
                device=volume.device,
                volume_root=str(volume.root),
                owner=owner,
                docked_at=now,
                refused_entries=0,
            )
            session.add(docking)
            session.flush()
            self._audit(
                session,
                "camera.docked",
                camera_serial=volume.camera_serial,
                details={
                    "docking_id": docking.id,
                    "device": volume.device,
                    "source": volume.source,
                    "profile": volume.profile_name,
                },
            )
            return docking.id

    def end_docking(self, docking_id: int, reason: str) -> None:
        with self.transaction() as session:
            docking = session.get(Docking, docking_id)
            if docking is None or docking.undocked_at is not None:
                return
            docking.undocked_at = utc_now()
            self._audit(
                session,
                "camera.undocked",
                camera_serial=docking.camera_serial,
                details={"docking_id": docking_id, "reason": reason},
            )

    def adopt_dockings(self, new_owner: str, sources: frozenset[str]) -> list[Docking]:
        """Take over open dockings of ``sources`` whose owner is gone; return them."""
        with self.transaction() as session:
            open_dockings = session.scalars(
                select(Docking).where(Docking.undocked_at.is_(None), Docking.source.in_(sources))
            ).all()
            adopted = [d for d in open_dockings if d.owner is None or owner_is_dead(d.owner)]
            for docking in adopted:
                docking.owner = new_owner
            return list(adopted)

    def end_stale_dockings(self) -> int:
        """At start-up: dockings whose reader died are over (the sources re-dock what is
        still present)."""
        with self.transaction() as session:
            open_dockings = session.scalars(
                select(Docking).where(Docking.undocked_at.is_(None))
            ).all()
            stale = [d for d in open_dockings if d.owner is None or owner_is_dead(d.owner)]
            for docking in stale:
                docking.undocked_at = utc_now()
                self._audit(
                    session,
                    "camera.undocked",
                    camera_serial=docking.camera_serial,
                    details={"docking_id": docking.id, "reason": "daemon restarted"},
                )
            return len(stale)

    def record_scan(
        self, docking_id: int, found: Sequence[FoundClip], refused: int, priority: int = 0
    ) -> list[int]:
        """Register newly seen clips; clips already known by identity are left alone."""
        now = utc_now()
        new_ids: list[int] = []
        with self.transaction() as session:
            docking = session.get(Docking, docking_id)
            assert docking is not None
            docking.scanned_at = now
            docking.refused_entries = refused
            # one query for the camera's known identities, not one per file: a watch
            # folder is rescanned every minute and a camera may hold thousands of clips
            known = {
                (row.source_path_raw, row.size, row.mtime_ns)
                for row in session.execute(
                    select(Clip.source_path_raw, Clip.size, Clip.mtime_ns).where(
                        Clip.camera_serial == docking.camera_serial
                    )
                )
            }
            for clip in found:
                video = clip.video
                if (video.source_path_raw, video.size, video.mtime_ns) in known:
                    continue
                row = self._new_clip(session, docking, clip, now, priority)
                new_ids.append(row.id)
        return new_ids

    def _new_clip(
        self, session: Session, docking: Docking, found: FoundClip, now: datetime, priority: int
    ) -> Clip:
        video = found.video
        clip = Clip(
            camera_serial=docking.camera_serial,
            docking_id=docking.id,
            source_path_raw=video.source_path_raw,
            source_path=video.source_path,
            name=video.name,
            size=video.size,
            mtime_ns=video.mtime_ns,
            recorded_at=found.recorded_at,
            state=ClipState.DISCOVERED,
            priority=priority,
            copy_attempts=0,
            upload_attempts=0,
            discovered_at=now,
            updated_at=now,
        )
        session.add(clip)
        session.flush()
        used_names = {clip.name.lower()}
        for sidecar in found.sidecars:
            name = _unique_name(sidecar.name, used_names)
            session.add(
                Sidecar(
                    clip_id=clip.id,
                    source_path_raw=sidecar.source_path_raw,
                    source_path=sidecar.source_path,
                    name=name,
                    size=sidecar.size,
                    mtime_ns=sidecar.mtime_ns,
                )
            )
        self._audit(
            session,
            "clip.discovered",
            camera_serial=clip.camera_serial,
            clip_id=clip.id,
            details={
                "source_path": clip.source_path,
                "size": clip.size,
                "mtime_ns": clip.mtime_ns,
                "docking_id": docking.id,
                "sidecars": [s.source_path for s in found.sidecars],
            },
        )
        log.info(
            "clip.discovered",
            clip=clip.id,
            camera=clip.camera_serial,
            path=clip.source_path,
            size=clip.size,
        )
        return clip

    def set_priority(self, clip_id: int, priority: int) -> bool:
        with self.transaction() as session:
            clip = session.get(Clip, clip_id)
            if clip is None:
                return False
            clip.priority = priority
            self._audit(
                session,
                "clip.prioritized",
                camera_serial=clip.camera_serial,
                clip_id=clip.id,
                details={"priority": priority},
            )
            return True

    # -- claiming work ---------------------------------------------------------------

    def claim_for_copy(self, owner: str, docking_id: int | None = None) -> ClipWork | None:
        """The next discovered clip whose camera is docked now, leased to ``owner``."""
        now = utc_now()
        with self.transaction() as session:
            query = (
                select(Clip, Docking)
                .join(
                    Docking,
                    and_(
                        Docking.camera_serial == Clip.camera_serial, Docking.undocked_at.is_(None)
                    ),
                )
                .where(Clip.state == ClipState.DISCOVERED, _due(now))
                .order_by(Clip.priority.desc(), Clip.id, Docking.id.desc())
                .limit(1)
            )
            if docking_id is not None:
                query = query.where(Docking.id == docking_id)
            row = session.execute(query).first()
            if row is None:
                return None
            clip, docking = row
            self._lease(session, clip, ClipState.COPYING, owner, now)
            return _snapshot(session, clip, Path(docking.volume_root))

    def claim_for_upload(self, owner: str, only: Collection[int] | None = None) -> ClipWork | None:
        """The next staged clip that is due (of ``only``, when given): priority clips
        first, then the camera whose turn is oldest, then its oldest recording.

        Cameras take turns so that several docked together all progress, rather than
        one camera's whole shift going first while the others wait.
        """
        now = utc_now()
        with self.transaction() as session:
            query = (
                select(Clip, Camera)
                .join(Camera, Camera.serial == Clip.camera_serial)
                .where(Clip.state == ClipState.STAGED, _due(now))
            )
            if only is not None:
                query = query.where(Clip.id.in_(list(only)))
            row = session.execute(
                query.order_by(
                    Clip.priority.desc(),
                    Camera.last_upload_claimed_at.asc().nulls_first(),
                    Clip.recorded_at,
                    Clip.id,
                ).limit(1)
            ).first()
            if row is None:
                return None
            clip, camera = row
            camera.last_upload_claimed_at = now
            self._lease(session, clip, ClipState.UPLOADING, owner, now)
            return _snapshot(session, clip, None)

    def _lease(
        self, session: Session, clip: Clip, target: ClipState, owner: str, now: datetime
    ) -> None:
        self._move(session, clip, target, owner=owner)
        clip.lease_owner = owner
        clip.lease_expires_at = now + self.lease

    def renew_lease(self, clip_id: int, owner: str) -> None:
        """Keep a long copy or upload ours; raises LeaseLost when it is not."""
        with self.transaction() as session:
            clip = session.get(Clip, clip_id)
            renewed = clip is not None and clip.lease_owner == owner
            if clip is not None and renewed:
                clip.lease_expires_at = utc_now() + self.lease
        if not renewed:
            raise LeaseLost(f"clip {clip_id}: lease lost")

    # -- recording results -------------------------------------------------------------

    def finish_copy(
        self,
        work: ClipWork,
        owner: str,
        sha256: str,
        staged_path: str,
        sidecar_hashes: Mapping[int, str],
    ) -> None:
        with self.transaction() as session:
            clip = self._owned(session, work.id, owner)
            clip.sha256 = sha256
            clip.staged_path = staged_path
            clip.staged_at = utc_now()
            clip.last_error = None
            clip.next_attempt_at = None
            for sidecar in session.scalars(select(Sidecar).where(Sidecar.clip_id == clip.id)):
                sidecar.sha256 = sidecar_hashes[sidecar.id]
            clip.duplicate_of = session.scalar(
                select(Clip.id)
                .where(
                    Clip.camera_serial == clip.camera_serial,
                    Clip.sha256 == sha256,
                    Clip.id != clip.id,
                    Clip.duplicate_of.is_(None),
                    Clip.state != ClipState.QUARANTINED,
                )
                .order_by(Clip.id)
                .limit(1)
            )
            self._move(
                session,
                clip,
                ClipState.STAGED,
                owner,
                details={
                    "staged_path": staged_path,
                    "duplicate_of": clip.duplicate_of,
                    "sidecars": {str(k): v for k, v in sidecar_hashes.items()},
                },
            )

    def finish_upload(
        self,
        work: ClipWork,
        owner: str,
        remote_key: str,
        remote_sha256: str,
        sidecar_remote: Mapping[int, tuple[str, str]],
        manifest_key: str | None,
    ) -> None:
        with self.transaction() as session:
            clip = self._owned(session, work.id, owner)
            clip.remote_key = remote_key
            clip.remote_sha256 = remote_sha256
            clip.uploaded_at = utc_now()
            clip.last_error = None
            clip.next_attempt_at = None
            for sidecar in session.scalars(select(Sidecar).where(Sidecar.clip_id == clip.id)):
                sidecar.remote_key, sidecar.remote_sha256 = sidecar_remote[sidecar.id]
            self._move(
                session,
                clip,
                ClipState.UPLOADED,
                owner,
                details={
                    "remote_key": remote_key,
                    "remote_sha256": remote_sha256,
                    "manifest_key": manifest_key,
                },
            )

    def release(
        self,
        work: ClipWork,
        owner: str,
        *,
        error: str | None,
        retry_at: datetime | None,
        count_attempt: bool = True,
    ) -> None:
        """Give a leased clip back (copying -> discovered, uploading -> staged)."""
        with self.transaction() as session:
            clip = self._owned(session, work.id, owner)
            target = LEASED_STATES[ClipState(clip.state)]
            if count_attempt:
                if target is ClipState.STAGED:
                    clip.upload_attempts += 1
                else:
                    clip.copy_attempts += 1
            clip.last_error = error
            clip.next_attempt_at = retry_at
            self._move(session, clip, target, owner, details={"error": error})

    def quarantine(self, work: ClipWork, owner: str | None, reason: str) -> None:
        with self.transaction() as session:
            clip = self._owned(session, work.id, owner) if owner else session.get(Clip, work.id)
            assert clip is not None
            clip.last_error = reason
            self._move(session, clip, ClipState.QUARANTINED, owner, details={"reason": reason})
        log.error(
            "clip.quarantined",
            clip=work.id,
            camera=work.camera_serial,
            sha256=work.sha256,
            reason=reason,
        )

    def requeue(self, clip_id: int, target: ClipState, reason: str) -> None:
        """Hand-run repair: put an unleased clip back to be done again."""
        with self.transaction() as session:
            clip = session.get(Clip, clip_id)
            assert clip is not None
            if clip.lease_owner is not None:
                raise LeaseLost(f"clip {clip_id} is being worked on by {clip.lease_owner}")
            clip.next_attempt_at = None
            clip.last_error = reason
            if target is ClipState.DISCOVERED:
                clip.staged_path = None
            self._move(session, clip, target, None, details={"reason": reason})

    def _owned(self, session: Session, clip_id: int, owner: str) -> Clip:
        clip = session.get(Clip, clip_id)
        if clip is None or clip.lease_owner != owner:
            raise LeaseLost(f"clip {clip_id}: lease lost")
        return clip

    def _move(
        self,
        session: Session,
        clip: Clip,
        target: ClipState,
        owner: str | None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """The one place a clip changes state: checked, audited, logged."""
        current = ClipState(clip.state)
        check_transition(current, target)
        clip.state = target
        clip.updated_at = utc_now()
        if target not in LEASED_STATES:
            clip.lease_owner = None
            clip.lease_expires_at = None
        self._audit(
            session,
            f"clip.{target}",
            camera_serial=clip.camera_serial,
            clip_id=clip.id,
            sha256=clip.sha256,
            details={"from": str(current), **(details or {})},
        )
        log.info(
            f"clip.{target}",
            clip=clip.id,
            camera=clip.camera_serial,
            sha256=clip.sha256,
            previous=str(current),
            owner=owner,
        )

    # -- recovery and housekeeping -------------------------------------------------------

    def recover_leases(self, *, all_expired: bool = True) -> dict[str, int]:
        """Put back clips whose worker died (or whose lease ran out)."""
        now = utc_now()
        recovered: dict[str, int] = {}
        with self.transaction() as session:
            leased = session.scalars(select(Clip).where(Clip.lease_owner.is_not(None))).all()
            for clip in leased:
                assert clip.lease_owner is not None and clip.lease_expires_at is not None
                expired = all_expired and clip.lease_expires_at < now
                if not (owner_is_dead(clip.lease_owner) or expired):
                    continue
                target = LEASED_STATES[ClipState(clip.state)]
                self._move(
                    session,
                    clip,
                    target,
                    None,
                    details={
                        "reason": "lease of a dead or stalled worker",
                        "owner": clip.lease_owner,
                    },
                )
                recovered[str(target)] = recovered.get(str(target), 0) + 1
        return recovered

    def purgeable(self, uploaded_before: datetime) -> list[ClipWork]:
        """Uploaded clips whose staged copies are past retention."""
        with self.transaction() as session:
            clips = session.scalars(
                select(Clip).where(
                    Clip.state.in_([ClipState.UPLOADED, ClipState.CLEARED]),
                    Clip.staged_path.is_not(None),
                    Clip.staged_purged_at.is_(None),
                    Clip.uploaded_at < uploaded_before,
                )
            ).all()
            return _snapshots(session, list(clips))

    def mark_purged(self, clip_id: int) -> None:
        with self.transaction() as session:
            clip = session.get(Clip, clip_id)
            assert clip is not None
            clip.staged_purged_at = utc_now()
            self._audit(
                session,
                "clip.staging_purged",
                camera_serial=clip.camera_serial,
                clip_id=clip.id,
                sha256=clip.sha256,
            )

    def mark_cleared(self, work: ClipWork, details: Mapping[str, Any]) -> None:
        with self.transaction() as session:
            clip = session.get(Clip, work.id)
            assert clip is not None
            clip.cleared_at = utc_now()
            self._move(session, clip, ClipState.CLEARED, None, details=details)

    # -- queries ---------------------------------------------------------------------------

    def get(self, clip_id: int) -> ClipWork | None:
        with self.transaction() as session:
            clip = session.get(Clip, clip_id)
            return None if clip is None else _snapshot(session, clip, None)

    def clips(
        self,
        camera_serial: str | None = None,
        state: str | None = None,
        docking_id: int | None = None,
        ids: Collection[int] | None = None,
    ) -> list[ClipWork]:
        with self.transaction() as session:
            query = select(Clip).order_by(Clip.id)
            if camera_serial is not None:
                query = query.where(Clip.camera_serial == camera_serial)
            if state is not None:
                query = query.where(Clip.state == state)
            if docking_id is not None:
                query = query.where(Clip.docking_id == docking_id)
            if ids is not None:
                query = query.where(Clip.id.in_(list(ids)))
            return _snapshots(session, list(session.scalars(query)))

    def leased_clip_ids(self) -> set[int]:
        """Clips some worker holds right now (alive or not)."""
        with self.transaction() as session:
            return set(session.scalars(select(Clip.id).where(Clip.lease_owner.is_not(None))))

    def counts_by_state(self, camera_serial: str | None = None) -> dict[str, int]:
        with self.transaction() as session:
            query = select(Clip.state, func.count()).group_by(Clip.state)
            if camera_serial is not None:
                query = query.where(Clip.camera_serial == camera_serial)
            counts = {str(state): 0 for state in ClipState}
            counts.update({state: count for state, count in session.execute(query).all()})
            return counts

    def pending_for_camera(self, camera_serial: str, states: frozenset[ClipState]) -> int:
        with self.transaction() as session:
            return (
                session.scalar(
                    select(func.count()).where(
                        Clip.camera_serial == camera_serial,
                        Clip.state.in_([str(s) for s in states]),
                    )
                )
                or 0
            )

    def byte_totals(self) -> tuple[int, int]:
        """(bytes copied off cameras, bytes confirmed in central storage), ever."""
        with self.transaction() as session:
            copied = session.scalar(
                select(func.coalesce(func.sum(Clip.size), 0)).where(Clip.staged_at.is_not(None))
            )
            uploaded = session.scalar(
                select(func.coalesce(func.sum(Clip.size), 0)).where(Clip.uploaded_at.is_not(None))
            )
            return int(copied or 0), int(uploaded or 0)

    def pending_in_docking(self, docking_id: int) -> int:
        """Clips first seen in this docking that are not yet in central storage."""
        with self.transaction() as session:
            return session.scalar(
                select(func.count()).where(
                    Clip.docking_id == docking_id,
                    Clip.state.in_([str(state) for state in PENDING_STATES]),
                )
            ) or 0

    def dockings_to_anchor(self) -> list[int]:
        """Dockings whose clips are all in central storage (or quarantined) and whose
        SHA256SUMS was never written, or written before their last upload."""
        pending = [str(state) for state in PENDING_STATES]
        delivered = [str(ClipState.UPLOADED), str(ClipState.CLEARED)]
        with self.transaction() as session:
            query = (
                select(Docking.id)
                .join(Clip, Clip.docking_id == Docking.id)
                .group_by(Docking.id)
                .having(
                    func.sum(case((Clip.state.in_(pending), 1), else_=0)) == 0,
                    func.sum(
                        case((and_(Clip.state.in_(delivered), Clip.remote_key.is_not(None)), 1),
                             else_=0)
                    ) > 0,
                    or_(
                        Docking.sums_written_at.is_(None),
                        Docking.sums_written_at < func.max(Clip.uploaded_at),
                    ),
                )
                .order_by(Docking.id)
            )
            return list(session.scalars(query))

    def mark_sums_written(self, docking_id: int, content_read_at: datetime) -> None:
        """The docking's SHA256SUMS, as the ledger stood at ``content_read_at``, is stored."""
        with self.transaction() as session:
            docking = session.get(Docking, docking_id)
            if docking is not None:
                docking.sums_written_at = content_read_at

    def oldest_pending_at(self) -> datetime | None:
        with self.transaction() as session:
            return session.scalar(
                select(func.min(Clip.discovered_at)).where(
                    Clip.state.in_([str(s) for s in PENDING_STATES])
                )
            )

    def active_dockings(self) -> list[Docking]:
        """Every docking not yet ended, oldest first."""
        with self.transaction() as session:
            return list(
                session.scalars(
                    select(Docking).where(Docking.undocked_at.is_(None)).order_by(Docking.id)
                )
            )

    def docking(self, docking_id: int) -> Docking | None:
        with self.transaction() as session:
            return session.get(Docking, docking_id)

    def copy_pending(self, camera_serial: str) -> int:
        """Clips of a camera that still need the camera (not yet staged)."""
        return self.pending_for_camera(
            camera_serial, frozenset({ClipState.DISCOVERED, ClipState.COPYING})
        )

    def cameras(self) -> list[Camera]:
        with self.transaction() as session:
            return list(session.scalars(select(Camera).order_by(Camera.serial)))

    def manifest_facts(self, clip_id: int) -> tuple[str | None, dict[str, datetime | None]]:
        """The officer the camera is assigned to, and when each step happened."""
        with self.transaction() as session:
            clip = session.get(Clip, clip_id)
            assert clip is not None
            times = {"discovered_at": clip.discovered_at, "staged_at": clip.staged_at}
            # the officer who carried the camera when the clip was recorded, not today's
            from bwc_dock.cameras import officer_at

            return officer_at(session, clip.camera_serial, clip.recorded_at), times

    def audit_entries(self) -> list[AuditEntry]:
        with self.transaction() as session:
            return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))

    def audit_head(self) -> tuple[int, str]:
        with self.transaction() as session:
            return audit.chain_head(session)

    # -- daemon heartbeat --------------------------------------------------------------------

    def beat(self, host: str, pid: int, started_at: datetime, **fields: Any) -> None:
        with self.transaction() as session:
            row = session.get(DaemonHeartbeat, 1)
            if row is None:
                row = DaemonHeartbeat(
                    id=1, host=host, pid=pid, started_at=started_at, beat_at=utc_now()
                )
                session.add(row)
            row.host, row.pid, row.started_at, row.beat_at = host, pid, started_at, utc_now()
            for name, value in fields.items():
                setattr(row, name, value)

    def heartbeat(self) -> DaemonHeartbeat | None:
        with self.transaction() as session:
            return session.get(DaemonHeartbeat, 1)

    # -- multipart uploads ---------------------------------------------------------------------

    def multipart_journal(self, remote_key: str, clip_id: int | None) -> LedgerMultipartJournal:
        return LedgerMultipartJournal(self, remote_key, clip_id)

    def wanted_upload_ids(self) -> set[str]:
        with self.transaction() as session:
            return set(session.scalars(select(MultipartUpload.upload_id)))


class LedgerMultipartJournal:
    """MultipartJournal kept in the ledger: a restart resumes the same upload id."""

    def __init__(self, ledger: Ledger, remote_key: str, clip_id: int | None) -> None:
        self.ledger = ledger
        self.remote_key = remote_key
        self.clip_id = clip_id

    def load(self) -> MultipartState | None:
        with self.ledger.transaction() as session:
            upload = session.get(MultipartUpload, self.remote_key)
            if upload is None:
                return None
            parts = session.scalars(
                select(MultipartPart)
                .where(MultipartPart.remote_key == self.remote_key)
                .order_by(MultipartPart.number)
            )
            return MultipartState(
                upload.upload_id,
                tuple(PartRecord(p.number, p.etag, p.checksum, p.size) for p in parts),
            )

    def begin(self, upload_id: str) -> None:
        with self.ledger.transaction() as session:
            session.execute(
                delete(MultipartPart).where(MultipartPart.remote_key == self.remote_key)
            )
            existing = session.get(MultipartUpload, self.remote_key)
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(
                MultipartUpload(
                    remote_key=self.remote_key,
                    clip_id=self.clip_id,
                    upload_id=upload_id,
                    started_at=utc_now(),
                )
            )

    def part_done(self, part: PartRecord) -> None:
        with self.ledger.transaction() as session:
            session.merge(
                MultipartPart(
                    remote_key=self.remote_key,
                    number=part.number,
                    etag=part.etag,
                    checksum=part.checksum,
                    size=part.size,
                )
            )

    def finish(self) -> None:
        with self.ledger.transaction() as session:
            session.execute(
                delete(MultipartPart).where(MultipartPart.remote_key == self.remote_key)
            )
            upload = session.get(MultipartUpload, self.remote_key)
            if upload is not None:
                session.delete(upload)


def _due(now: datetime) -> Any:
    return or_(Clip.next_attempt_at.is_(None), Clip.next_attempt_at <= now)


def _unique_name(name: str, used: set[str]) -> str:
    candidate, counter = name, 1
    while candidate.lower() in used:
        stem, dot, extension = name.rpartition(".")
        candidate = f"{stem}-{counter}.{extension}" if dot else f"{name}-{counter}"
        counter += 1
    used.add(candidate.lower())
    return candidate


_SIDECAR_BATCH = 500  # below SQLite's limit on bound parameters


def _snapshots(session: Session, clips: list[Clip]) -> list[ClipWork]:
    """Snapshots of many clips with their sidecars in one query per batch, not per clip."""
    by_clip: dict[int, list[Sidecar]] = {}
    ids = [clip.id for clip in clips]
    for start in range(0, len(ids), _SIDECAR_BATCH):
        batch = ids[start : start + _SIDECAR_BATCH]
        for sidecar in session.scalars(
            select(Sidecar).where(Sidecar.clip_id.in_(batch)).order_by(Sidecar.id)
        ):
            by_clip.setdefault(sidecar.clip_id, []).append(sidecar)
    return [_snapshot(session, clip, None, by_clip.get(clip.id, [])) for clip in clips]


def _snapshot(
    session: Session,
    clip: Clip,
    volume_root: Path | None,
    sidecars: list[Sidecar] | None = None,
) -> ClipWork:
    if sidecars is None:
        sidecars = list(
            session.scalars(select(Sidecar).where(Sidecar.clip_id == clip.id).order_by(Sidecar.id))
        )
    return ClipWork(
        id=clip.id,
        camera_serial=clip.camera_serial,
        docking_id=clip.docking_id,
        source_path_raw=clip.source_path_raw,
        source_path=clip.source_path,
        name=clip.name,
        size=clip.size,
        mtime_ns=clip.mtime_ns,
        recorded_at=clip.recorded_at,
        sha256=clip.sha256,
        state=ClipState(clip.state),
        staged_path=clip.staged_path,
        remote_key=clip.remote_key,
        remote_sha256=clip.remote_sha256,
        duplicate_of=clip.duplicate_of,
        copy_attempts=clip.copy_attempts,
        upload_attempts=clip.upload_attempts,
        sidecars=tuple(
            SidecarWork(
                s.id, s.source_path_raw, s.source_path, s.name, s.size, s.sha256, s.remote_key
            )
            for s in sidecars
        ),
        volume_root=volume_root,
        lease_owner=clip.lease_owner,
        last_error=clip.last_error,
    )
