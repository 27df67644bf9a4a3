"""Every camera's last docking anywhere in the fleet, from the docking records in central
storage (one per docking, from every dock) and the docks' status documents (a camera
docked right now counts as docked at its dock's last heartbeat).

A status document not verified as signed by its dock's registered key may be anyone's
writing: its claim is kept apart, marked with why, and never hides a camera's docking that
rests on a record or a verified document."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bwc_dock.coverage.records import EvidenceRecord
from bwc_dock.fleet_keys import SignatureState
from bwc_dock.fleet_view import DockReport


@dataclass(frozen=True)
class LastDocking:
    camera: str
    dock: str
    at: datetime
    docked_now: bool = False
    # the signature state of the status document behind a docked-now entry; None for a
    # docking record, or a document whose signature was not checked
    status_document: str | None = None

    @property
    def unverified(self) -> bool:
        """From a status document that is not verified as its dock's."""
        return self.docked_now and self.status_document != SignatureState.VERIFIED


def last_dockings(
    evidence: Iterable[EvidenceRecord], reports: Iterable[DockReport]
) -> list[LastDocking]:
    """One entry per camera: its newest docking, ordered by camera; an unverified status
    document's claim only for a camera with nothing else."""
    newest: dict[str, LastDocking] = {}

    def consider(entry: LastDocking) -> None:
        kept = newest.get(entry.camera)
        if kept is None or _rank(entry) > _rank(kept):
            newest[entry.camera] = entry

    for record in evidence:
        if record.kind == "docking":
            consider(LastDocking(record.camera, record.dock, record.at))
    for report in reports:
        document = report.document
        if document is None or report.problem is not None:
            continue
        signature = None if report.signature is None else str(report.signature)
        for camera in document.cameras:
            consider(LastDocking(camera.serial, document.dock, document.heartbeat_at, True,
                                 signature or "not checked"))
    return [newest[camera] for camera in sorted(newest)]


def _rank(entry: LastDocking) -> tuple[bool, datetime, bool, str]:
    # trusted first: a forged "docked now" must not make a missing camera look fresh
    return (not entry.unverified, entry.at, entry.docked_now, entry.dock)
