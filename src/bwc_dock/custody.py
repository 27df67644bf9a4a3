"""Chain of custody: the export a court reads, and anchors kept outside the dock.

Anchors: every clip manifest in central storage records the audit chain head (row id
and hash) at the time of its upload, and every docking gets a ``SHA256SUMS`` file in
the standard ``sha256sum`` form listing each object it delivered, with names relative
to the folder the file lies in (so ``sha256sum -c`` run in a downloaded copy of that
folder checks everything). :func:`check_anchors` compares the local chain with the
heads in the manifests: rewriting the ledger after the fact, even with every hash
recomputed, changes the hash of an anchored row, which central storage still knows.
Rows newer than the newest anchor cannot be checked that way (said in the report).
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from bwc_dock.errors import StorageError, UsageError
from bwc_dock.ledger import ClipState, Ledger
from bwc_dock.ledger.audit import find_break
from bwc_dock.ledger.models import utc_now
from bwc_dock.ledger.snapshots import AuditRecord, ClipWork
from bwc_dock.manifest import manifest_key
from bwc_dock.scanner import safe_name
from bwc_dock.storage.base import StorageBackend

log = structlog.get_logger(__name__)

# Two uploader threads finishing clips of one docking must not write its list in turns
# with stale views; across processes a later write (or resync) puts the newest list.
_SUMS_LOCK = threading.Lock()


# -- per-docking SHA256SUMS ------------------------------------------------------------


@dataclass(frozen=True)
class DockingSums:
    docking_id: int
    key: str
    content: bytes


def docking_sums(ledger: Ledger, docking_id: int) -> DockingSums | None:
    """The SHA256SUMS document of a docking's delivered objects; None before any."""
    objects = ledger.delivered_objects(docking_id)
    if not objects:
        return None
    folder = _common_folder(list(objects))
    name = f"SHA256SUMS.{safe_name(ledger.dock_id.encode())}.docking-{docking_id:06d}"
    key = f"{folder}/{name}" if folder else name
    lines = [
        f"{sha256}  {posixpath.relpath(object_key, folder or '.')}\n"
        for object_key, sha256 in sorted(objects.items())
    ]
    return DockingSums(docking_id, key, "".join(lines).encode("ascii"))


def _common_folder(keys: list[str]) -> str:
    folders = [key.rsplit("/", 1)[0] if "/" in key else "" for key in keys]
    return posixpath.commonpath(folders) if all(folders) else ""


def stored_sums_current(backend: StorageBackend, sums: DockingSums) -> bool:
    return backend.read_bytes(sums.key) == sums.content


def write_docking_sums(ledger: Ledger, backend: StorageBackend, docking_id: int) -> str | None:
    """(Re)write a docking's SHA256SUMS from the ledger; return its key."""
    with _SUMS_LOCK:
        read_at = utc_now()  # an upload after this makes the list stale again
        sums = docking_sums(ledger, docking_id)
        if sums is None:
            return None
        backend.put_bytes(
            sums.key,
            sums.content,
            {"dock": ledger.dock_id, "docking-id": str(docking_id)},
            replace=True,
        )
        ledger.mark_sums_written(docking_id, read_at)
    log.info("custody.sums_written", docking=docking_id, key=sums.key)
    return sums.key


def anchor_dockings(ledger: Ledger, backend: StorageBackend, budget_seconds: float = 5.0) -> int:
    """Write the SHA256SUMS the ledger says are missing or stale; the number written.

    The uploader writes a docking's list when its last clip is stored; this catches a
    daemon killed at that moment or a store that refused the write. A storage error
    ends the round (the store is down), and so does ``budget_seconds``: the daemon's
    main loop (its watchdog pings) must not wait on a long catch-up. The next round
    goes on where this one stopped.
    """
    deadline = time.monotonic() + budget_seconds
    written = 0
    for docking_id in ledger.dockings_to_anchor():
        if time.monotonic() >= deadline:
            break
        try:
            write_docking_sums(ledger, backend, docking_id)
        except StorageError as error:
            log.warning("custody.sums_failed", docking=docking_id, error=str(error))
            break
        written += 1
    return written


# -- audit chain against the anchors in central storage ------------------------------------


@dataclass(frozen=True)
class AnchorProblem:
    clip_id: int
    manifest_key: str
    anchor_row: int | None
    problem: str


@dataclass
class AnchorReport:
    local_rows: int
    local_break: int | None = None
    local_break_reason: str | None = None
    anchors_checked: int = 0
    newest_anchor_row: int = 0
    problems: list[AnchorProblem] = field(default_factory=list)
    changed_after_row: int | None = None  # the edit lies after this row ...
    changed_at_or_before_row: int | None = None  # ... and at or before this one

    @property
    def ok(self) -> bool:
        return self.local_break is None and not self.problems

    def document(self) -> dict[str, Any]:
        document = asdict(self)
        document["ok"] = self.ok
        document["unanchored_rows"] = max(0, self.local_rows - self.newest_anchor_row)
        return document


def check_anchors(ledger: Ledger, backend: StorageBackend) -> AnchorReport:
    entries = ledger.audit_entries()
    broken = find_break(entries)
    report = AnchorReport(
        len(entries),
        broken.entry_id if broken else None,
        broken.reason if broken else None,
    )
    hashes = {entry.id: entry.hash for entry in entries}
    good_rows: list[int] = []
    for clip in ledger.clips():
        if clip.state not in (ClipState.UPLOADED, ClipState.CLEARED) or not clip.remote_key:
            continue
        if clip.duplicate_of is not None:
            continue  # points at its original's objects and manifest
        key = manifest_key(clip.remote_key, ledger.dock_id, clip.id)
        anchor = _read_anchor(backend, key)
        if isinstance(anchor, str):
            report.problems.append(AnchorProblem(clip.id, key, None, anchor))
            continue
        row, row_hash, manifest_sha256 = anchor
        report.anchors_checked += 1
        report.newest_anchor_row = max(report.newest_anchor_row, row)
        if manifest_sha256 != clip.sha256:
            report.problems.append(
                AnchorProblem(
                    clip.id,
                    key,
                    row,
                    f"the ledger's hash {clip.sha256} differs from the manifest's "
                    f"{manifest_sha256}",
                )
            )
        if row in hashes and hashes[row] == row_hash:
            good_rows.append(row)
            continue
        problem = (
            f"audit row {row} is missing from the local ledger"
            if row not in hashes
            else f"audit row {row} differs from the chain head recorded in central storage"
        )
        report.problems.append(AnchorProblem(clip.id, key, row, problem))
    _bound_the_edit(report, good_rows)
    return report


def _read_anchor(backend: StorageBackend, key: str) -> tuple[int, str, str | None] | str:
    content = backend.read_bytes(key)
    if content is None:
        return "manifest missing from central storage"
    try:
        document = json.loads(content)
        head = document["audit_chain_head"]
        return int(head["id"]), str(head["hash"]), document.get("sha256")
    except (ValueError, KeyError, TypeError) as error:
        return f"manifest unreadable: {error}"


def _bound_the_edit(report: AnchorReport, good_rows: list[int]) -> None:
    bad_rows = [p.anchor_row for p in report.problems if p.anchor_row is not None]
    if not bad_rows:
        return
    first_bad = min(bad_rows)
    report.changed_at_or_before_row = first_bad
    below = [row for row in good_rows if row < first_bad]
    report.changed_after_row = max(below, default=0)


# -- the export ----------------------------------------------------------------------------

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
                    "clip_sha256": clip["sha256"] or "",
                    "remote_key": clip["remote_key"] or "",
                    "state": clip["state"],
                    **{name: "" if step[name] is None else step[name] for name in CSV_COLUMNS[8:]},
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
