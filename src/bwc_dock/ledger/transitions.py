"""The one checked, audited way a clip row changes.

:func:`move` changes a clip's state: the change must be in ``ALLOWED_TRANSITIONS``, it
drops the lease when the new state is not a leased one, and it is audited and logged.
:func:`move_row` does the same to a row read with a plain SELECT, in one UPDATE and
without the ORM, for the copier's per-clip hot path (claim and finish), where loading
and flushing ORM objects cost more CPU than the SQL itself (scripts/bench copier).
:func:`amend_staged_copy` is the only change of a clip's bookkeeping that keeps its
state (resync giving a clip back its staged copy); it is checked and audited the same
way. Every ledger part that changes a clip goes through one of these three.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import CursorResult, Row, Table, update
from sqlalchemy.orm import Session

from bwc_dock.errors import IllegalTransition, LeaseLost, LedgerError
from bwc_dock.ledger.models import Clip, utc_now
from bwc_dock.ledger.states import LEASED_STATES, ClipState, check_transition
from bwc_dock.ledger.store import Store

log = structlog.get_logger(__name__)

CLIPS: Table = Clip.__table__  # type: ignore[assignment]  # declared as a Table in models.py

# A clip in these states has no staged copy of its own to give back (the camera will be
# read again); the state machine has no shortcut past the copier.
_NOT_YET_STAGED = frozenset({ClipState.DISCOVERED, ClipState.COPYING})


def move(
    store: Store,
    session: Session,
    clip: Clip,
    target: ClipState,
    owner: str | None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """The one place a clip changes state: checked, audited, logged."""
    current = ClipState(clip.state)
    check_transition(current, target, staged_verified=clip.staged_verified is not False)
    clip.state = target
    clip.updated_at = utc_now()
    if target not in LEASED_STATES:
        clip.lease_owner = None
        clip.lease_expires_at = None
    _audit_move(
        store, session, clip.id, clip.camera_serial, clip.sha256, current, target, owner, details
    )


def move_row(
    store: Store,
    session: Session,
    row: Row[Any],
    target: ClipState,
    owner: str | None,
    values: Mapping[str, Any],
    details: Mapping[str, Any] | None = None,
) -> None:
    """:func:`move` for a clip row read by a SELECT in this transaction: its state and
    ``values`` (column name -> new value) go out in one UPDATE. LeaseLost when the row
    changed since it was read."""
    current = ClipState(row.state)
    check_transition(current, target, staged_verified=bool(row.staged_verified))
    changes = {**values, "state": str(target), "updated_at": utc_now()}
    if target not in LEASED_STATES:
        changes.update(lease_owner=None, lease_expires_at=None)
    updated = session.execute(
        update(CLIPS).where(CLIPS.c.id == row.id, CLIPS.c.state == str(current)).values(changes)
    )
    if not isinstance(updated, CursorResult) or updated.rowcount != 1:
        raise LeaseLost(f"clip {row.id}: changed while it was being {target}")
    sha256 = changes.get("sha256", row.sha256)
    _audit_move(store, session, row.id, row.camera_serial, sha256, current, target, owner, details)


def _audit_move(
    store: Store,
    session: Session,
    clip_id: int,
    camera_serial: str,
    sha256: str | None,
    current: ClipState,
    target: ClipState,
    owner: str | None,
    details: Mapping[str, Any] | None,
) -> None:
    store.audit(
        session,
        f"clip.{target}",
        camera_serial=camera_serial,
        clip_id=clip_id,
        sha256=sha256,
        details={"from": str(current), **(details or {})},
    )
    log.info(
        f"clip.{target}",
        clip=clip_id,
        camera=camera_serial,
        sha256=sha256,
        previous=str(current),
        owner=owner,
    )


def lease(
    store: Store, session: Session, clip: Clip, target: ClipState, owner: str, now: datetime
) -> None:
    """Move ``clip`` into a leased state held by ``owner`` until the lease runs out."""
    check_transition(ClipState(clip.state), target)
    # set before the move, so that the lease and the state go out in one UPDATE
    clip.lease_owner = owner
    clip.lease_expires_at = now + store.lease
    move(store, session, clip, target, owner=owner)


def owned(session: Session, clip_id: int, owner: str) -> Clip:
    """The clip, when ``owner`` still holds its lease; raises LeaseLost otherwise."""
    clip = session.get(Clip, clip_id)
    if clip is None or clip.lease_owner != owner:
        raise LeaseLost(f"clip {clip_id}: lease lost")
    return clip


def unleased(session: Session, clip_id: int) -> Clip:
    """The clip, when no worker holds it (a hand-run repair may change it)."""
    clip = session.get(Clip, clip_id)
    if clip is None:
        raise LedgerError(f"clip {clip_id} is not in the ledger")
    if clip.lease_owner is not None:
        raise LeaseLost(f"clip {clip_id} is being worked on by {clip.lease_owner}")
    return clip


def amend_staged_copy(
    store: Store, session: Session, clip: Clip, staged_path: str, details: Mapping[str, Any]
) -> None:
    """Give an unleased clip back its staged copy at ``staged_path``; its state stays."""
    if clip.lease_owner is not None:
        raise LeaseLost(f"clip {clip.id} is being worked on by {clip.lease_owner}")
    if ClipState(clip.state) in _NOT_YET_STAGED:
        raise IllegalTransition(f"clip {clip.id} is {clip.state}: no staged copy to adopt")
    clip.staged_path = staged_path
    clip.staged_purged_at = None
    store.audit(
        session,
        "clip.staging_adopted",
        camera_serial=clip.camera_serial,
        clip_id=clip.id,
        sha256=clip.sha256,
        details=details,
    )
    log.info("clip.staging_adopted", clip=clip.id, camera=clip.camera_serial, **details)
