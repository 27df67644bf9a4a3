"""Camera assignments: who each camera is issued to, and who carried it when.

An assignment is an audit event (``camera.assigned``), so the history of who carried a
camera is hash-chained with the evidence; ``cameras.officer_id`` only caches the newest
one. The officer of a clip is the one assigned when the clip was *recorded*.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bwc_dock.ledger.models import AuditEntry, Camera, utc_now
from bwc_dock.ledger.store import Store

ASSIGNED_EVENT = "camera.assigned"


@dataclass(frozen=True)
class Assignment:
    """A camera issued to an officer from ``assigned_at`` on (checked before it gets here)."""

    serial: str
    officer_id: str
    assigned_at: datetime


def assign(store: Store, assignments: Sequence[Assignment]) -> None:
    """Record every assignment in one transaction: all of a CSV file, or none of it."""
    with store.transaction() as session:
        for assignment in assignments:
            _assign_one(store, session, assignment)


def _assign_one(store: Store, session: Session, assignment: Assignment) -> None:
    camera = session.get(Camera, assignment.serial)
    if camera is None:  # issued before its first docking
        camera = Camera(serial=assignment.serial, first_seen_at=utc_now())
        session.add(camera)
    previous = camera.officer_id
    if _newest_assignment_time(session, assignment.serial) <= assignment.assigned_at:
        camera.officer_id = assignment.officer_id  # the cache holds the newest assignment only
    store.audit(
        session,
        ASSIGNED_EVENT,
        camera_serial=assignment.serial,
        details={
            "officer_id": assignment.officer_id,
            "previous_officer_id": previous,
            "assigned_at": assignment.assigned_at.isoformat(),
        },
    )
    session.flush()


def _newest_assignment_time(session: Session, serial: str) -> datetime:
    times = [assigned_at for assigned_at, _ in history(session, serial)]
    return max(times, default=datetime.min.replace(tzinfo=UTC))


def history(session: Session, serial: str) -> list[tuple[datetime, str]]:
    """(assigned_at, officer_id) of every assignment of ``serial``, oldest first."""
    rows = session.scalars(
        select(AuditEntry.details)
        .where(AuditEntry.event == ASSIGNED_EVENT, AuditEntry.camera_serial == serial)
        .order_by(AuditEntry.id)
    )
    found = []
    for details in rows:
        document = json.loads(details)
        found.append((datetime.fromisoformat(document["assigned_at"]), document["officer_id"]))
    return sorted(found, key=lambda item: item[0])


def officer_at(session: Session, serial: str, moment: datetime) -> str | None:
    """The officer ``serial`` was issued to at ``moment`` (None before any assignment)."""
    officer: str | None = None
    for assigned_at, officer_id in history(session, serial):
        if assigned_at > moment:
            break
        officer = officer_id
    return officer
