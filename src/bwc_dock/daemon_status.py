"""What the daemon says about itself: its one-line status, the cameras it reports, the
errors it counts, and the :class:`DaemonStatus` the service hooks read.

Kept apart from the daemon's loops so that what the service hooks, the alarm board, the
metrics and the fleet document read is assembled in one place.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bwc_dock.alarms import DockedCamera, IncompleteScan, UnmountableCamera
from bwc_dock.clocks import read_dock_clock
from bwc_dock.config import Config
from bwc_dock.coverage.docking import recent_camera_findings
from bwc_dock.docked import DockedRegistry
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.states import PENDING_STATES
from bwc_dock.service import DaemonStatus
from bwc_dock.staging import StagingArea
from bwc_dock.storage_health import StorageHealth


@dataclass(frozen=True)
class StoreFindings:
    """What the storage recovery and the fleet publisher found wrong with central storage."""

    recovery_failure: str = ""
    root_changed: str = ""
    fleet_key_conflict: str = ""


class ErrorTally:
    """The daemon's last error and its errors counted by kind. Every worker thread and
    the main loop write here and the status reads it, so one lock guards both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: str | None = None
        self._counts: dict[str, int] = {}

    def note(self, message: str, kind: str | None = None) -> None:
        """``message`` becomes the last error; ``kind``, when given, is counted."""
        with self._lock:
            self._last = message
            if kind is not None:
                self._counts[kind] = self._counts.get(kind, 0) + 1

    @property
    def last(self) -> str | None:
        with self._lock:
            return self._last

    def counts(self) -> dict[str, int]:
        """A copy: the caller may keep it while the count goes on."""
        with self._lock:
            return dict(self._counts)


def status_line(
    counts: dict[str, int],
    docked: int,
    storage_reachable: bool | None,
    scanning: int,
    restart_needed: Sequence[str] = (),
) -> str:
    """The line systemd shows: docked cameras, pending clips, storage, scans, quarantine,
    and the changed settings that wait for a restart."""
    pending = sum(counts[state] for state in PENDING_STATES)
    storage = {True: "ok", False: "UNREACHABLE", None: "unknown"}[storage_reachable]
    line = f"{docked} cameras docked · {pending} clips pending · storage {storage}"
    if scanning:
        line += f" · scanning {scanning}"
    if counts["quarantined"]:
        line += f" · {counts['quarantined']} QUARANTINED"
    if restart_needed:
        line += f" · RESTART NEEDED for {', '.join(restart_needed)}"
    return line


def docked_cameras(ledger: Ledger, registry: DockedRegistry) -> tuple[DockedCamera, ...]:
    """Each docked camera with what it still has to copy and when it last made progress."""
    return tuple(
        DockedCamera(
            docked.volume.camera_serial,
            ledger.copy_pending(docked.volume.camera_serial),
            docked.last_progress_at,
        )
        for docked in registry.everything()
    )


def unmountable_cameras(registry: DockedRegistry) -> tuple[UnmountableCamera, ...]:
    return tuple(
        UnmountableCamera(camera.camera_serial or camera.device, camera.error)
        for camera in registry.unreadable()
    )


def incomplete_scans(registry: DockedRegistry) -> tuple[IncompleteScan, ...]:
    """Docked cameras whose last scan stopped at a budget (the mark goes when they leave)."""
    return tuple(
        IncompleteScan(docked.volume.camera_serial, docked.docking_id, docked.scan_incomplete)
        for docked in registry.everything()
        if docked.scan_incomplete
    )


def staging_free_bytes(staging: StagingArea) -> int | None:
    """None when it cannot be read: unknown, never zero."""
    try:
        return staging.free_bytes()
    except OSError:
        return None


class StatusAssembly:
    """The parts of a running daemon its status is read from; each read is taken now."""

    def __init__(
        self,
        ledger: Ledger,
        staging: StagingArea,
        docked: DockedRegistry,
        storage: StorageHealth,
        errors: ErrorTally,
    ) -> None:
        self.ledger = ledger
        self.staging = staging
        self.docked = docked
        self.storage = storage
        self.errors = errors

    def line(
        self,
        scanning: int,
        restart_needed: Sequence[str],
        counts: dict[str, int] | None = None,
    ) -> str:
        counts = self.ledger.counts_by_state() if counts is None else counts
        return status_line(
            counts, self.docked.count(), self.storage.reachable, scanning, restart_needed
        )

    def read(
        self,
        config: Config,
        scanning: int,
        restart_needed: Sequence[str],
        lock_unenforced: str,
        store: StoreFindings,
    ) -> DaemonStatus:
        """What the service hooks report (a frozen value: they never see the daemon)."""
        counts = self.ledger.counts_by_state()
        metrics_textfile = config.service.metrics_textfile
        return DaemonStatus(
            dock_id=config.dock.id,
            alarms_config=config.alarms,
            metrics_textfile=metrics_textfile,
            status_line=self.line(scanning, restart_needed, counts),
            clips_by_state=counts,
            oldest_pending_at=self.ledger.oldest_pending_at(),
            staging_free_bytes=staging_free_bytes(self.staging),
            staging_reserve_bytes=self.staging.reserve_bytes,
            storage=self.storage.state,
            last_error=self.errors.last,
            docked=docked_cameras(self.ledger, self.docked),
            unmountable=unmountable_cameras(self.docked),
            error_counts=self.errors.counts(),
            byte_totals=self.ledger.byte_totals() if metrics_textfile is not None else None,
            lock_unenforced=lock_unenforced,
            dock_clock_synchronized=read_dock_clock().synchronized,
            camera_clock_offsets=self.ledger.latest_camera_offsets(),
            max_clock_offset_seconds=config.dock.max_clock_offset_seconds,
            dock_clock_alarm=config.dock.clock_sync_alarm,
            camera_findings=recent_camera_findings(self.ledger, datetime.now(UTC)),
            storage_recovery_failure=store.recovery_failure,
            storage_root_changed=store.root_changed,
            fleet_key_conflict=store.fleet_key_conflict,
            incomplete_scans=incomplete_scans(self.docked),
        )
