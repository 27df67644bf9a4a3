"""Cameras the dock has seen, and who each one is issued to: the checks on an
assignment (from the command line or a CSV file) and the documents ``cameras`` prints.

An assignment is an audit event (``camera.assigned``), so the history of who carried
a camera is hash-chained with the evidence; the ledger keeps it
(:mod:`bwc_dock.ledger.assignments`). A back-dated one that would change the officer of
clips already delivered is refused unless forced (then audited with the clips). The
officer of a clip is the one assigned when the clip was *recorded*, not whoever holds
the camera at upload time.

Assignments are the fleet's: each one is also a create-only record in central storage
(``_assignments/<camera>/...``), made on whichever machine recorded it, and every dock
picks up the records it has not handled yet (at each docking, and whenever an
assignment is made there), so the officer of a clip is the same whichever dock
offloads it. A dock applies a picked-up record with the same back-dating rule (a record
made with ``--force`` is applied forced); one it refuses is audited
(``camera.fleet_assignment_refused``) and not tried again. A record that could not be
stored when it was made is stored at the next pick-up.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from bwc_dock.coverage.records import ASSIGNMENT_SCHEMA, AssignmentRecord, read_assignments
from bwc_dock.coverage.shared import ASSIGNMENTS_PREFIX, encode, record_key
from bwc_dock.errors import BwcDockError, UsageError
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.assignments import (
    ASSIGNED_EVENT,
    REATTRIBUTED_EVENT,
    Assignment,
    Reattribution,
)
from bwc_dock.ledger.models import utc_now
from bwc_dock.ledger.snapshots import CameraInfo
from bwc_dock.names import safe_name
from bwc_dock.storage import StorageBackend

log = structlog.get_logger(__name__)

__all__ = [
    "ASSIGNED_EVENT",
    "REATTRIBUTED_EVENT",
    "Assignment",
    "CameraInfo",
    "Reattribution",
    "assign",
    "camera_documents",
    "checked_assignment",
    "fleet_assignments",
    "list_cameras",
    "pick_up_assignments",
    "publish_assignments",
    "read_assignments_csv",
]

MAX_OFFICER_ID = 128


def list_cameras(ledger: Ledger) -> list[CameraInfo]:
    """Every camera in the ledger, with how many of its clips are not yet uploaded."""
    return ledger.cameras()


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


def assign(
    ledger: Ledger, assignments: Sequence[Assignment], *, force: bool = False
) -> list[Reattribution]:
    """Record every assignment in one transaction: all of a CSV file, or none of it.
    One that would re-attribute clips already delivered is refused unless ``force``."""
    return ledger.assign_cameras(assignments, force=force)


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


def camera_documents(
    cameras: Iterable[CameraInfo], clock_offsets: Mapping[str, float | None] | None = None
) -> list[dict[str, object]]:
    """One document per camera; ``clock_offset_seconds`` is its clock minus the dock's at
    its latest docking (None: not measured then)."""
    offsets = clock_offsets or {}
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
            "device": dict(camera.device),
            "clock_offset_seconds": offsets.get(camera.serial),
        }
        for camera in cameras
    ]


# -- the fleet's assignments ---------------------------------------------------------------


def fleet_assignments(
    assignments: Sequence[Assignment],
    *,
    dock_id: str,
    forced: bool,
    made_at: datetime | None = None,
) -> list[Assignment]:
    """The same assignments, each with its fleet record (document and key) attached."""
    made_at = (made_at or utc_now()).astimezone(UTC)
    recorded = []
    for assignment in assignments:
        document = {
            "schema": ASSIGNMENT_SCHEMA,
            "camera": assignment.serial,
            "officer_id": assignment.officer_id,
            "assigned_at": assignment.assigned_at.isoformat(),
            "made_at": made_at.isoformat(),
            "dock": dock_id,
            "forced": forced,
        }
        key = record_key(ASSIGNMENTS_PREFIX, assignment.serial, assignment.assigned_at,
                         encode(document))
        recorded.append(
            Assignment(assignment.serial, assignment.officer_id, assignment.assigned_at,
                       record_key=key, record=document)
        )
    return recorded


def publish_assignments(backend: StorageBackend, assignments: Iterable[Assignment]) -> int:
    """Store each assignment's fleet record, create-only (one stored before is success)."""
    stored = 0
    for assignment in assignments:
        if assignment.record_key is None or assignment.record is None:
            continue
        data = encode(assignment.record)
        if record_key(ASSIGNMENTS_PREFIX, assignment.serial, assignment.assigned_at,
                      data) != assignment.record_key:
            continue  # not the record its key names: never write it under that key
        backend.put_bytes(assignment.record_key, data, {})
        stored += 1
    return stored


def pick_up_assignments(ledger: Ledger, backend: StorageBackend) -> tuple[int, int]:
    """Apply the fleet's assignment records this dock has not handled, oldest first, and
    store the ones made here that central storage lacks; (applied, refused)."""
    handled = ledger.fleet_assignment_records()
    found, problems = read_assignments(backend)
    for problem in problems:
        log.warning("camera.fleet_assignment_unreadable", key=problem.key, reason=problem.reason)
    stored_keys = {key for key, _record in found} | {problem.key for problem in problems}
    _store_missing(backend, handled, stored_keys)
    applied = refused = 0
    for key, record in sorted(found, key=lambda item: (item[1].assigned_at, item[0])):
        if key in handled:
            continue
        if _apply(ledger, key, record):
            applied += 1
        else:
            refused += 1
    return applied, refused


def _apply(ledger: Ledger, key: str, record: AssignmentRecord) -> bool:
    try:
        checked = checked_assignment(record.camera, record.officer_id, record.assigned_at)
        assignment = Assignment(checked.serial, checked.officer_id, checked.assigned_at,
                                record_key=key, record=record.model_dump(mode="json"))
        ledger.assign_cameras([assignment], force=record.forced)
    except UsageError as error:
        log.error("camera.fleet_assignment_refused", key=key, camera=record.camera,
                  error=str(error))
        ledger.record_fleet_assignment_refusal(None, key, str(error))
        return False
    log.info("camera.fleet_assignment_applied", key=key, camera=record.camera,
             officer=record.officer_id)
    return True


def _store_missing(
    backend: StorageBackend, handled: dict[str, Any], stored_keys: set[str]
) -> None:
    """Records made here whose first store failed: written now (they keep their key)."""
    for key, document in sorted(handled.items()):
        if key in stored_keys or not isinstance(document, dict):
            continue
        try:
            record = AssignmentRecord.model_validate(document)
            assignment = Assignment(record.camera, record.officer_id, record.assigned_at,
                                    record_key=key, record=document)
            publish_assignments(backend, [assignment])
        except (BwcDockError, OSError, ValueError) as error:
            log.warning("camera.fleet_assignment_not_stored", key=key, error=str(error))
