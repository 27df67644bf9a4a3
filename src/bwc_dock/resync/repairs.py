"""Resync's plan, as values: each repair it would make, and what carrying it out gave.

Planning returns a list of these frozen values; ``--dry-run`` reports them, otherwise
:mod:`bwc_dock.resync.apply` carries each one out. Each repair names its kind
(:class:`RepairKind`) and says, as a :class:`Finding`, what was found and what is done
about it; that finding is what ``--json`` lists under ``actions``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from bwc_dock.found import DockedVolume
from bwc_dock.ledger import ClipState, ClipWork
from bwc_dock.scanner import ScanResult


class RepairKind(StrEnum):
    ADOPT = "adopt"  # a staged file the ledger lost goes back to its clip
    QUARANTINE_FILE = "quarantine_file"  # a staged file nobody knows goes to quarantine/
    RESCAN = "rescan"  # a docked camera's clips the ledger lacks are recorded
    REQUEUE = "requeue"  # a clip goes back to be uploaded, or read off its camera, again
    KEEP_CONFLICT = "keep_conflict"  # other bytes under a clip's key: kept aside, then removed
    REWRITE_SUMS = "rewrite_sums"  # a docking's SHA256SUMS is missing or stale
    CLEAN_PARTIALS = "clean_partials"  # leftovers of interrupted uploads
    REDO_WORK = "redo_work"  # no daemon runs: copy and upload what is queued ourselves
    CANNOT_REPAIR = "cannot_repair"  # nothing here can fix it: the command exits 1


class Status(StrEnum):
    PLANNED = "planned"  # a dry run: not carried out
    DONE = "done"
    FAILED = "failed"
    CANNOT_REPAIR = "cannot repair"


@dataclass(frozen=True)
class Action:
    """One thing resync found, and what it does (or would do) about it."""

    kind: str
    detail: str
    action: str
    clip_id: int | None = None
    camera_serial: str | None = None


@dataclass(frozen=True)
class Unrepairable:
    clip_id: int | None
    camera_serial: str | None
    problem: str


@dataclass(frozen=True)
class DockedCamera:
    docking_id: int | None  # None: seen by resync, no docking recorded yet
    volume: DockedVolume


@dataclass(frozen=True)
class AdoptStagedCopy:
    kind: ClassVar[RepairKind] = RepairKind.ADOPT
    stray: Path
    target: Path
    clip_id: int
    camera_serial: str
    staged_path: str

    def finding(self) -> Action:
        return Action(
            "lost_staged_copy",
            f"{self.stray} hashes to a file of clip {self.clip_id}",
            f"adopt it as {self.target}",
            self.clip_id,
            self.camera_serial,
        )


@dataclass(frozen=True)
class QuarantineStrayFile:
    kind: ClassVar[RepairKind] = RepairKind.QUARANTINE_FILE
    stray: Path
    target: Path  # a time stamp is added when the name is taken by then

    def finding(self) -> Action:
        return Action(
            "unknown_staged_file",
            f"{self.stray} belongs to no clip the ledger knows",
            f"move it to {self.target}",
        )


@dataclass(frozen=True)
class Rescan:
    """Record a docked camera (when no docking is open for it) and what its scan found."""

    kind: ClassVar[RepairKind] = RepairKind.RESCAN
    camera: DockedCamera
    scan: ScanResult | None  # None: the scan failed (logged); the camera is still docked
    new_clips: int
    priority: int

    def finding(self) -> Action | None:
        if not self.new_clips:
            return None
        return self.found(f"{self.new_clips} clips on {{}} are not in the ledger", "record")

    def found(self, detail: str, verb: str) -> Action:
        volume = self.camera.volume
        return Action(
            "new_on_camera",
            detail.format(volume.device),
            f"{verb} them to be copied",
            camera_serial=volume.camera_serial,
        )


CONFLICTS_PREFIX = "_conflicts/"


@dataclass(frozen=True)
class KeepConflictAside:
    """An object under the clip's own key that does not hash to the evidence is not the
    evidence, but it is evidence of tampering or corruption (or another dock's clip under
    a key both make): its bytes are copied aside to ``aside_key`` (and the copy verified
    by its hash) and left where they are; a person decides what happens to them."""

    kind: ClassVar[RepairKind] = RepairKind.KEEP_CONFLICT
    clip_id: int
    camera_serial: str
    key: str
    expected: str | None
    found: str  # the SHA-256 of the bytes under ``key`` when resync read them

    @property
    def aside_key(self) -> str:
        return f"{CONFLICTS_PREFIX}{self.key}.{self.found}"

    def finding(self) -> None:
        return None  # reported with the re-queue it prepares


@dataclass(frozen=True)
class Requeue:
    """Put a clip back to ``target`` (staged: upload again; discovered: read it off the
    camera again), after keeping aside and removing the wrong objects in the way."""

    kind: ClassVar[RepairKind] = RepairKind.REQUEUE
    work: ClipWork
    target: ClipState
    reason: str
    found: Action
    keep_aside_first: tuple[KeepConflictAside, ...] = ()

    def finding(self) -> Action:
        return self.found


@dataclass(frozen=True)
class RewriteSums:
    kind: ClassVar[RepairKind] = RepairKind.REWRITE_SUMS
    docking_id: int
    key: str

    def finding(self) -> Action:
        return Action("anchor_missing", f"{self.key} is missing or stale", "write it again")


@dataclass(frozen=True)
class CleanPartials:
    kind: ClassVar[RepairKind] = RepairKind.CLEAN_PARTIALS

    def finding(self) -> None:
        return None  # how many there were is known only once they are removed


@dataclass(frozen=True)
class RedoWork:
    """With no daemon running, resync copies the docked cameras' queued clips and uploads
    every due staged clip itself, through the same stage code and leases."""

    kind: ClassVar[RepairKind] = RepairKind.REDO_WORK

    def finding(self) -> None:
        return None


@dataclass(frozen=True)
class CannotRepair:
    kind: ClassVar[RepairKind] = RepairKind.CANNOT_REPAIR
    clip_id: int | None
    camera_serial: str | None
    problem: str

    @classmethod
    def of(cls, work: ClipWork | None, problem: str) -> CannotRepair:
        return cls(work.id if work else None, work.camera_serial if work else None, problem)

    def finding(self) -> None:
        return None


Repair = (
    AdoptStagedCopy
    | QuarantineStrayFile
    | Rescan
    | KeepConflictAside
    | Requeue
    | RewriteSums
    | CleanPartials
    | RedoWork
    | CannotRepair
)


@dataclass(frozen=True)
class Outcome:
    """What carrying out one repair gave (or, in a dry run, what the plan says)."""

    status: Status
    action: Action | None = None
    unrepairable: tuple[Unrepairable, ...] = ()
    copied: int = 0
    uploaded: int = 0
    error: str | None = None


def describe(repair: Repair) -> dict[str, object]:
    """The repair as a JSON-ready document: its kind and its own fields."""
    document: dict[str, object] = {"repair": str(repair.kind)}
    match repair:
        case Requeue():
            document.update(
                clip_id=repair.work.id,
                camera_serial=repair.work.camera_serial,
                target=str(repair.target),
                reason=repair.reason,
                keep_aside_first=[describe(kept) for kept in repair.keep_aside_first],
            )
        case Rescan():
            document.update(
                camera_serial=repair.camera.volume.camera_serial,
                device=repair.camera.volume.device,
                docking_id=repair.camera.docking_id,
                scanned=repair.scan is not None,
                new_clips=repair.new_clips,
            )
        case KeepConflictAside():
            document.update(asdict(repair), aside_key=repair.aside_key)
        case _:
            document.update({name: _plain(value) for name, value in asdict(repair).items()})
    return document


def _plain(value: object) -> object:
    return str(value) if isinstance(value, Path) else value
