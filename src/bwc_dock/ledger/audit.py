"""The audit log's hash chain.

Each row's ``hash`` is the SHA-256 of the canonical JSON of every other column of the
row, ``prev_hash`` included, so changing, inserting or deleting any row breaks the
chain from that row on. The first row links to :data:`GENESIS_HASH`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # SQLAlchemy loads on first append: `audit verify` imports find_break early
    from sqlalchemy.orm import Session

    from bwc_dock.ledger.models import AuditEntry
    from bwc_dock.ledger.snapshots import AuditRecord

GENESIS_HASH = "0" * 64
HASHED_COLUMNS = (
    "id",
    "at",
    "dock_id",
    "actor",
    "event",
    "camera_serial",
    "clip_id",
    "sha256",
    "details",
    "prev_hash",
)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def row_hash(columns: Mapping[str, Any]) -> str:
    document = canonical_json({name: columns[name] for name in HASHED_COLUMNS})
    return hashlib.sha256(document.encode("ascii")).hexdigest()


def append(
    session: Session,
    *,
    dock_id: str,
    actor: str,
    event: str,
    camera_serial: str | None = None,
    clip_id: int | None = None,
    sha256: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Add one chained row inside the caller's transaction (which holds the write lock)."""
    from sqlalchemy import select

    from bwc_dock.ledger.models import AuditEntry

    last = session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    entry = AuditEntry(
        id=(last.id + 1) if last else 1,
        at=datetime.now(UTC).isoformat(timespec="microseconds"),
        dock_id=dock_id,
        actor=actor,
        event=event,
        camera_serial=camera_serial,
        clip_id=clip_id,
        sha256=sha256,
        details=canonical_json(dict(details or {})),
        prev_hash=last.hash if last else GENESIS_HASH,
    )
    entry.hash = row_hash({name: getattr(entry, name) for name in HASHED_COLUMNS})
    session.add(entry)
    return entry


@dataclass(frozen=True)
class ChainBreak:
    entry_id: int
    reason: str


def find_break(entries: Iterable[AuditRecord]) -> ChainBreak | None:
    """The first row whose hash or link is wrong, or None when the chain holds."""
    expected_prev = GENESIS_HASH
    expected_id = 1
    for entry in entries:
        if entry.id != expected_id:
            return ChainBreak(entry.id, f"row {expected_id} is missing")
        if entry.prev_hash != expected_prev:
            return ChainBreak(entry.id, "prev_hash does not match the previous row's hash")
        recomputed = row_hash({name: getattr(entry, name) for name in HASHED_COLUMNS})
        if recomputed != entry.hash:
            return ChainBreak(entry.id, "row content does not match its hash")
        expected_prev = entry.hash
        expected_id += 1
    return None


def chain_head(session: Session) -> tuple[int, str]:
    """(id, hash) of the newest row; (0, genesis) for an empty log."""
    from sqlalchemy import select

    from bwc_dock.ledger.models import AuditEntry

    last = session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    return (last.id, last.hash) if last else (0, GENESIS_HASH)
