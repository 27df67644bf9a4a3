"""Dockings: a camera (or an ingested folder) arriving, being read, and leaving.

Recording a docking also keeps the camera's row (profile, USB ids, filesystem) current.
A docking's ``owner`` is a lease-owner name: a docking whose reader died is taken over
(``adopt``) or ended (``end_stale``) when the daemon starts.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bwc_dock.found import DockedVolume
from bwc_dock.ledger.leases import owner_is_dead
from bwc_dock.ledger.models import Camera, Docking, utc_now
from bwc_dock.ledger.snapshots import DockingClocks, DockingRecord, docking_record
from bwc_dock.ledger.store import Store

log = structlog.get_logger(__name__)

# what names the device itself; a different profile is a configuration change, not another
# device, so it is recorded but not compared
_COMPARED = ("usb_vendor_id", "usb_product_id", "fs_type", "fs_label", "fs_uuid")


def record(store: Store, volume: DockedVolume, owner: str | None) -> int:
    """A new docking of ``volume``; ``owner`` (a lease-owner name) is who reads it."""
    now = utc_now()
    identity = volume.device_identity()
    with store.transaction() as session:
        previous = _last_identified(session, volume.camera_serial)
        camera = session.get(Camera, volume.camera_serial)
        if camera is None:
            camera = Camera(serial=volume.camera_serial, first_seen_at=now)
            session.add(camera)
        camera.profile_name = volume.profile_name
        camera.usb_vendor_id = volume.usb_vendor_id
        camera.usb_product_id = volume.usb_product_id
        camera.fs_type = volume.fs_type
        camera.fs_label = volume.fs_label
        camera.fs_uuid = volume.fs_uuid
        camera.last_docked_at = now
        docking = Docking(
            camera_serial=volume.camera_serial,
            dock_id=store.dock_id,
            source=volume.source,
            device=volume.device,
            volume_root=str(volume.root),
            owner=owner,
            docked_at=now,
            refused_entries=0,
            profile_name=volume.profile_name,
            usb_vendor_id=volume.usb_vendor_id,
            usb_product_id=volume.usb_product_id,
            fs_type=volume.fs_type,
            fs_label=volume.fs_label,
            fs_uuid=volume.fs_uuid,
        )
        session.add(docking)
        session.flush()
        store.audit(
            session,
            "camera.docked",
            camera_serial=volume.camera_serial,
            details={
                "docking_id": docking.id,
                "device": volume.device,
                "source": volume.source,
                **identity,
            },
        )
        changed = _audit_identity_change(store, session, previous, docking)
    if changed is not None:
        # another device may be claiming this serial: whoever reads the journal must hear
        log.warning("camera.identity_changed", camera=volume.camera_serial, **changed)
    return docking.id


def _last_identified(session: Session, camera_serial: str) -> Docking | None:
    """The camera's newest docking that recorded a device identity (every docking since
    the ledger kept one names its profile; older ones recorded none to compare with)."""
    return session.scalars(
        select(Docking)
        .where(Docking.camera_serial == camera_serial, Docking.profile_name.is_not(None))
        .order_by(Docking.id.desc())
        .limit(1)
    ).first()


def identity_changes(previous: Docking, current: Docking) -> dict[str, list[str]]:
    """Each identity value both dockings saw and that differs: [before, now]. A value one
    of them could not see (a folder has no USB ids) proves nothing either way."""
    changes = {}
    for name in _COMPARED:
        before, now = getattr(previous, name), getattr(current, name)
        if before is not None and now is not None and before != now:
            changes[name] = [before, now]
    return changes


def _audit_identity_change(
    store: Store, session: Session, previous: Docking | None, current: Docking
) -> dict[str, Any] | None:
    """Audit a device identity that differs from the camera's last docking; its details,
    or None when nothing changed."""
    if previous is None:
        return None
    changes = identity_changes(previous, current)
    if not changes:
        return None
    details: dict[str, Any] = {
        "docking_id": current.id,
        "previous_docking_id": previous.id,
        "changed": changes,
    }
    store.audit(
        session, "camera.identity_changed", camera_serial=current.camera_serial, details=details
    )
    return details


def device_of(docking: Docking | None) -> dict[str, str | None]:
    """The device identity ``docking`` recorded; all None for None."""
    return {
        "profile": docking.profile_name if docking else None,
        **{name: getattr(docking, name) if docking else None for name in _COMPARED},
    }


def record_clocks(
    store: Store, docking_id: int, clocks: DockingClocks, details: dict[str, Any]
) -> None:
    """The camera's and the dock's clocks at this docking, once, audited with ``details``
    (the camera's reading, why it could not be read)."""
    with store.transaction() as session:
        docking = session.get(Docking, docking_id)
        if docking is None or docking.dock_clock_source is not None:
            return
        docking.camera_clock_offset_seconds = clocks.camera_clock_offset_seconds
        docking.camera_clock_source = clocks.camera_clock_source
        docking.dock_clock_synchronized = clocks.dock_clock_synchronized
        docking.dock_clock_error_seconds = clocks.dock_clock_error_seconds
        docking.dock_clock_source = clocks.dock_clock_source
        store.audit(
            session,
            "docking.clocks",
            camera_serial=docking.camera_serial,
            details={"docking_id": docking_id, **clocks.document(), **details},
        )


def docked_camera_serials(store: Store) -> list[str]:
    """Every camera serial this dock has recorded a docking of."""
    with store.reading() as session:
        return list(session.scalars(select(Docking.camera_serial).distinct()))


def latest_camera_offsets(store: Store) -> dict[str, float | None]:
    """Each camera's clock offset at its latest docking (None: not measured then)."""
    with store.reading() as session:
        latest = select(func.max(Docking.id)).group_by(Docking.camera_serial)
        rows = session.execute(
            select(Docking.camera_serial, Docking.camera_clock_offset_seconds).where(
                Docking.id.in_(latest)
            )
        )
        return {serial: offset for serial, offset in rows}


def end(store: Store, docking_id: int, reason: str) -> None:
    with store.transaction() as session:
        docking = session.get(Docking, docking_id)
        if docking is None or docking.undocked_at is not None:
            return
        docking.undocked_at = utc_now()
        store.audit(
            session,
            "camera.undocked",
            camera_serial=docking.camera_serial,
            details={"docking_id": docking_id, "reason": reason},
        )


def hand_over(store: Store, docking_id: int, owner: str) -> None:
    """``owner`` gives its open docking up for the daemon to adopt (it becomes ownerless)."""
    with store.transaction() as session:
        docking = session.get(Docking, docking_id)
        if docking is not None and docking.undocked_at is None and docking.owner == owner:
            docking.owner = None


def adopt(store: Store, new_owner: str, sources: frozenset[str]) -> list[Docking]:
    """Take over open dockings of ``sources`` whose owner is gone; return them.

    The daemon asks at every turn of its main loop and there is seldom one, so they are
    looked for in a reading transaction first: the write lock, which waits for the
    workers' commits, is taken only to take one over (and the search made again in it)."""
    with store.reading() as session:
        if not _ownerless(session, sources):
            return []
    with store.transaction() as session:
        adopted = _ownerless(session, sources)
        for docking in adopted:
            docking.owner = new_owner
        return adopted


def _ownerless(session: Session, sources: frozenset[str]) -> list[Docking]:
    """Open dockings of ``sources`` handed over (no owner) or whose owner is gone."""
    open_dockings = session.scalars(
        select(Docking).where(Docking.undocked_at.is_(None), Docking.source.in_(sources))
    ).all()
    return [d for d in open_dockings if d.owner is None or owner_is_dead(d.owner)]


def end_stale(store: Store) -> int:
    """At start-up: dockings whose reader died are over (the sources re-dock what is
    still present)."""
    with store.transaction() as session:
        open_dockings = session.scalars(select(Docking).where(Docking.undocked_at.is_(None))).all()
        stale = [d for d in open_dockings if d.owner is None or owner_is_dead(d.owner)]
        for docking in stale:
            docking.undocked_at = utc_now()
            store.audit(
                session,
                "camera.undocked",
                camera_serial=docking.camera_serial,
                details={"docking_id": docking.id, "reason": "daemon restarted"},
            )
        return len(stale)


def get(store: Store, docking_id: int) -> DockingRecord | None:
    with store.reading() as session:
        docking = session.get(Docking, docking_id)
        return None if docking is None else docking_record(docking)
