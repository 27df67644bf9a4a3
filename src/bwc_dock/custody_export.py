"""The chain-of-custody export a court reads: one record per clip with every step
(read off the camera, staged, uploaded, verified, cleared), as JSON or CSV.

CSV cells that a spreadsheet would run as a formula are defused. A report written to a
file is there whole or not at all (durable.py), never half a report after a crash.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bwc_dock.durable import write_bytes_durably
from bwc_dock.errors import UsageError
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.audit import find_break
from bwc_dock.ledger.models import utc_now
from bwc_dock.ledger.snapshots import AuditRecord, ClipWork

STEP_NAMES = {
    "clip.discovered": "seen on camera",
    "clip.copying": "reading off camera",
    "clip.staged": "read off camera and staged",
    "clip.uploading": "upload started",
    "clip.uploaded": "uploaded, verified by storage",
    "clip.verified": "verified",
    "clip.cleared": "cleared from camera",
    "clip.quarantined": "quarantined",
    "clip.staging_purged": "staged copy deleted after retention",
    "clip.staging_adopted": "staged copy adopted by resync",
    "clip.prioritized": "prioritised",
    "central.wrong_object_removed": "wrong central object removed by resync",
    "object.conflict_kept": "other bytes under the clip's key kept aside by resync",
}
CAMERA_SIDE_EVENTS = frozenset({"clip.discovered", "clip.copying", "clip.staged", "clip.cleared"})
FORMULA_STARTS = frozenset("=+-@\t\r")
CSV_COLUMNS = (
    "clip_id",
    "camera_serial",
    "officer_id",
    "source_path",
    "recorded_at",
    "recorded_at_corrected",
    "camera_time",
    "time_flag",
    "clip_sha256",
    "remote_key",
    "state",
    "audit_id",
    "at",
    "step",
    "event",
    "dock_id",
    "device",
    "actor",
    "sha256",
    "outcome",
    "audit_hash",
)
STEP_COLUMNS = CSV_COLUMNS[CSV_COLUMNS.index("audit_id") :]


@dataclass(frozen=True)
class ExportFilter:
    camera_serial: str | None = None
    since: datetime | None = None  # recorded at or after
    until: datetime | None = None  # recorded before


def parse_moment(text: str | None, option: str) -> datetime | None:
    """An ISO date or date-time; without a zone it is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise UsageError(f"{option} {text!r}: give an ISO date like 2026-11-24") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def custody_records(ledger: Ledger, selection: ExportFilter) -> list[dict[str, Any]]:
    """One record per clip, each with every step of its history in audit order."""
    facts = ledger.custody_facts(selection.camera_serial, selection.since, selection.until)
    return [
        _clip_record(
            clip, facts.officers[clip.id], facts.steps.get(clip.id, []), facts.devices
        )
        for clip in facts.clips
    ]


def _clip_record(
    clip: ClipWork,
    officer: str | None,
    entries: list[AuditRecord],
    devices: dict[int, str],
) -> dict[str, Any]:
    return {
        "clip_id": clip.id,
        "camera_serial": clip.camera_serial,
        "officer_id": officer,
        "source_path": clip.source_path,
        "size": clip.size,
        "recorded_at": clip.recorded_at.isoformat(),
        **clip.time.document(),
        "sha256": clip.sha256,
        "remote_key": clip.remote_key,
        "remote_sha256": clip.remote_sha256,
        "state": str(clip.state),
        "sidecars": [
            {"source_path": s.source_path, "sha256": s.sha256, "remote_key": s.remote_key}
            for s in clip.sidecars
        ],
        "steps": [_step(entry, clip, devices) for entry in entries],
    }


def _step(entry: AuditRecord, clip: ClipWork, devices: dict[int, str]) -> dict[str, Any]:
    details = json.loads(entry.details)
    device = None
    if entry.event in CAMERA_SIDE_EVENTS:
        device = devices.get(details.get("docking_id", clip.docking_id))
    return {
        "audit_id": entry.id,
        "at": entry.at,
        "step": _step_name(entry.event, details),
        "event": entry.event,
        "dock_id": entry.dock_id,
        "device": device,
        "actor": entry.actor,
        "sha256": entry.sha256,
        "outcome": _outcome(entry.event, details),
        "details": details,
        "audit_hash": entry.hash,
    }


def _step_name(event: str, details: dict[str, Any]) -> str:
    previous = details.get("from")
    if event == "clip.staged" and previous == "uploading":
        return "upload attempt ended, will retry"
    if event == "clip.staged" and previous in ("uploaded", "quarantined"):
        return "re-queued for upload"
    if event == "clip.discovered" and previous is not None:
        return "re-queued to be read off camera"
    return STEP_NAMES.get(event, event)


def _outcome(event: str, details: dict[str, Any]) -> str:
    if event == "clip.verified":
        return f"{details.get('outcome')} ({', '.join(details.get('where', []))})"
    if details.get("error"):
        return f"failed: {details['error']}"
    if details.get("reason"):
        return str(details["reason"])
    return "ok"


def export_document(ledger: Ledger, selection: ExportFilter, generated_by: str) -> dict[str, Any]:
    entries = ledger.audit_entries()
    broken = find_break(entries)
    head_id, head_hash = ledger.audit_head()
    return {
        "schema": "bwc-dock/custody/1",
        "generated_at": utc_now().isoformat(),
        "generated_by": generated_by,
        "dock": ledger.dock_id,
        "filter": {
            "camera": selection.camera_serial,
            "recorded_since": selection.since.isoformat() if selection.since else None,
            "recorded_until": selection.until.isoformat() if selection.until else None,
        },
        "audit_chain": {
            "rows": len(entries),
            "head": {"id": head_id, "hash": head_hash},
            "intact": broken is None,
            "first_broken_row": broken.entry_id if broken else None,
        },
        "clips": custody_records(ledger, selection),
    }


def export_csv(document: dict[str, Any]) -> str:
    """One row per step of each clip, the clip's facts repeated on every row."""
    buffer = io.StringIO()
    writer = _SafeCells(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for clip in document["clips"]:
        for step in clip["steps"]:
            writer.writerow(
                {
                    "clip_id": clip["clip_id"],
                    "camera_serial": clip["camera_serial"],
                    "officer_id": clip["officer_id"] or "",
                    "source_path": clip["source_path"],
                    "recorded_at": clip["recorded_at"],
                    "recorded_at_corrected": "yes" if clip["recorded_at_corrected"] else "no",
                    "camera_time": clip["camera_time"] or "",
                    "time_flag": clip["time_flag"] or "",
                    "clip_sha256": clip["sha256"] or "",
                    "remote_key": clip["remote_key"] or "",
                    "state": clip["state"],
                    **{name: "" if step[name] is None else step[name] for name in STEP_COLUMNS},
                }
            )
    return buffer.getvalue()


class _SafeCells(csv.DictWriter):  # type: ignore[type-arg]
    """Names from a camera are hostile: a cell a spreadsheet would run as a formula
    (starting with = + - @ or a control character) is written with a leading quote."""

    def writerow(self, rowdict: Any) -> Any:
        return super().writerow({name: _defused(value) for name, value in rowdict.items()})


def _defused(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def write_export(path: Path, text: str) -> None:
    """Put the export at ``path`` crash-safely; UsageError naming the file if it cannot."""
    try:
        write_bytes_durably(path, text.encode("utf-8"))
    except OSError as error:
        raise UsageError(f"cannot write the custody export to {path}: {error.strerror}") from error
