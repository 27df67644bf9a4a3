"""Scanning into the ledger: read a docked volume's listing and record the clips that are new.

Shared by the daemon, hand-run ``ingest``, ``resync`` and the copier benchmark, so that a
folder is scanned with the same profile and the same limits whoever looks at it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from bwc_dock.config import CameraProfile, Config
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.evidence import DockingFacts
from bwc_dock.scanner import ScanLimits, ScanResult, scan_volume
from bwc_dock.sources.base import DockedVolume

log = structlog.get_logger(__name__)

DEFAULT_FOLDER_PROFILE = CameraProfile(name="folder", serial_source="folder")


def folder_profile(config: Config) -> CameraProfile:
    """The profile for watch folders and hand-run ingest: the first one without USB ids."""
    return next((p for p in config.camera if p.usb_vendor_id is None), DEFAULT_FOLDER_PROFILE)


def scan_limits(config: Config) -> ScanLimits:
    return ScanLimits(
        max_file_size=int(config.dock.max_clip_size_gb * 1024**3),
        max_depth=config.dock.max_scan_depth,
        max_entries=config.dock.max_scan_entries,
    )


def scan_into_ledger(
    ledger: Ledger, config: Config, docking_id: int, volume: DockedVolume
) -> tuple[list[int], ScanResult]:
    """Scan a volume and record what is new; (ids of new clips, what the scan found)."""
    profile = config.profile(volume.profile_name or "") or folder_profile(config)
    facts = ledger.docking_facts(docking_id)  # before this scan marks the docking scanned
    result = scan_volume(volume.root, profile, scan_limits(config))
    new_ids = ledger.record_scan(
        docking_id, result.clips, len(result.refused), priority=profile.priority
    )
    log.info(
        "dock.scanned",
        camera=volume.camera_serial,
        docking=docking_id,
        clips=len(result.clips),
        new=len(new_ids),
        refused=len(result.refused),
    )
    if not facts.scanned_before:  # a watch folder's rescans are the same docking
        share_docking(ledger, config, docking_id, facts, profile, result)
    return new_ids, result



def share_docking(
    ledger: Ledger,
    config: Config,
    docking_id: int,
    facts: DockingFacts,
    profile: CameraProfile,
    result: ScanResult,
) -> None:
    """At a docking's first scan: what it proves about the camera (file counter gaps and
    resets, files vanished) into the audit log, and with the docking itself to central
    storage; and the fleet's assignments not yet here. The store's failure costs only
    the fleet's copy (logged); offloading goes on."""
    from bwc_dock.coverage.docking import evidence_documents, findings

    events = findings(
        docking_id,
        facts,
        profile,
        result,
        ledger.camera_clips(facts.camera_serial),
        ledger.camera_evidence_events(facts.camera_serial),
    )
    if events:
        ledger.record_camera_evidence(events)
    for event in events:
        log.error(event.event, camera=facts.camera_serial, **event.details)
    _to_central_storage(ledger, config, evidence_documents(docking_id, facts, events))


def _to_central_storage(
    ledger: Ledger, config: Config, documents: list[tuple[datetime, dict[str, Any]]]
) -> None:
    from bwc_dock.cameras import pick_up_assignments
    from bwc_dock.coverage.docking import share
    from bwc_dock.errors import BwcDockError
    from bwc_dock.storage import open_backend

    try:
        backend = open_backend(config)
        try:
            share(backend, documents)
            applied, refused = pick_up_assignments(ledger, backend)
        finally:
            backend.close()
    except (BwcDockError, OSError) as error:
        log.warning("dock.fleet_records_not_shared", error=str(error), retry="at the next docking")
        return
    if applied or refused:
        log.info("camera.fleet_assignments_picked_up", applied=applied, refused=refused)
