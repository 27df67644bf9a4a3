"""Scanning into the ledger: read a docked volume's listing and record the clips that are new.

Shared by the daemon, hand-run ``ingest``, ``resync`` and the copier benchmark, so that a
folder is scanned with the same profile and the same limits whoever looks at it.
"""

from __future__ import annotations

import structlog

from bwc_dock.config import CameraProfile, Config
from bwc_dock.ledger import Ledger
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
    pick_up_fleet_assignments(ledger, config)
    profile = config.profile(volume.profile_name or "") or folder_profile(config)
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
    return new_ids, result


def pick_up_fleet_assignments(ledger: Ledger, config: Config) -> None:
    """Before a camera's clips are recorded, the fleet's newest assignments: so that a clip's
    officer is the same whichever dock offloads it. A store that cannot be reached costs
    only the pick-up (logged); the next docking tries again."""
    from bwc_dock.cameras import pick_up_assignments
    from bwc_dock.errors import BwcDockError
    from bwc_dock.storage import open_backend

    try:
        backend = open_backend(config)
        try:
            applied, refused = pick_up_assignments(ledger, backend)
        finally:
            backend.close()
    except (BwcDockError, OSError) as error:
        log.warning("camera.fleet_assignments_not_picked_up", error=str(error),
                    retry="at the next docking")
        return
    if applied or refused:
        log.info("camera.fleet_assignments_picked_up", applied=applied, refused=refused)
