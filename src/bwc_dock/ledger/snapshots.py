"""Frozen snapshots of ledger rows: what the rest of bwc-dock receives, never ORM objects.

A snapshot is taken inside a transaction and stays valid after it, so nothing crosses
threads (or leaves the ledger package) attached to a session. The snapshot types load
without SQLAlchemy: the read model (``read_model.py``) builds them from plain SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bwc_dock.ledger.states import ClipState

if TYPE_CHECKING:
    from typing import Any

    from sqlalchemy import Row
    from sqlalchemy.orm import Session

    from bwc_dock.ledger.models import AuditEntry, Clip, Docking, Sidecar


@dataclass(frozen=True)
class SidecarWork:
    id: int
    source_path_raw: bytes
    source_path: str
    name: str
    size: int
    sha256: str | None
    remote_key: str | None
    mtime_ns: int | None = None  # as found on the camera: the clearer deletes only that


@dataclass(frozen=True)
class ClipTime:
    """How a clip's recorded time was read: the camera's own reading with its zone, any
    daylight-saving flag with the rule used, and the clock correction applied."""

    camera_time: str | None = None  # "2026-11-01T01:30:00 America/New_York"
    source: str | None = None  # "name" or "mtime"
    flag: str | None = None  # "nonexistent" or "ambiguous"
    flag_rule: str | None = None
    clock_offset_seconds: float | None = None  # camera minus dock; None: uncorrected
    basis: str = "profile"  # "legacy": read before zones, taken as UTC

    @property
    def corrected(self) -> bool:
        return self.clock_offset_seconds is not None

    def document(self) -> dict[str, object]:
        """The fields every record of the clip carries beside ``recorded_at``."""
        return {
            "recorded_at_corrected": self.corrected,
            "camera_clock_offset_seconds": self.clock_offset_seconds,
            "camera_time": self.camera_time,
            "camera_time_source": self.source,
            "time_flag": self.flag,
            "time_flag_rule": self.flag_rule,
            "time_basis": self.basis,
        }


@dataclass(frozen=True)
class ClipWork:
    """A snapshot of a clip handed to a worker."""

    id: int
    camera_serial: str
    docking_id: int
    source_path_raw: bytes
    source_path: str
    name: str
    size: int
    mtime_ns: int
    recorded_at: datetime
    sha256: str | None
    state: ClipState
    staged_path: str | None
    remote_key: str | None
    remote_sha256: str | None
    duplicate_of: int | None
    copy_attempts: int
    upload_attempts: int
    sidecars: tuple[SidecarWork, ...]
    volume_root: Path | None  # where the camera is readable now (copy claims only)
    lease_owner: str | None
    last_error: str | None = None
    time: ClipTime = ClipTime()
    # False: the staged copy waits for its upload to verify it; a damaged one is then read
    # off the camera again rather than quarantined (handoff.py)
    staged_verified: bool = True


@dataclass(frozen=True)
class DockingClocks:
    """The clocks when a camera docked: the camera's minus the dock's and how it was
    read, and whether the dock PC's own clock was synchronised (None: not known)."""

    camera_clock_offset_seconds: float | None = None
    camera_clock_source: str | None = None
    dock_clock_synchronized: bool | None = None
    dock_clock_error_seconds: float | None = None
    dock_clock_source: str | None = None

    @property
    def measured(self) -> bool:
        """Whether this docking's clocks were looked at (a rescan does not look again)."""
        return self.dock_clock_source is not None

    def document(self) -> dict[str, object]:
        return {
            "camera_clock_offset_seconds": self.camera_clock_offset_seconds,
            "camera_clock_source": self.camera_clock_source,
            "dock_clock_synchronized": self.dock_clock_synchronized,
            "dock_clock_error_seconds": self.dock_clock_error_seconds,
        }


@dataclass(frozen=True)
class DockingRecord:
    """One docking of a camera (or one ingested folder)."""

    id: int
    camera_serial: str
    dock_id: str
    source: str
    device: str
    volume_root: str
    owner: str | None
    docked_at: datetime
    scanned_at: datetime | None
    undocked_at: datetime | None
    clocks: DockingClocks = DockingClocks()


@dataclass(frozen=True)
class AuditRecord:
    """One row of the hash-chained audit log, every hashed column included."""

    id: int
    at: str
    dock_id: str
    actor: str
    event: str
    camera_serial: str | None
    clip_id: int | None
    sha256: str | None
    details: str  # canonical JSON
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class CameraInfo:
    """A camera the dock has seen, with how many of its clips are not yet uploaded."""

    serial: str
    profile: str | None
    officer_id: str | None
    first_seen_at: datetime
    last_docked_at: datetime | None
    docked_now: bool
    pending_clips: int
    clips: int
    # the device identity seen at its last docking: usb_vendor_id, usb_product_id,
    # fs_type, fs_label, fs_uuid (None where that docking had none)
    device: Mapping[str, str | None]


@dataclass(frozen=True)
class HeartbeatRecord:
    """The running daemon's pulse, as ``bwc-dock status`` reads it."""

    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    status_line: str
    last_error: str | None
    storage_reachable: int | None
    staging_free_bytes: int | None


_SIDECAR_BATCH = 500  # below SQLite's limit on bound parameters


def clip_snapshots(session: Session, clips: list[Clip]) -> list[ClipWork]:
    """Snapshots of many clips with their sidecars in one query per batch, not per clip."""
    from sqlalchemy import select

    from bwc_dock.ledger.models import Sidecar
    by_clip: dict[int, list[Sidecar]] = {}
    ids = [clip.id for clip in clips]
    for start in range(0, len(ids), _SIDECAR_BATCH):
        batch = ids[start : start + _SIDECAR_BATCH]
        for sidecar in session.scalars(
            select(Sidecar).where(Sidecar.clip_id.in_(batch)).order_by(Sidecar.id)
        ):
            by_clip.setdefault(sidecar.clip_id, []).append(sidecar)
    return [clip_snapshot(session, clip, None, by_clip.get(clip.id, [])) for clip in clips]


def clip_snapshot(
    session: Session,
    clip: Clip | Row[Any],  # a Row from a SELECT of the clips table has the same attributes
    volume_root: Path | None,
    sidecars: list[Sidecar] | None = None,
) -> ClipWork:
    if sidecars is None:
        from sqlalchemy import select

        from bwc_dock.ledger.models import Sidecar

        sidecars = list(
            session.scalars(select(Sidecar).where(Sidecar.clip_id == clip.id).order_by(Sidecar.id))
        )
    return ClipWork(
        id=clip.id,
        camera_serial=clip.camera_serial,
        docking_id=clip.docking_id,
        source_path_raw=clip.source_path_raw,
        source_path=clip.source_path,
        name=clip.name,
        size=clip.size,
        mtime_ns=clip.mtime_ns,
        recorded_at=clip.recorded_at,
        time=ClipTime(
            clip.camera_time,
            clip.time_source,
            clip.time_flag,
            clip.time_flag_rule,
            clip.clock_offset_seconds,
            clip.time_basis,
        ),
        sha256=clip.sha256,
        state=ClipState(clip.state),
        staged_path=clip.staged_path,
        remote_key=clip.remote_key,
        remote_sha256=clip.remote_sha256,
        duplicate_of=clip.duplicate_of,
        copy_attempts=clip.copy_attempts,
        upload_attempts=clip.upload_attempts,
        sidecars=tuple(
            SidecarWork(
                s.id, s.source_path_raw, s.source_path, s.name, s.size, s.sha256, s.remote_key,
                s.mtime_ns,
            )
            for s in sidecars
        ),
        volume_root=volume_root,
        lease_owner=clip.lease_owner,
        last_error=clip.last_error,
        staged_verified=bool(clip.staged_verified),
    )


def docking_record(docking: Docking) -> DockingRecord:
    return DockingRecord(
        id=docking.id,
        camera_serial=docking.camera_serial,
        dock_id=docking.dock_id,
        source=docking.source,
        device=docking.device,
        volume_root=docking.volume_root,
        owner=docking.owner,
        docked_at=docking.docked_at,
        scanned_at=docking.scanned_at,
        undocked_at=docking.undocked_at,
        clocks=DockingClocks(
            docking.camera_clock_offset_seconds,
            docking.camera_clock_source,
            docking.dock_clock_synchronized,
            docking.dock_clock_error_seconds,
            docking.dock_clock_source,
        ),
    )


def audit_record(entry: AuditEntry) -> AuditRecord:
    return AuditRecord(
        id=entry.id,
        at=entry.at,
        dock_id=entry.dock_id,
        actor=entry.actor,
        event=entry.event,
        camera_serial=entry.camera_serial,
        clip_id=entry.clip_id,
        sha256=entry.sha256,
        details=entry.details,
        prev_hash=entry.prev_hash,
        hash=entry.hash,
    )
