"""Read-only questions about clips and cameras: lists, counts and totals for
``status``, ``clips``, ``cameras``, metrics, verify and resync.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import func, literal_column, or_, select

from bwc_dock.ledger.models import (
    Camera,
    Clip,
    ClipByteTotal,
    Docking,
    Sidecar,
)
from bwc_dock.ledger.snapshots import CameraInfo, ClipWork, clip_snapshot, clip_snapshots
from bwc_dock.ledger.states import PENDING_STATES, ClipState
from bwc_dock.ledger.store import Store

_PENDING = [str(state) for state in PENDING_STATES]


def get(store: Store, clip_id: int) -> ClipWork | None:
    with store.reading() as session:
        clip = session.get(Clip, clip_id)
        return None if clip is None else clip_snapshot(session, clip, None)


def clips_holding(store: Store, sha256: str) -> list[tuple[ClipWork, str]]:
    """(clip, file name) of every clip whose video, or one of whose sidecars, hashes to
    ``sha256``: the clips first, then sidecars' clips."""
    with store.reading() as session:
        found = [
            (clip_snapshot(session, clip, None), clip.name)
            for clip in session.scalars(
                select(Clip).where(Clip.sha256 == sha256).order_by(Clip.id)
            )
        ]
        for sidecar in session.scalars(
            select(Sidecar).where(Sidecar.sha256 == sha256).order_by(Sidecar.id)
        ):
            parent = session.get(Clip, sidecar.clip_id)
            if parent is not None:
                found.append((clip_snapshot(session, parent, None), sidecar.name))
        return found


def leased_clip_ids(store: Store) -> set[int]:
    """Clips some worker holds right now (alive or not)."""
    with store.reading() as session:
        return set(session.scalars(select(Clip.id).where(Clip.lease_owner.is_not(None))))


def purged_clip_ids(store: Store) -> set[int]:
    """Clips whose staged copies were deleted after retention (snapshots do not say)."""
    with store.reading() as session:
        return set(session.scalars(select(Clip.id).where(Clip.staged_purged_at.is_not(None))))


def recent_work(store: Store, window: timedelta) -> tuple[list[ClipWork], list[str]]:
    """(clips still pending upload, remote keys of clips and sidecars delivered within
    ``window`` of the ledger's last change): where this dock may have left a temporary."""
    with store.reading() as session:
        newest = session.scalar(select(func.max(Clip.updated_at)))
        if newest is None:
            return [], []
        pending = list(session.scalars(
            select(Clip).where(Clip.state.in_([str(ClipState.STAGED),
                                               str(ClipState.UPLOADING)])).order_by(Clip.id)
        ))
        recent = select(Clip.id).where(Clip.updated_at >= newest - window,
                                       Clip.remote_key.is_not(None))
        keys = list(session.scalars(select(Clip.remote_key).where(Clip.id.in_(recent))))
        keys += session.scalars(select(Sidecar.remote_key).where(
            Sidecar.clip_id.in_(recent), Sidecar.remote_key.is_not(None)))
        return clip_snapshots(session, pending), [key for key in keys if key]


def purgeable(store: Store, uploaded_before: datetime) -> list[ClipWork]:
    """Uploaded clips with staged copies, uploaded before ``uploaded_before``; the oldest
    upload first (making room for a waiting clip purges those first)."""
    with store.reading() as session:
        found = session.scalars(
            select(Clip)
            .where(
                # nearly every clip still holding a staged copy is uploaded: said so, the
                # planner takes the small staged-copies index even without statistics
                # (which would otherwise call the state index selective and read every
                # uploaded clip ever, 5,000,000 SQLite steps on a 1,000,000-clip ledger)
                func.likelihood(
                    Clip.state.in_([ClipState.UPLOADED, ClipState.CLEARED]),
                    literal_column("0.9"),
                ),
                Clip.staged_path.is_not(None),
                Clip.staged_purged_at.is_(None),
                Clip.uploaded_at < uploaded_before,
            )
            .order_by(Clip.uploaded_at, Clip.id)
        ).all()
        return clip_snapshots(session, list(found))


def pending_for_camera(store: Store, camera_serial: str, states: frozenset[ClipState]) -> int:
    with store.reading() as session:
        return (
            session.scalar(
                select(func.count()).where(
                    Clip.camera_serial == camera_serial,
                    Clip.state.in_([str(s) for s in states]),
                )
            )
            or 0
        )


def needing_camera(store: Store, camera_serial: str) -> int:
    """The camera's clips that still need it docked: not yet staged, or staged and left to
    their upload to verify (a damaged copy is read off the camera again). Counted in one
    snapshot: asked as two questions, a clip staged or found damaged between them would
    be in neither answer, and the camera released without it."""
    to_copy = [str(ClipState.DISCOVERED), str(ClipState.COPYING)]
    to_verify = [str(ClipState.STAGED), str(ClipState.UPLOADING)]
    with store.reading() as session:
        return (
            session.scalar(
                select(func.count()).where(
                    Clip.camera_serial == camera_serial,
                    Clip.state.in_(to_copy + to_verify),
                    or_(Clip.state.in_(to_copy), Clip.staged_verified.is_(False)),
                )
            )
            or 0
        )


def pending_in_docking(store: Store, docking_id: int) -> int:
    """Clips first seen in this docking that are not yet in central storage."""
    with store.reading() as session:
        return (
            session.scalar(
                select(func.count()).where(
                    Clip.docking_id == docking_id, Clip.state.in_(_PENDING)
                )
            )
            or 0
        )


def pending_among(store: Store, ids: Collection[int]) -> int:
    """How many of these clips are not yet in central storage (one count, no rows)."""
    with store.reading() as session:
        return (
            session.scalar(
                select(func.count()).where(Clip.id.in_(list(ids)), Clip.state.in_(_PENDING))
            )
            or 0
        )


def byte_totals(store: Store) -> tuple[int, int]:
    """(bytes copied off cameras, bytes confirmed in central storage), ever."""
    with store.reading() as session:
        totals = dict(session.execute(select(ClipByteTotal.kind, ClipByteTotal.bytes)).all())
        return int(totals.get("copied", 0)), int(totals.get("uploaded", 0))


def cameras(store: Store) -> list[CameraInfo]:
    """Every camera in the ledger, with how many of its clips are not yet uploaded."""
    with store.reading() as session:
        pending_counts: dict[str, int] = {
            serial: count
            for serial, count in session.execute(
                select(Clip.camera_serial, func.count())
                .where(Clip.state.in_(_PENDING))
                .group_by(Clip.camera_serial)
            ).all()
        }
        totals: dict[str, int] = {
            serial: count
            for serial, count in session.execute(
                select(Clip.camera_serial, func.count()).group_by(Clip.camera_serial)
            ).all()
        }
        docked = set(
            session.scalars(select(Docking.camera_serial).where(Docking.undocked_at.is_(None)))
        )
        return [
            CameraInfo(
                serial=camera.serial,
                profile=camera.profile_name,
                officer_id=camera.officer_id,
                first_seen_at=camera.first_seen_at,
                last_docked_at=camera.last_docked_at,
                docked_now=camera.serial in docked,
                pending_clips=pending_counts.get(camera.serial, 0),
                clips=totals.get(camera.serial, 0),
                device={
                    "usb_vendor_id": camera.usb_vendor_id,
                    "usb_product_id": camera.usb_product_id,
                    "fs_type": camera.fs_type,
                    "fs_label": camera.fs_label,
                    "fs_uuid": camera.fs_uuid,
                },
            )
            for camera in session.scalars(select(Camera).order_by(Camera.serial))
        ]
