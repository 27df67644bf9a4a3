"""The :class:`Ledger` facade: one object the stages hold, each method one transaction.

It only delegates; the SQL lives in the module that answers each kind of question
(see ``ledger/__init__.py`` for the map). Callers get frozen snapshots, never ORM rows,
except ``adopt_dockings``, whose rows the daemon re-docks from.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bwc_dock.config import Config
from bwc_dock.found import DockedVolume, FoundClip
from bwc_dock.ledger import (
    assignments,
    audit_log,
    custody,
    discovery,
    dockings,
    evidence,
    heartbeat,
    multipart,
    queue,
    read_model,
    reports,
    retention,
)
from bwc_dock.ledger.assignments import Assignment, Reattribution
from bwc_dock.ledger.custody import CustodyFacts
from bwc_dock.ledger.db import check_durability, create_ledger_engine, migrate
from bwc_dock.ledger.models import Docking
from bwc_dock.ledger.multipart import LedgerMultipartJournal
from bwc_dock.ledger.snapshots import (
    AuditRecord,
    CameraInfo,
    ClipWork,
    DockingClocks,
    DockingRecord,
    HeartbeatRecord,
)
from bwc_dock.ledger.states import ClipState
from bwc_dock.ledger.store import Store


class Ledger:
    def __init__(self, engine: Engine, dock_id: str, actor: str, lease_seconds: int = 120) -> None:
        self.store = Store(engine, dock_id, actor, timedelta(seconds=lease_seconds))
        self.engine = engine
        self.dock_id = dock_id
        self.actor = actor
        self.lease = self.store.lease

    @classmethod
    def open(cls, config: Config, actor: str, *, check: bool = True) -> Ledger:
        """Open (creating or migrating) the configured ledger."""
        engine = create_ledger_engine(config.ledger_url)
        migrate(engine)
        if check:
            check_durability(engine)
        return cls(engine, config.dock.id, actor, config.dock.lease_seconds)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A raw session, for the ledger's own tests; the rest of bwc-dock calls methods."""
        with self.store.transaction() as session:
            yield session

    # -- audit (ledger/audit_log.py) --------------------------------------------------------

    def record_event(self, event: str, **fields: Any) -> None:
        audit_log.record_event(self.store, event, **fields)

    def audit_entries(self) -> list[AuditRecord]:
        return audit_log.entries(self.store)

    def audit_head(self) -> tuple[int, str]:
        return audit_log.head(self.store)

    def record_disclosure(self, signature_sha256: str, details: Mapping[str, Any]) -> None:
        """A disclosure bag signed (and about to be published): its signature's SHA-256, so
        the agency can later prove which bags it issued."""
        audit_log.record_event(self.store, "disclosure.signed", sha256=signature_sha256,
                               details=details)

    # -- retention classes (ledger/retention.py) --------------------------------------------

    def clip_by_key(self, remote_key: str) -> ClipWork | None:
        return retention.clip_by_key(self.store, remote_key)

    def classified_as(self, clip_id: int) -> str | None:
        return retention.classified_as(self.store, clip_id)

    def record_classification(
        self, work: ClipWork, class_name: str, details: Mapping[str, Any]
    ) -> None:
        retention.record_classification(self.store, work, class_name, details)

    # -- dockings (ledger/dockings.py) and discovery (ledger/discovery.py) -------------------

    def record_docking(self, volume: DockedVolume, owner: str | None) -> int:
        return dockings.record(self.store, volume, owner)

    def record_clocks(
        self, docking_id: int, clocks: DockingClocks, details: dict[str, Any]
    ) -> None:
        dockings.record_clocks(self.store, docking_id, clocks, details)

    def docked_camera_serials(self) -> list[str]:
        return dockings.docked_camera_serials(self.store)

    def latest_camera_offsets(self) -> dict[str, float | None]:
        return dockings.latest_camera_offsets(self.store)

    def end_docking(self, docking_id: int, reason: str) -> None:
        dockings.end(self.store, docking_id, reason)

    def hand_over_docking(self, docking_id: int, owner: str) -> None:
        dockings.hand_over(self.store, docking_id, owner)

    def adopt_dockings(self, new_owner: str, sources: frozenset[str]) -> list[Docking]:
        return dockings.adopt(self.store, new_owner, sources)

    def end_stale_dockings(self) -> int:
        return dockings.end_stale(self.store)

    def active_dockings(self) -> list[DockingRecord]:
        with self.store.plain_reading() as connection:
            return read_model.active_dockings(connection)

    def docking(self, docking_id: int) -> DockingRecord | None:
        return dockings.get(self.store, docking_id)

    def present_clip_ids(self, camera_serial: str, found: Sequence[FoundClip]) -> list[int]:
        return discovery.present_clip_ids(self.store, camera_serial, found)

    def record_scan(
        self, docking_id: int, found: Sequence[FoundClip], refused: int, priority: int = 0
    ) -> list[int]:
        return discovery.record_scan(self.store, docking_id, found, refused, priority)

    # -- the clip queue (ledger/queue.py) ---------------------------------------------------

    def claim_for_copy(self, owner: str, docking_id: int | None = None) -> ClipWork | None:
        return queue.claim_for_copy(self.store, owner, docking_id)

    def claim_for_upload(self, owner: str, only: Collection[int] | None = None) -> ClipWork | None:
        return queue.claim_for_upload(self.store, owner, only)

    def renew_lease(self, clip_id: int, owner: str) -> None:
        queue.renew_lease(self.store, clip_id, owner)

    def set_priority(self, clip_id: int, priority: int) -> bool:
        return queue.set_priority(self.store, clip_id, priority)

    def finish_copy(
        self,
        work: ClipWork,
        owner: str,
        sha256: str,
        staged_path: str,
        sidecar_hashes: Mapping[int, str],
        *,
        verified: bool = True,
    ) -> None:
        queue.finish_copy(
            self.store, work, owner, sha256, staged_path, sidecar_hashes, verified=verified
        )

    def finish_copy_and_claim(
        self,
        work: ClipWork,
        owner: str,
        sha256: str,
        staged_path: str,
        sidecar_hashes: Mapping[int, str],
        docking_id: int | None,
        *,
        verified: bool = True,
    ) -> ClipWork | None:
        """finish_copy of ``work`` and claim_for_copy of the next clip, in one transaction."""
        return queue.finish_copy_and_claim(
            self.store,
            work,
            owner,
            sha256,
            staged_path,
            sidecar_hashes,
            docking_id,
            verified=verified,
        )

    def finish_upload(
        self,
        work: ClipWork,
        owner: str,
        remote_key: str,
        remote_sha256: str,
        sidecar_remote: Mapping[int, tuple[str, str]],
        manifest_key: str | None,
    ) -> None:
        queue.finish_upload(
            self.store, work, owner, remote_key, remote_sha256, sidecar_remote, manifest_key
        )

    def release(
        self,
        work: ClipWork,
        owner: str,
        *,
        error: str | None,
        retry_at: datetime | None,
        count_attempt: bool = True,
        staged_copy_verified: bool = False,
    ) -> None:
        queue.release(
            self.store,
            work,
            owner,
            error=error,
            retry_at=retry_at,
            count_attempt=count_attempt,
            staged_copy_verified=staged_copy_verified,
        )

    def send_back_for_copy(self, work: ClipWork, owner: str, reason: str) -> None:
        queue.send_back_for_copy(self.store, work, owner, reason)

    def unverified_staged(self, camera_serial: str) -> int:
        return queue.unverified_staged(self.store, camera_serial)

    def quarantine(self, work: ClipWork, owner: str | None, reason: str) -> None:
        queue.quarantine(self.store, work, owner, reason)

    def requeue(self, clip_id: int, target: ClipState, reason: str) -> None:
        queue.requeue(self.store, clip_id, target, reason)

    def adopt_staged_copy(
        self, clip_id: int, staged_path: str, moved_from: str, moved_to: str
    ) -> None:
        queue.adopt_staged_copy(self.store, clip_id, staged_path, moved_from, moved_to)

    def recover_leases(self, *, all_expired: bool = True) -> dict[str, int]:
        return queue.recover_leases(self.store, all_expired=all_expired)

    def mark_purged(self, clip_id: int) -> None:
        queue.mark_purged(self.store, clip_id)

    def mark_cleared(self, work: ClipWork, details: Mapping[str, Any]) -> None:
        queue.mark_cleared(self.store, work, details)

    # -- queries for reports (ledger/reports.py; status and clips: ledger/read_model.py) -----

    def get(self, clip_id: int) -> ClipWork | None:
        return reports.get(self.store, clip_id)

    def clips(
        self,
        camera_serial: str | None = None,
        state: str | None = None,
        docking_id: int | None = None,
        ids: Collection[int] | None = None,
    ) -> list[ClipWork]:
        with self.store.plain_reading() as connection:
            return read_model.clips(connection, camera_serial, state, docking_id, ids)

    def clips_holding(self, sha256: str) -> list[tuple[ClipWork, str]]:
        return reports.clips_holding(self.store, sha256)

    def leased_clip_ids(self) -> set[int]:
        return reports.leased_clip_ids(self.store)

    def purged_clip_ids(self) -> set[int]:
        return reports.purged_clip_ids(self.store)

    def recent_work(self, window: timedelta) -> tuple[list[ClipWork], list[str]]:
        return reports.recent_work(self.store, window)

    def purgeable(self, uploaded_before: datetime) -> list[ClipWork]:
        return reports.purgeable(self.store, uploaded_before)

    def counts_by_state(self, camera_serial: str | None = None) -> dict[str, int]:
        with self.store.plain_reading() as connection:
            return read_model.counts_by_state(connection, camera_serial)

    def pending_for_camera(self, camera_serial: str, states: frozenset[ClipState]) -> int:
        return reports.pending_for_camera(self.store, camera_serial, states)

    def copy_pending(self, camera_serial: str) -> int:
        """Clips of a camera that still need the camera (not yet staged)."""
        return self.pending_for_camera(
            camera_serial, frozenset({ClipState.DISCOVERED, ClipState.COPYING})
        )

    def needing_camera(self, camera_serial: str) -> int:
        """Clips not yet staged, or staged and not yet verified (see reports.py)."""
        return reports.needing_camera(self.store, camera_serial)

    def pending_in_docking(self, docking_id: int) -> int:
        return reports.pending_in_docking(self.store, docking_id)

    def pending_among(self, ids: Collection[int]) -> int:
        return reports.pending_among(self.store, ids)

    def byte_totals(self) -> tuple[int, int]:
        return reports.byte_totals(self.store)

    def oldest_pending_at(self) -> datetime | None:
        with self.store.plain_reading() as connection:
            return read_model.oldest_pending_at(connection)

    def cameras(self) -> list[CameraInfo]:
        return reports.cameras(self.store)

    # -- camera assignments (ledger/assignments.py) ------------------------------------------

    def assign_cameras(
        self, assigned: Sequence[Assignment], *, force: bool = False
    ) -> list[Reattribution]:
        return assignments.assign(self.store, assigned, force=force)

    # -- camera evidence at dockings (ledger/evidence.py) --------------------------------------

    def docking_facts(self, docking_id: int) -> evidence.DockingFacts:
        return evidence.docking_facts(self.store, docking_id)

    def camera_clips(
        self, camera_serial: str, counted_since: int | None = None
    ) -> list[evidence.KnownClip]:
        return evidence.camera_clips(self.store, camera_serial, counted_since)

    def camera_evidence_events(self, camera_serial: str) -> list[evidence.EvidenceEvent]:
        return evidence.camera_events(self.store, camera_serial)

    def record_camera_evidence(self, events: Sequence[evidence.EvidenceEvent]) -> None:
        evidence.record_events(self.store, events)

    def camera_evidence_since(self, since: datetime) -> list[evidence.EvidenceEvent]:
        return evidence.events_since(self.store, since)

    def fleet_assignment_records(self) -> dict[str, Mapping[str, Any] | None]:
        return assignments.fleet_records(self.store)

    def record_fleet_assignment_refusal(
        self, serial: str | None, record_key: str, reason: str
    ) -> None:
        assignments.record_fleet_refusal(self.store, serial, record_key, reason)

    # -- custody and anchors (ledger/custody.py) ---------------------------------------------

    def delivered_objects(self, docking_id: int) -> dict[str, str]:
        return custody.delivered_objects(self.store, docking_id)

    def delivering_dockings(self, camera_serial: str | None = None) -> list[int]:
        return custody.delivering_dockings(self.store, camera_serial)

    def dockings_to_anchor(self) -> list[int]:
        return custody.dockings_to_anchor(self.store)

    def mark_sums_written(self, docking_id: int, content_read_at: datetime) -> None:
        custody.mark_sums_written(self.store, docking_id, content_read_at)

    def manifest_facts(self, clip_id: int) -> custody.ManifestFacts:
        return custody.manifest_facts(self.store, clip_id)

    def custody_facts(
        self,
        camera_serial: str | None = None,
        recorded_since: datetime | None = None,
        recorded_until: datetime | None = None,
    ) -> CustodyFacts:
        return custody.custody_facts(self.store, camera_serial, recorded_since, recorded_until)

    # -- daemon heartbeat (ledger/heartbeat.py) ----------------------------------------------

    def beat(self, host: str, pid: int, started_at: datetime, **fields: Any) -> None:
        heartbeat.beat(self.store, host, pid, started_at, **fields)

    def heartbeat(self) -> HeartbeatRecord | None:
        with self.store.plain_reading() as connection:
            return read_model.heartbeat(connection)

    # -- multipart uploads (ledger/multipart.py) ---------------------------------------------

    def multipart_journal(self, remote_key: str, clip_id: int | None) -> LedgerMultipartJournal:
        return LedgerMultipartJournal(self.store, remote_key, clip_id)

    def wanted_upload_ids(self) -> set[str]:
        return multipart.wanted_upload_ids(self.store)
