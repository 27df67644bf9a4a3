"""Every camera's last docking anywhere in the fleet, from the docking records in central
storage (one per docking, from every dock) and the docks' status documents (a camera
docked right now counts as docked at its dock's last heartbeat)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bwc_dock.coverage.records import EvidenceRecord
from bwc_dock.fleet import DockReport


@dataclass(frozen=True)
class LastDocking:
    camera: str
    dock: str
    at: datetime
    docked_now: bool = False


def last_dockings(
    evidence: Iterable[EvidenceRecord], reports: Iterable[DockReport]
) -> list[LastDocking]:
    """One entry per camera: its newest docking, ordered by camera."""
    newest: dict[str, LastDocking] = {}

    def consider(entry: LastDocking) -> None:
        kept = newest.get(entry.camera)
        if kept is None or (entry.at, entry.docked_now, entry.dock) > (
            kept.at, kept.docked_now, kept.dock
        ):
            newest[entry.camera] = entry

    for record in evidence:
        if record.kind == "docking":
            consider(LastDocking(record.camera, record.dock, record.at))
    for report in reports:
        document = report.document
        if document is None or report.problem is not None:
            continue
        for camera in document.cameras:
            consider(LastDocking(camera.serial, document.dock, document.heartbeat_at, True))
    return [newest[camera] for camera in sorted(newest)]
