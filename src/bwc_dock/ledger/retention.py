"""Retention classes and legal holds as the ledger records them: audit events only.

A clip's class set by hand is the ``clip.classified`` audit event naming it (the newest
one counts; a shorter class is refused before it is recorded, so the newest is also the
longest). Holds are recorded as ``hold.added``/``hold.removed`` events; the lasting
record every dock sees is the one in central storage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from bwc_dock.ledger.models import AuditEntry, Clip, Sidecar
from bwc_dock.ledger.snapshots import ClipWork, clip_snapshot
from bwc_dock.ledger.store import Store

CLASSIFIED = "clip.classified"


def clip_by_key(store: Store, remote_key: str) -> ClipWork | None:
    """The clip stored under ``remote_key`` (the first offload of it, by id); a sidecar's
    key finds its clip."""
    with store.reading() as session:
        clip = session.scalars(
            select(Clip).where(Clip.remote_key == remote_key).order_by(Clip.id).limit(1)
        ).first()
        if clip is None:
            clip = session.scalars(
                select(Clip)
                .join(Sidecar, Sidecar.clip_id == Clip.id)
                .where(Sidecar.remote_key == remote_key)
                .order_by(Clip.id)
                .limit(1)
            ).first()
        return None if clip is None else clip_snapshot(session, clip, None)


def classified_as(store: Store, clip_id: int) -> str | None:
    """The class a person last gave the clip by hand; None when nobody classified it."""
    with store.reading() as session:
        details = session.scalars(
            select(AuditEntry.details)
            .where(AuditEntry.clip_id == clip_id, AuditEntry.event == CLASSIFIED)
            .order_by(AuditEntry.id.desc())
            .limit(1)
        ).first()
    if details is None:
        return None
    name = json.loads(details).get("class")
    return name if isinstance(name, str) else None


def record_classification(
    store: Store, work: ClipWork, class_name: str, details: Mapping[str, Any]
) -> None:
    """Audit a hand classification of ``work`` (one chained row)."""
    with store.transaction() as session:
        store.audit(
            session,
            CLASSIFIED,
            camera_serial=work.camera_serial,
            clip_id=work.id,
            sha256=work.sha256,
            details={**details, "class": class_name},
        )
