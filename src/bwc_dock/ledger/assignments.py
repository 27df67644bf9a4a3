"""Camera assignments: who each camera is issued to, and who carried it when.

An assignment is an audit event (``camera.assigned``), so the history of who carried a
camera is hash-chained with the evidence; ``cameras.officer_id`` only caches the newest
one. The officer of a clip is the one assigned when the clip was *recorded*.

A back-dated assignment would change the officer of clips recorded since its start. For
clips already on their way to or in central storage, whose custody records already name
an officer, that is refused unless forced; a forced one is an audit event of its own
(``camera.clips_reattributed``) listing every clip it re-attributed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bwc_dock.errors import UsageError
from bwc_dock.ledger.models import FLEET_RECORD_EVENTS, AuditEntry, Camera, Clip, utc_now
from bwc_dock.ledger.states import ClipState
from bwc_dock.ledger.store import Store

ASSIGNED_EVENT = "camera.assigned"  # both events are named in FLEET_RECORD_EVENTS too
REATTRIBUTED_EVENT = "camera.clips_reattributed"
# a fleet assignment record (central storage) this dock could not apply
FLEET_REFUSED_EVENT = "camera.fleet_assignment_refused"
# Clips whose custody record (manifest) is written or being written: their officer is told.
_DELIVERED_STATES = (ClipState.UPLOADING, ClipState.UPLOADED, ClipState.CLEARED)
_NAMED_IN_ERROR = 20


@dataclass(frozen=True)
class Assignment:
    """A camera issued to an officer from ``assigned_at`` on (checked before it gets here)."""

    serial: str
    officer_id: str
    assigned_at: datetime
    # the fleet's record of it in central storage: its key, and its document (kept in
    # the audit log so that a record not yet stored can be written again later)
    record_key: str | None = None
    record: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Reattribution:
    """A delivered clip whose officer an assignment changes."""

    clip_id: int
    previous_officer_id: str | None
    officer_id: str


def assign(
    store: Store, assignments: Sequence[Assignment], *, force: bool = False
) -> list[Reattribution]:
    """Record every assignment in one transaction: all of a CSV file, or none of it.
    An assignment that re-attributes delivered clips raises :class:`UsageError` naming
    them, unless ``force``; the forced re-attributions are returned (and audited)."""
    reattributed: list[Reattribution] = []
    with store.transaction() as session:
        for assignment in assignments:
            affected = _reattributions(session, assignment)
            if affected and not force:
                raise UsageError(_refusal(assignment, affected))
            _assign_one(store, session, assignment)
            if affected:
                _record_reattribution(store, session, assignment, affected)
            reattributed.extend(affected)
    return reattributed


def _reattributions(session: Session, assignment: Assignment) -> list[Reattribution]:
    """Delivered clips recorded since the assignment starts whose officer it changes."""
    delivered = session.execute(
        select(Clip.id, Clip.recorded_at)
        .where(
            Clip.camera_serial == assignment.serial,
            Clip.state.in_([str(state) for state in _DELIVERED_STATES]),
            Clip.recorded_at >= assignment.assigned_at,
        )
        .order_by(Clip.id)
    ).all()
    if not delivered:
        return []
    before = history(session, assignment.serial)
    # the new assignment counts after any earlier one at the same moment, as when recorded
    after = sorted([*before, (assignment.assigned_at, assignment.officer_id)], key=lambda a: a[0])
    found = []
    for clip_id, recorded_at in delivered:
        previous, new = _officer_in(before, recorded_at), _officer_in(after, recorded_at)
        if previous != new and new is not None:
            found.append(Reattribution(clip_id, previous, new))
    return found


def _refusal(assignment: Assignment, affected: Sequence[Reattribution]) -> str:
    named = ", ".join(
        f"{item.clip_id} ({item.previous_officer_id or 'no officer'})"
        for item in affected[:_NAMED_IN_ERROR]
    )
    more = f" and {len(affected) - _NAMED_IN_ERROR} more" if len(affected) > _NAMED_IN_ERROR else ""
    return (
        f"camera {assignment.serial} issued to {assignment.officer_id} from "
        f"{assignment.assigned_at.isoformat()} would re-attribute {len(affected)} clip(s) "
        f"already delivered to central storage: {named}{more}; their custody records name "
        "the officer they had. Give --force to record it anyway (an audit event lists them)"
    )


def _record_reattribution(
    store: Store, session: Session, assignment: Assignment, affected: Sequence[Reattribution]
) -> None:
    store.audit(
        session,
        REATTRIBUTED_EVENT,
        camera_serial=assignment.serial,
        details={
            "officer_id": assignment.officer_id,
            "assigned_at": assignment.assigned_at.isoformat(),
            "forced": True,
            "clips": [
                {"clip_id": item.clip_id, "previous_officer_id": item.previous_officer_id}
                for item in affected
            ],
        },
    )


def _assign_one(store: Store, session: Session, assignment: Assignment) -> None:
    camera = session.get(Camera, assignment.serial)
    if camera is None:  # issued before its first docking
        camera = Camera(serial=assignment.serial, first_seen_at=utc_now())
        session.add(camera)
    previous = camera.officer_id
    if _newest_assignment_time(session, assignment.serial) <= assignment.assigned_at:
        camera.officer_id = assignment.officer_id  # the cache holds the newest assignment only
    details: dict[str, Any] = {
        "officer_id": assignment.officer_id,
        "previous_officer_id": previous,
        "assigned_at": assignment.assigned_at.isoformat(),
    }
    if assignment.record_key is not None:
        details |= {"record_key": assignment.record_key, "record": assignment.record}
    store.audit(session, ASSIGNED_EVENT, camera_serial=assignment.serial, details=details)
    session.flush()


def record_fleet_refusal(store: Store, serial: str | None, record_key: str, reason: str) -> None:
    """A fleet assignment record this dock did not apply, audited so it is not tried again."""
    with store.transaction() as session:
        store.audit(
            session,
            FLEET_REFUSED_EVENT,
            camera_serial=serial,
            details={"record_key": record_key, "reason": reason},
        )


def fleet_records(store: Store) -> dict[str, Mapping[str, Any] | None]:
    """Fleet assignment records this dock has handled: key -> the record's document when
    this dock applied it (None when it refused it)."""
    with store.reading() as session:
        rows = session.execute(
            select(AuditEntry.event, AuditEntry.details)
            .where(text(FLEET_RECORD_EVENTS))  # ix_audit_log_fleet_records
            .order_by(AuditEntry.id)
        ).all()
    handled: dict[str, Mapping[str, Any] | None] = {}
    for event, details in rows:
        document = json.loads(details) if details else {}
        key = document.get("record_key")
        if isinstance(key, str):
            record = document.get("record") if event == ASSIGNED_EVENT else None
            handled[key] = record if isinstance(record, dict) else None
    return handled


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
    return _officer_in(history(session, serial), moment)


def _officer_in(assignments: Sequence[tuple[datetime, str]], moment: datetime) -> str | None:
    """The officer of the newest of ``assignments`` (oldest first) not after ``moment``."""
    officer: str | None = None
    for assigned_at, officer_id in assignments:
        if assigned_at > moment:
            break
        officer = officer_id
    return officer
