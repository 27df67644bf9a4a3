"""What the daemon says about itself: its one-line status and the cameras it reports.

Kept apart from the daemon's loops so that what the service hooks, the alarm board, the
metrics and the fleet document read is assembled in one place.
"""

from __future__ import annotations

from bwc_dock.alarms import DockedCamera, UnmountableCamera
from bwc_dock.docked import DockedRegistry
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.states import PENDING_STATES


def status_line(
    counts: dict[str, int], docked: int, storage_reachable: bool | None, scanning: int
) -> str:
    """The line systemd shows: docked cameras, pending clips, storage, scans, quarantine."""
    pending = sum(counts[state] for state in PENDING_STATES)
    storage = {True: "ok", False: "UNREACHABLE", None: "unknown"}[storage_reachable]
    line = f"{docked} cameras docked · {pending} clips pending · storage {storage}"
    if scanning:
        line += f" · scanning {scanning}"
    if counts["quarantined"]:
        line += f" · {counts['quarantined']} QUARANTINED"
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
