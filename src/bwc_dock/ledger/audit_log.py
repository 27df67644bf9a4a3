"""The audit log as the rest of bwc-dock uses it: events that are not a clip's state
change (resync, verify, deletions), every row for checking the chain, and its head for
anchoring in manifests. How rows are chained is :mod:`bwc_dock.ledger.audit`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bwc_dock.ledger.audit import chain_head
from bwc_dock.ledger.models import AuditEntry
from bwc_dock.ledger.snapshots import AuditRecord, audit_record
from bwc_dock.ledger.store import Store


def record_event(store: Store, event: str, **fields: Any) -> None:
    """An audit event that is not a clip state change (assignment, deletion, resync)."""
    with store.transaction() as session:
        store.audit(session, event, **fields)


def entries(store: Store) -> list[AuditRecord]:
    with store.transaction() as session:
        return [
            audit_record(entry)
            for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]


def head(store: Store) -> tuple[int, str]:
    with store.transaction() as session:
        return chain_head(session)
