"""Scanning into the ledger: read a docked volume's listing and record the clips that are new.

Shared by the daemon, hand-run ``ingest``, ``resync`` and the copier benchmark, so that a
folder is scanned with the same profile and the same limits whoever looks at it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from bwc_dock.clocks import DockClock, read_camera_clock, read_dock_clock, set_camera_clock
from bwc_dock.config import CameraProfile, Config
from bwc_dock.errors import Interrupted
from bwc_dock.found import DockedVolume
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.evidence import DockingFacts
from bwc_dock.ledger.snapshots import DockingClocks
from bwc_dock.scanner import ScanLimits, ScanResult, scan_volume
from bwc_dock.storage.base import StorageBackend

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
    ledger: Ledger,
    config: Config,
    docking_id: int,
    volume: DockedVolume,
    *,
    dock_clock: Callable[[], DockClock] = read_dock_clock,
    cancel: threading.Event | None = None,
    central: StorageBackend | None = None,
) -> tuple[list[int], ScanResult]:
    """Scan a volume and record what is new; (ids of new clips, what the scan found).

    The docking's clocks are read first (once per docking), so that new clips get the
    camera's clock offset as their correction. ``dock_clock`` is how the dock's own
    clock is asked (adjtimex); tests hand in a reading of their own. Raises Interrupted
    when ``cancel`` was set during the scan: no clip is recorded then. ``central``: the
    caller's open backend for the docking's records (the daemon's); without it one is
    opened for them and closed.
    """
    profile = config.profile(volume.profile_name or "") or folder_profile(config)
    facts = ledger.docking_facts(docking_id)  # before this scan marks the docking scanned
    record_docking_clocks(ledger, profile, docking_id, volume, dock_clock)
    result = scan_volume(volume.root, profile, scan_limits(config), cancel)
    if cancel is not None and cancel.is_set():
        raise Interrupted(f"scan of {volume.camera_serial} cancelled")
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
        incomplete=result.incomplete,
    )
    if not facts.scanned_before:  # a watch folder's rescans are the same docking
        share_docking(ledger, config, docking_id, facts, profile, result, central)
    return new_ids, result


def record_docking_clocks(
    ledger: Ledger,
    profile: CameraProfile,
    docking_id: int,
    volume: DockedVolume,
    dock_clock: Callable[[], DockClock] = read_dock_clock,
) -> None:
    """Read the dock's and the camera's clocks and record them on the docking, once."""
    docking = ledger.docking(docking_id)
    if docking is None or docking.clocks.measured:
        return
    dock = dock_clock()
    camera = read_camera_clock(profile, volume.root, clock_command_environment(volume))
    clocks = DockingClocks(
        camera.offset_seconds, camera.source, dock.synchronized, dock.error_seconds, dock.source
    )
    details = {"camera_clock_reading": camera.reading, "camera_clock_problem": camera.problem}
    ledger.record_clocks(docking_id, clocks, details)
    log.info(
        "dock.clocks",
        camera=volume.camera_serial,
        docking=docking_id,
        camera_clock_offset_seconds=camera.offset_seconds,
        camera_clock_source=camera.source,
        camera_clock_problem=camera.problem,
        dock_clock_synchronized=dock.synchronized,
    )


def clock_command_environment(volume: DockedVolume) -> dict[str, str]:
    """What a profile's clock command is told: which camera, on which device and volume;
    nothing else of the daemon's environment (no credentials) is passed on."""
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "BWC_CAMERA_SERIAL": volume.camera_serial,
        "BWC_DEVICE": volume.device,
        "BWC_VOLUME": str(volume.root),
    }


def set_clock_after_offload(
    ledger: Ledger, config: Config, docking_id: int, volume: DockedVolume
) -> None:
    """Run the profile's clock_set_command once the camera's clips are off it, and audit
    the camera's clock read before and after (offsets, or why they could not be read)."""
    profile = config.profile(volume.profile_name or "")
    if profile is None or not profile.clock_set_command:
        return
    before, after, problem = set_camera_clock(
        profile, volume.root, clock_command_environment(volume)
    )
    ledger.record_event(
        "camera.clock_set",
        camera_serial=volume.camera_serial,
        details={
            "docking_id": docking_id,
            "offset_before_seconds": before.offset_seconds,
            "reading_before": before.reading,
            "offset_after_seconds": after.offset_seconds,
            "reading_after": after.reading,
            "problem": problem,
        },
    )
    log.info(
        "camera.clock_set",
        camera=volume.camera_serial,
        docking=docking_id,
        offset_before_seconds=before.offset_seconds,
        offset_after_seconds=after.offset_seconds,
        problem=problem,
    )


class BackgroundScans:
    """Scans in threads of their own, at most one per docking at a time.

    Listing a camera can take long (a card of 200,000 entries, a slow or hostile
    filesystem): it must hold neither the thread that hears of devices nor the main loop
    that pings the watchdog and writes the heartbeat.
    """

    def __init__(self) -> None:
        self._running: set[int] = set()
        self._lock = threading.Lock()

    def start(self, docking_id: int, scan: Callable[[], None]) -> bool:
        """Run ``scan`` in a new thread; False (and nothing run) when this docking's scan
        is still running."""
        with self._lock:
            if docking_id in self._running:
                return False
            self._running.add(docking_id)
        thread = threading.Thread(
            target=self._run, args=(docking_id, scan), name=f"scan-{docking_id}", daemon=True
        )
        thread.start()
        return True

    def _run(self, docking_id: int, scan: Callable[[], None]) -> None:
        try:
            scan()
        finally:
            with self._lock:
                self._running.discard(docking_id)

    def count(self) -> int:
        """How many scans run now."""
        with self._lock:
            return len(self._running)



def share_docking(
    ledger: Ledger,
    config: Config,
    docking_id: int,
    facts: DockingFacts,
    profile: CameraProfile,
    result: ScanResult,
    central: StorageBackend | None = None,
) -> None:
    """At a docking's first scan: what it proves about the camera (file counter gaps and
    resets, files vanished) into the audit log, and with the docking itself to central
    storage; and the fleet's assignments not yet here. The store's failure costs only
    the fleet's copy (logged); offloading goes on."""
    from bwc_dock.coverage.docking import counter_epoch, evidence_documents, findings

    earlier = ledger.camera_evidence_events(facts.camera_serial)
    # a file counter is followed since its last restart; otherwise only the clips still
    # on the camera matter, however long its history
    counted_since = counter_epoch(earlier) if profile.counter_pattern else None
    known = ledger.camera_clips(facts.camera_serial, counted_since)
    events = findings(docking_id, facts, profile, result, known, earlier)
    if events:
        ledger.record_camera_evidence(events)
    for event in events:
        log.error(event.event, camera=facts.camera_serial, **event.details)
    _to_central_storage(ledger, config, evidence_documents(docking_id, facts, events), central)


def _to_central_storage(
    ledger: Ledger, config: Config, documents: list[tuple[datetime, dict[str, Any]]],
    central: StorageBackend | None,
) -> None:
    from bwc_dock.cameras import pick_up_assignments
    from bwc_dock.coverage.docking import share
    from bwc_dock.errors import BwcDockError
    from bwc_dock.storage import open_backend

    try:
        # the daemon's own backend where there is one: a new one per docking cost a
        # new client and the store's conditional-write probe (four requests) each time
        backend = central or open_backend(config)
        try:
            share(backend, documents)
            applied, refused = pick_up_assignments(ledger, backend)
        finally:
            if central is None:
                backend.close()
    except (BwcDockError, OSError) as error:
        log.warning("dock.fleet_records_not_shared", error=str(error), retry="at the next docking")
        return
    if applied or refused:
        log.info("camera.fleet_assignments_picked_up", applied=applied, refused=refused)
