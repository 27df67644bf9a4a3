"""Cameras the dock has seen, and who each one is issued to.

An assignment is an audit event (``camera.assigned``), so the history of who carried
a camera is hash-chained with the evidence; ``cameras.officer_id`` only caches the
newest one. The officer of a clip is the one assigned when the clip was *recorded*,
looked up in that history, not whoever holds the camera at upload time.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bwc_dock.errors import UsageError
from bwc_dock.ledger import Ledger
from bwc_dock.ledger import audit as audit_chain
from bwc_dock.ledger.models import AuditEntry, Camera, Clip, Docking, utc_now
from bwc_dock.ledger.states import PENDING_STATES
from bwc_dock.scanner import safe_name

ASSIGNED_EVENT = "camera.assigned"
MAX_OFFICER_ID = 128


@dataclass(frozen=True)
class CameraInfo:
    serial: str
    profile: str | None
    officer_id: str | None
    first_seen_at: datetime
    last_docked_at: datetime | None
    docked_now: bool
    pending_clips: int
    clips: int


@dataclass(frozen=True)
class Assignment:
    serial: str
    officer_id: str
    assigned_at: datetime


def list_cameras(ledger: Ledger) -> list[CameraInfo]:
    """Every camera in the ledger, with how many of its clips are not yet uploaded."""
    pending = [str(state) for state in PENDING_STATES]
    with ledger.transaction() as session:
        pending_counts = dict(
            session.execute(
                select(Clip.camera_serial, func.count())
                .where(Clip.state.in_(pending))
                .group_by(Clip.camera_serial)
            ).all()
        )
        totals = dict(
            session.execute(
                select(Clip.camera_serial, func.count()).group_by(Clip.camera_serial)
            ).all()
        )
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
            )
            for camera in session.scalars(select(Camera).order_by(Camera.serial))
        ]


def checked_assignment(serial: str, officer_id: str, assigned_at: datetime | None) -> Assignment:
    """Validate one assignment (the same rules for the command line and CSV rows)."""
    if not serial or safe_name(serial.encode()) != serial:
        raise UsageError(f"camera serial {serial!r}: use only letters, digits, '.', '_', '-'")
    officer_id = officer_id.strip()
    if not officer_id or len(officer_id) > MAX_OFFICER_ID or not officer_id.isprintable():
        raise UsageError(f"officer id {officer_id!r}: 1 to {MAX_OFFICER_ID} printable characters")
    when = assigned_at or utc_now()
    if when.tzinfo is None:
        raise UsageError(f"assigned_at {when.isoformat()}: give a time zone (e.g. +00:00 or Z)")
    return Assignment(serial, officer_id, when.astimezone(UTC))


def assign(ledger: Ledger, assignments: Sequence[Assignment]) -> None:
    """Record every assignment in one transaction: all of a CSV file, or none of it."""
    with ledger.transaction() as session:
        for assignment in assignments:
            _assign_one(ledger, session, assignment)


def _assign_one(ledger: Ledger, session: Session, assignment: Assignment) -> None:
    camera = session.get(Camera, assignment.serial)
    if camera is None:  # issued before its first docking
        camera = Camera(serial=assignment.serial, first_seen_at=utc_now())
        session.add(camera)
    previous = camera.officer_id
    if _newest_assignment_time(session, assignment.serial) <= assignment.assigned_at:
        camera.officer_id = assignment.officer_id  # the cache holds the newest assignment only
    audit_chain.append(
        session,
        dock_id=ledger.dock_id,
        actor=ledger.actor,
        event=ASSIGNED_EVENT,
        camera_serial=assignment.serial,
        details={
            "officer_id": assignment.officer_id,
            "previous_officer_id": previous,
            "assigned_at": assignment.assigned_at.isoformat(),
        },
    )
    session.flush()


def _newest_assignment_time(session: Session, serial: str) -> datetime:
    times = [assigned_at for assigned_at, _ in assignment_history(session, serial)]
    return max(times, default=datetime.min.replace(tzinfo=UTC))


def assignment_history(session: Session, serial: str) -> list[tuple[datetime, str]]:
    """(assigned_at, officer_id) of every assignment of ``serial``, oldest first."""
    rows = session.scalars(
        select(AuditEntry.details)
        .where(AuditEntry.event == ASSIGNED_EVENT, AuditEntry.camera_serial == serial)
        .order_by(AuditEntry.id)
    )
    history = []
    for details in rows:
        document = json.loads(details)
        history.append((datetime.fromisoformat(document["assigned_at"]), document["officer_id"]))
    return sorted(history, key=lambda item: item[0])


def officer_at(session: Session, serial: str, moment: datetime) -> str | None:
    """The officer ``serial`` was issued to at ``moment`` (None before any assignment)."""
    officer: str | None = None
    for assigned_at, officer_id in assignment_history(session, serial):
        if assigned_at > moment:
            break
        officer = officer_id
    return officer


def read_assignments_csv(path: Path) -> list[Assignment]:
    """Rows ``serial,officer_id[,assigned_at]`` with a header; every row checked first."""
    try:
        with path.open(newline="", encoding="utf-8") as source:
            return _parse_rows(csv.DictReader(source), path)
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not UTF-8 text ({error.reason})") from error


def _parse_rows(reader: csv.DictReader[str], path: Path) -> list[Assignment]:
    missing = {"serial", "officer_id"} - set(reader.fieldnames or ())
    if missing:
        raise UsageError(f"{path}: header lacks {', '.join(sorted(missing))}")
    assignments = []
    for line_number, row in enumerate(reader, start=2):
        try:
            assignments.append(
                checked_assignment(
                    (row.get("serial") or "").strip(),
                    row.get("officer_id") or "",
                    _parse_time(row.get("assigned_at")),
                )
            )
        except (UsageError, ValueError) as error:
            raise UsageError(f"{path} line {line_number}: {error}") from error
    return assignments


def _parse_time(text: str | None) -> datetime | None:
    if text is None or not text.strip():
        return None
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def camera_documents(cameras: Iterable[CameraInfo]) -> list[dict[str, object]]:
    return [
        {
            "serial": camera.serial,
            "profile": camera.profile,
            "officer_id": camera.officer_id,
            "first_seen_at": camera.first_seen_at.isoformat(),
            "last_docked_at": camera.last_docked_at.isoformat() if camera.last_docked_at else None,
            "docked": camera.docked_now,
            "pending_clips": camera.pending_clips,
            "clips": camera.clips,
        }
        for camera in cameras
    ]
