"""What chain-of-custody documents are built from: the objects each docking delivered
(its SHA256SUMS), which dockings need that list (re)written, the facts a clip's
manifest records, and everything the custody export shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, or_, select, update

from bwc_dock.ledger.assignments import officer_at
from bwc_dock.ledger.audit import chain_head
from bwc_dock.ledger.dockings import device_of
from bwc_dock.ledger.models import AuditEntry, Clip, Docking, Sidecar
from bwc_dock.ledger.snapshots import (
    AuditRecord,
    ClipWork,
    DockingClocks,
    audit_record,
    clip_snapshots,
    docking_record,
)
from bwc_dock.ledger.states import PENDING_STATES, ClipState
from bwc_dock.ledger.store import Store

DELIVERED_STATES = (str(ClipState.UPLOADED), str(ClipState.CLEARED))


@dataclass(frozen=True)
class CustodyFacts:
    """One consistent read of what the custody export shows about a set of clips."""

    clips: list[ClipWork]
    officers: dict[int, str | None]  # clip id -> officer when it was recorded
    devices: dict[int, str]  # docking id -> device
    steps: dict[int, list[AuditRecord]]  # clip id -> its audit rows, in order


@dataclass(frozen=True)
class ManifestFacts:
    """The ledger's part of one clip's custody record (manifest.py builds it)."""

    officer_id: str | None  # the camera's officer when the clip was recorded
    times: dict[str, datetime | None]  # discovered_at, staged_at
    audit_head: tuple[int, str]  # the audit chain's newest (id, hash)
    device: dict[str, str | None]  # the docking's device identity
    clocks: DockingClocks | None  # the docking's clock readings; None: no docking


def delivered_objects(store: Store, docking_id: int) -> dict[str, str]:
    """Remote key -> SHA-256 of every object (clip and sidecar) a docking delivered."""
    objects: dict[str, str] = {}
    with store.transaction() as session:
        delivered = session.scalars(
            select(Clip).where(
                Clip.docking_id == docking_id,
                Clip.state.in_(DELIVERED_STATES),
                Clip.remote_key.is_not(None),
            )
        )
        for clip in delivered:
            assert clip.remote_key is not None
            objects[clip.remote_key] = clip.remote_sha256 or clip.sha256 or ""
            for sidecar in session.scalars(select(Sidecar).where(Sidecar.clip_id == clip.id)):
                if sidecar.remote_key and sidecar.sha256:
                    objects[sidecar.remote_key] = sidecar.sha256
    return {key: sha256 for key, sha256 in objects.items() if sha256}


def delivering_dockings(store: Store, camera_serial: str | None = None) -> list[int]:
    """Dockings (of ``camera_serial``, when given) with a clip in central storage."""
    query = select(Clip.docking_id).where(Clip.state.in_(DELIVERED_STATES)).distinct()
    if camera_serial is not None:
        query = query.where(Clip.camera_serial == camera_serial)
    with store.transaction() as session:
        return sorted(session.scalars(query))


def dockings_to_anchor(store: Store) -> list[int]:
    """Dockings whose clips are all in central storage (or quarantined) and whose
    SHA256SUMS was never written, or written before their last upload.

    Only dockings flagged ``sums_due`` (a clip of theirs changed state) are looked at;
    a flagged docking found with nothing to write is unflagged here."""
    pending = [str(state) for state in PENDING_STATES]
    delivered = list(DELIVERED_STATES)
    with store.transaction() as session:
        rows = session.execute(
            select(
                Docking.id,
                func.sum(case((Clip.state.in_(pending), 1), else_=0)),
                func.sum(
                    case((and_(Clip.state.in_(delivered), Clip.remote_key.is_not(None)), 1),
                         else_=0)
                ),
                or_(
                    Docking.sums_written_at.is_(None),
                    Docking.sums_written_at < func.max(Clip.uploaded_at),
                ),
            )
            .outerjoin(Clip, Clip.docking_id == Docking.id)  # a docking with no clip settles
            .where(Docking.sums_due == 1)
            .group_by(Docking.id)
            .order_by(Docking.id)
        ).all()
        due = [docking for docking, waiting, stored, stale in rows
               if not waiting and stored and stale]
        settled = [docking for docking, waiting, stored, stale in rows
                   if not waiting and not (stored and stale)]
        if settled:
            session.execute(update(Docking).where(Docking.id.in_(settled)).values(sums_due=0))
        return due


def mark_sums_written(store: Store, docking_id: int, content_read_at: datetime) -> None:
    """The docking's SHA256SUMS, as the ledger stood at ``content_read_at``, is stored.
    The flag stays up when a clip was uploaded after that moment: the list is stale."""
    with store.transaction() as session:
        docking = session.get(Docking, docking_id)
        if docking is None:
            return
        docking.sums_written_at = content_read_at
        newest = session.scalar(
            select(func.max(Clip.uploaded_at)).where(Clip.docking_id == docking_id)
        )
        if newest is None or newest <= content_read_at:
            docking.sums_due = 0


def manifest_facts(store: Store, clip_id: int) -> ManifestFacts:
    """What a clip's custody record states from the ledger, in one reading transaction
    (one per uploaded clip: it takes no write lock, so it never waits for the copiers)."""
    with store.reading() as session:
        clip = session.get(Clip, clip_id)
        assert clip is not None
        docking = session.get(Docking, clip.docking_id)
        return ManifestFacts(
            # the officer who carried the camera when the clip was recorded, not today's
            officer_id=officer_at(session, clip.camera_serial, clip.recorded_at),
            times={"discovered_at": clip.discovered_at, "staged_at": clip.staged_at},
            audit_head=chain_head(session),
            device=device_of(docking),
            clocks=docking_record(docking).clocks if docking else None,
        )


def custody_facts(
    store: Store,
    camera_serial: str | None,
    recorded_since: datetime | None,
    recorded_until: datetime | None,
) -> CustodyFacts:
    """Clips recorded in [since, until) (of one camera, when given), with their history."""
    query = select(Clip).order_by(Clip.id)
    if camera_serial is not None:
        query = query.where(Clip.camera_serial == camera_serial)
    if recorded_since is not None:
        query = query.where(Clip.recorded_at >= recorded_since)
    if recorded_until is not None:
        query = query.where(Clip.recorded_at < recorded_until)
    with store.transaction() as session:
        rows = list(session.scalars(query))
        wanted = {clip.id for clip in rows}
        steps: dict[int, list[AuditRecord]] = {}
        for entry in session.scalars(
            select(AuditEntry).where(AuditEntry.clip_id.is_not(None)).order_by(AuditEntry.id)
        ):
            if entry.clip_id in wanted:
                steps.setdefault(entry.clip_id, []).append(audit_record(entry))
        return CustodyFacts(
            clips=clip_snapshots(session, rows),
            officers={
                clip.id: officer_at(session, clip.camera_serial, clip.recorded_at)
                for clip in rows
            },
            devices={d.id: d.device for d in session.scalars(select(Docking))},
            steps=steps,
        )
