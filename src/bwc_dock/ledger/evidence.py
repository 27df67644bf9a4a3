"""What a docking proves about a camera beyond its clips: gaps in its file counter, a
counter reset, files gone from it without bwc-dock clearing them. Each is an audit event
on the camera (so it is hash-chained with the evidence); this module holds their SQL."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, update

from bwc_dock.ledger.models import ON_CAMERA, AuditEntry, Clip, Docking, utc_now
from bwc_dock.ledger.store import Store

SEQUENCE_GAP_EVENT = "clip.sequence_gap"
COUNTER_RESET_EVENT = "clip.counter_reset"
VANISHED_EVENT = "clip.vanished_on_camera"
EVIDENCE_EVENTS = (SEQUENCE_GAP_EVENT, COUNTER_RESET_EVENT, VANISHED_EVENT)


@dataclass(frozen=True)
class KnownClip:
    """A clip of the camera as the ledger knows it."""

    id: int
    docking_id: int
    source_path_raw: bytes
    source_path: str
    state: str
    recorded_at: datetime


@dataclass(frozen=True)
class DockingFacts:
    camera_serial: str
    dock_id: str
    docked_at: datetime
    scanned_before: bool  # a rescan of a docking already scanned


@dataclass(frozen=True)
class EvidenceEvent:
    event: str
    camera_serial: str | None
    clip_id: int | None
    details: dict[str, Any]
    at: str = ""


def docking_facts(store: Store, docking_id: int) -> DockingFacts:
    with store.reading() as session:
        docking = session.get(Docking, docking_id)
        assert docking is not None
        return DockingFacts(
            docking.camera_serial,
            docking.dock_id,
            docking.docked_at,
            docking.scanned_at is not None,
        )


def camera_clips(
    store: Store, camera_serial: str, counted_since: int | None = None
) -> list[KnownClip]:
    """The camera's clips a docking's findings need, oldest first: those the ledger
    believes are still on the camera (``ON_CAMERA``, a partial index holds just these),
    and when ``counted_since`` is given (a file counter to follow) every clip of the
    dockings since that one (the counter's last restart)."""
    columns = (Clip.id, Clip.docking_id, Clip.source_path_raw, Clip.source_path, Clip.state,
               Clip.recorded_at)
    mine = select(*columns).where(Clip.camera_serial == camera_serial)
    with store.reading() as session:
        rows = {row.id: row for row in session.execute(mine.where(text(ON_CAMERA)))}
        if counted_since is not None:
            since = mine.where(Clip.docking_id >= counted_since)
            rows.update((row.id, row) for row in session.execute(since))
    return [KnownClip(*rows[clip_id]) for clip_id in sorted(rows)]


def camera_events(store: Store, camera_serial: str) -> list[EvidenceEvent]:
    """The camera's gap, reset and vanished events, oldest first."""
    with store.transaction() as session:
        rows = session.execute(
            select(AuditEntry.event, AuditEntry.clip_id, AuditEntry.details, AuditEntry.at)
            .where(
                AuditEntry.camera_serial == camera_serial,
                AuditEntry.event.in_(EVIDENCE_EVENTS),
            )
            .order_by(AuditEntry.id)
        ).all()
    return [
        EvidenceEvent(event, camera_serial, clip_id, json.loads(details), at)
        for event, clip_id, details, at in rows
    ]


def record_events(store: Store, events: Sequence[EvidenceEvent]) -> None:
    """All of one docking's findings in one transaction."""
    gone = [item.clip_id for item in events if item.event == VANISHED_EVENT and item.clip_id]
    with store.transaction() as session:
        if gone:  # no later docking looks for them again (ix_clips_on_camera)
            session.execute(
                update(Clip).where(Clip.id.in_(gone)).values(gone_from_camera_at=utc_now())
            )
        for item in events:
            store.audit(
                session,
                item.event,
                camera_serial=item.camera_serial,
                clip_id=item.clip_id,
                details=item.details,
            )


def events_since(store: Store, since: datetime) -> list[EvidenceEvent]:
    """Gap and vanished events recorded at or after ``since`` (for the alarms): found by
    the cameras docked since then, whose audit rows the (camera, event) index reaches,
    so the whole audit log is never read."""
    # ``at`` columns are UTC ISO text, which sorts as time does
    floor = since.astimezone(UTC)
    with store.reading() as session:
        cameras = sorted(
            set(session.scalars(select(Docking.camera_serial).where(Docking.docked_at >= floor)))
        )
        if not cameras:
            return []
        rows = session.execute(
            select(
                AuditEntry.event,
                AuditEntry.camera_serial,
                AuditEntry.clip_id,
                AuditEntry.details,
                AuditEntry.at,
            )
            .where(
                AuditEntry.camera_serial.in_(cameras),
                AuditEntry.event.in_([SEQUENCE_GAP_EVENT, VANISHED_EVENT]),
                AuditEntry.at >= floor.isoformat(timespec="microseconds"),
            )
            .order_by(AuditEntry.id)
        ).all()
    return [EvidenceEvent(e, camera, clip, json.loads(d), at) for e, camera, clip, d, at in rows]


def vanished_clip_ids(events: Iterable[EvidenceEvent]) -> set[int]:
    return {item.clip_id for item in events if item.event == VANISHED_EVENT and item.clip_id}
