"""Cameras the dock has seen, and who each one is issued to: the checks on an
assignment (from the command line or a CSV file) and the documents ``cameras`` prints.

An assignment is an audit event (``camera.assigned``), so the history of who carried
a camera is hash-chained with the evidence; the ledger keeps it
(:mod:`bwc_dock.ledger.assignments`). A back-dated one that would change the officer of
clips already delivered is refused unless forced (then audited with the clips). The
officer of a clip is the one assigned when the clip was *recorded*, not whoever holds
the camera at upload time.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bwc_dock.errors import UsageError
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

__all__ = [
    "ASSIGNED_EVENT",
    "REATTRIBUTED_EVENT",
    "Assignment",
    "CameraInfo",
    "Reattribution",
    "assign",
    "camera_documents",
    "checked_assignment",
    "list_cameras",
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
