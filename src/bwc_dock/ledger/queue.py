"""The clip queue: claiming work under a lease, recording results, putting clips back.

Workers take a clip with a ``claim_*`` function (which moves it into a leased state
and names them its owner), do their work outside any transaction, and record the
result with ``finish_*``, ``release`` or ``quarantine``, which check that the lease is
still theirs. Hand-run repairs (``requeue``, ``adopt_staged_copy``) touch only clips
nobody holds. Every change goes through :mod:`bwc_dock.ledger.transitions`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Select, Table, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from bwc_dock.errors import LeaseLost
from bwc_dock.ledger.leases import owner_is_dead
from bwc_dock.ledger.models import Camera, Clip, Docking, Sidecar, utc_now
from bwc_dock.ledger.snapshots import ClipWork, clip_snapshot
from bwc_dock.ledger.states import LEASED_STATES, ClipState
from bwc_dock.ledger.store import Store
from bwc_dock.ledger.transitions import (
    CLIPS,
    amend_staged_copy,
    lease,
    move,
    move_row,
    owned,
    unleased,
)

log = structlog.get_logger(__name__)


# -- claiming work -------------------------------------------------------------------------


def claim_for_copy(store: Store, owner: str, docking_id: int | None = None) -> ClipWork | None:
    """The next discovered clip whose camera is docked now, leased to ``owner``."""
    with store.transaction() as session:
        return _claim_for_copy(store, session, owner, docking_id)


def _claim_for_copy(
    store: Store, session: Session, owner: str, docking_id: int | None
) -> ClipWork | None:
    now = utc_now()
    row = session.execute(
        _next_to_copy(of_one_docking=docking_id is not None),
        {"now": now, "docking_id": docking_id},
    ).first()
    if row is None:
        return None
    held = {"lease_owner": owner, "lease_expires_at": now + store.lease}
    move_row(store, session, row, ClipState.COPYING, owner, held)
    claimed = clip_snapshot(session, row, Path(row.volume_root))
    return replace(claimed, state=ClipState.COPYING, lease_owner=owner)


@cache
def _next_to_copy(*, of_one_docking: bool) -> Select[Any]:
    """The next discovered clip that is due, of a camera docked now (of one docking):
    built once, as the copier asks it once per clip."""
    clips = CLIPS
    query = (
        select(clips, Docking.volume_root)
        .join(
            Docking,
            and_(Docking.camera_serial == clips.c.camera_serial, Docking.undocked_at.is_(None)),
        )
        .where(
            clips.c.state == str(ClipState.DISCOVERED),
            or_(clips.c.next_attempt_at.is_(None), clips.c.next_attempt_at <= bindparam("now")),
        )
        .order_by(clips.c.priority.desc(), clips.c.id, Docking.id.desc())
        .limit(1)
    )
    if of_one_docking:
        query = query.where(Docking.id == bindparam("docking_id"))
    return query


def claim_for_upload(
    store: Store, owner: str, only: Collection[int] | None = None
) -> ClipWork | None:
    """The next staged clip that is due (of ``only``, when given): priority clips
    first, then the camera whose turn is oldest, then its oldest recording.

    Cameras take turns so that several docked together all progress, rather than
    one camera's whole shift going first while the others wait.
    """
    now = utc_now()
    with store.transaction() as session:
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
        lease(store, session, clip, ClipState.UPLOADING, owner, now)
        return clip_snapshot(session, clip, None)


def renew_lease(store: Store, clip_id: int, owner: str) -> None:
    """Keep a long copy or upload ours; raises LeaseLost when it is not."""
    with store.transaction() as session:
        clip = session.get(Clip, clip_id)
        renewed = clip is not None and clip.lease_owner == owner
        if clip is not None and renewed:
            clip.lease_expires_at = utc_now() + store.lease
    if not renewed:
        raise LeaseLost(f"clip {clip_id}: lease lost")


def set_priority(store: Store, clip_id: int, priority: int) -> bool:
    with store.transaction() as session:
        clip = session.get(Clip, clip_id)
        if clip is None:
            return False
        clip.priority = priority
        store.audit(
            session,
            "clip.prioritized",
            camera_serial=clip.camera_serial,
            clip_id=clip.id,
            details={"priority": priority},
        )
        return True


# -- recording results ---------------------------------------------------------------------


def finish_copy(
    store: Store,
    work: ClipWork,
    owner: str,
    sha256: str,
    staged_path: str,
    sidecar_hashes: Mapping[int, str],
    *,
    verified: bool = True,
) -> None:
    """Record the clip ``staged``; ``verified`` False when its upload is to verify it."""
    with store.transaction() as session:
        _record_copy(store, session, work, owner, (sha256, staged_path, verified), sidecar_hashes)


def finish_copy_and_claim(
    store: Store,
    work: ClipWork,
    owner: str,
    sha256: str,
    staged_path: str,
    sidecar_hashes: Mapping[int, str],
    docking_id: int | None,
    *,
    verified: bool = True,
) -> ClipWork | None:
    """finish_copy, and claim_for_copy of the next clip, in one transaction: a copier
    going through a camera's clips commits (and waits for the disk) once per clip."""
    with store.transaction() as session:
        _record_copy(store, session, work, owner, (sha256, staged_path, verified), sidecar_hashes)
        return _claim_for_copy(store, session, owner, docking_id)


def _record_copy(
    store: Store,
    session: Session,
    work: ClipWork,
    owner: str,
    copy: tuple[str, str, bool],  # sha256, staged path, verified by a re-read
    sidecar_hashes: Mapping[int, str],
) -> None:
    sha256, staged_path, verified = copy
    row = session.execute(
        select(CLIPS).where(CLIPS.c.id == work.id, CLIPS.c.lease_owner == owner)
    ).first()
    if row is None:
        raise LeaseLost(f"clip {work.id}: lease lost")
    if sidecar_hashes:
        _record_sidecar_hashes(session, row.id, sidecar_hashes)
    duplicate_of = session.scalar(
        _FIRST_WITH_SAME_CONTENT,
        {"camera": row.camera_serial, "sha256": sha256, "clip_id": row.id},
    )
    staged = {
        "sha256": sha256,
        "staged_path": staged_path,
        "staged_verified": verified,
        "staged_at": utc_now(),
        "last_error": None,
        "next_attempt_at": None,
        "duplicate_of": duplicate_of,
    }
    details = {
        "staged_path": staged_path,
        "verified_by": "copier" if verified else "upload",
        "duplicate_of": duplicate_of,
        "sidecars": {str(k): v for k, v in sidecar_hashes.items()},
    }
    move_row(store, session, row, ClipState.STAGED, owner, staged, details)


def _record_sidecar_hashes(session: Session, clip_id: int, hashes: Mapping[int, str]) -> None:
    sidecars: Table = Sidecar.__table__  # type: ignore[assignment]  # a Table in models.py
    for sidecar_id, sha256 in hashes.items():
        session.execute(
            update(sidecars)
            .where(sidecars.c.id == sidecar_id, sidecars.c.clip_id == clip_id)
            .values(sha256=sha256)
        )


# an earlier clip of the camera with the same content, which this one then duplicates
_FIRST_WITH_SAME_CONTENT = (
    select(Clip.id)
    .where(
        Clip.camera_serial == bindparam("camera"),
        Clip.sha256 == bindparam("sha256"),
        Clip.id != bindparam("clip_id"),
        Clip.duplicate_of.is_(None),
        Clip.state != ClipState.QUARANTINED,
    )
    .order_by(Clip.id)
    .limit(1)
)


def finish_upload(
    store: Store,
    work: ClipWork,
    owner: str,
    remote_key: str,
    remote_sha256: str,
    sidecar_remote: Mapping[int, tuple[str, str]],
    manifest_key: str | None,
) -> None:
    with store.transaction() as session:
        clip = owned(session, work.id, owner)
        if work.sidecars:
            for sidecar in session.scalars(select(Sidecar).where(Sidecar.clip_id == clip.id)):
                sidecar.remote_key, sidecar.remote_sha256 = sidecar_remote[sidecar.id]
        clip.remote_key = remote_key
        clip.remote_sha256 = remote_sha256
        clip.uploaded_at = utc_now()
        clip.staged_verified = True  # storage confirmed the hash of the first read
        clip.last_error = None
        clip.next_attempt_at = None
        move(
            store,
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
    store: Store,
    work: ClipWork,
    owner: str,
    *,
    error: str | None,
    retry_at: datetime | None,
    count_attempt: bool = True,
    staged_copy_verified: bool = False,
) -> None:
    """Give a leased clip back (copying -> discovered, uploading -> staged);
    ``staged_copy_verified`` when the uploader has just read its staged copy back intact."""
    with store.transaction() as session:
        clip = owned(session, work.id, owner)
        if staged_copy_verified:
            clip.staged_verified = True
        target = LEASED_STATES[ClipState(clip.state)]
        if count_attempt:
            if target is ClipState.STAGED:
                clip.upload_attempts += 1
            else:
                clip.copy_attempts += 1
        clip.last_error = error
        clip.next_attempt_at = retry_at
        move(store, session, clip, target, owner, details={"error": error})


def send_back_for_copy(store: Store, work: ClipWork, owner: str, reason: str) -> None:
    """An uploader found the staged copy damaged before any pass 2 verified it: the clip
    is read off the camera again (uploading -> discovered), counted as a copy attempt.
    IllegalTransition when the ledger records the copy as verified."""
    with store.transaction() as session:
        clip = owned(session, work.id, owner)
        move(store, session, clip, ClipState.DISCOVERED, owner, details={"reason": reason})
        clip.copy_attempts += 1
        clip.staged_path = None
        clip.staged_verified = True  # the next copy is verified by the copier (copy_attempts)
        clip.last_error = reason
        clip.next_attempt_at = None


def unverified_staged(store: Store, camera_serial: str) -> int:
    """How many of the camera's staged copies still wait for their upload to verify them
    (a damaged one is read off the camera again, so the camera is still needed)."""
    with store.reading() as session:
        return len(
            session.scalars(
                select(Clip.id).where(
                    Clip.camera_serial == camera_serial,
                    Clip.state.in_([ClipState.STAGED, ClipState.UPLOADING]),
                    Clip.staged_verified.is_(False),
                )
            ).all()
        )


def quarantine(store: Store, work: ClipWork, owner: str | None, reason: str) -> None:
    with store.transaction() as session:
        clip = owned(session, work.id, owner) if owner else session.get(Clip, work.id)
        assert clip is not None
        clip.last_error = reason
        move(store, session, clip, ClipState.QUARANTINED, owner, details={"reason": reason})
    log.error(
        "clip.quarantined",
        clip=work.id,
        camera=work.camera_serial,
        sha256=work.sha256,
        reason=reason,
    )


def mark_cleared(store: Store, work: ClipWork, details: Mapping[str, Any]) -> None:
    with store.transaction() as session:
        clip = session.get(Clip, work.id)
        assert clip is not None
        clip.cleared_at = utc_now()
        move(store, session, clip, ClipState.CLEARED, None, details=details)


def mark_purged(store: Store, clip_id: int) -> None:
    with store.transaction() as session:
        clip = session.get(Clip, clip_id)
        assert clip is not None
        clip.staged_purged_at = utc_now()
        store.audit(
            session,
            "clip.staging_purged",
            camera_serial=clip.camera_serial,
            clip_id=clip.id,
            sha256=clip.sha256,
        )


# -- hand-run repairs and recovery ---------------------------------------------------------


def requeue(store: Store, clip_id: int, target: ClipState, reason: str) -> None:
    """Hand-run repair: put an unleased clip back to be done again."""
    with store.transaction() as session:
        clip = unleased(session, clip_id)
        clip.next_attempt_at = None
        clip.last_error = reason
        if target is ClipState.DISCOVERED:
            clip.staged_path = None
        move(store, session, clip, target, None, details={"reason": reason})


def adopt_staged_copy(
    store: Store, clip_id: int, staged_path: str, moved_from: str, moved_to: str
) -> None:
    """Hand-run repair: a file found in staging is this unleased clip's staged copy."""
    with store.transaction() as session:
        clip = unleased(session, clip_id)
        amend_staged_copy(
            store, session, clip, staged_path, details={"from": moved_from, "to": moved_to}
        )


def recover_leases(store: Store, *, all_expired: bool = True) -> dict[str, int]:
    """Put back clips whose worker died (or whose lease ran out)."""
    now = utc_now()
    recovered: dict[str, int] = {}
    with store.transaction() as session:
        leased = session.scalars(select(Clip).where(Clip.lease_owner.is_not(None))).all()
        for clip in leased:
            assert clip.lease_owner is not None and clip.lease_expires_at is not None
            expired = all_expired and clip.lease_expires_at < now
            if not (owner_is_dead(clip.lease_owner) or expired):
                continue
            target = LEASED_STATES[ClipState(clip.state)]
            move(
                store,
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


def _due(now: datetime) -> Any:
    return or_(Clip.next_attempt_at.is_(None), Clip.next_attempt_at <= now)
