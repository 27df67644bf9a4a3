"""What a coverage review reads from central storage, as validated values.

- custody records (manifests) beside every clip, one per offload, from every dock;
- assignments (who carried which camera from when), written by any machine;
- explanations of a missing video, written by ``coverage explain``;
- camera evidence written at dockings: a docking, a gap in the file counter, a counter
  reset, a file that vanished from the camera.

Every one is bounded in size and validated; one that does not fit is reported with its
key and the reason, and the others are still used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bwc_dock.coverage.shared import (
    ASSIGNMENTS_PREFIX,
    DOCKINGS_PREFIX,
    EVIDENCE_PREFIX,
    EXPLANATIONS_PREFIX,
    RECORD_SUFFIX,
    Problem,
    aware,
    compact_time,
    parse_records,
    read_many,
    read_records,
)
from bwc_dock.manifest import MANIFEST_SCHEMA, MANIFEST_SUFFIX
from bwc_dock.names import safe_name
from bwc_dock.storage import StorageBackend

ASSIGNMENT_SCHEMA = "bwc-dock/assignment/1"
EXPLANATION_SCHEMA = "bwc-dock/coverage-explanation/1"
EVIDENCE_SCHEMA = "bwc-dock/camera-evidence/1"
# A manifest key ends ".<dock>.clip-<ledger id>.json"; bwc-dock's own prefixes start "_".
_MANIFEST_KEY = re.compile(r"\.clip-[0-9]+" + re.escape(MANIFEST_SUFFIX) + "$")
_TEXT = 256
MAX_DOCKING_TRIES = 3  # unusable newest docking records read before giving up on a camera


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # newer docks may add fields


def _short_text(value: str) -> str:
    if not value or len(value) > _TEXT:
        raise ValueError(f"1 to {_TEXT} characters")
    return value


class ManifestRecord(_Record):
    camera: str
    dock: str
    officer: str | None = None
    key: str
    recorded_at: datetime
    duration_seconds: float | None = Field(default=None, ge=0, le=24 * 3600)
    times: dict[str, datetime | None] = Field(default_factory=dict)

    @field_validator("camera", "dock")
    @classmethod
    def _bounded(cls, value: str) -> str:
        return _short_text(value)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value or len(value) > 1024:
            raise ValueError("1 to 1024 characters")
        return value


@dataclass(frozen=True)
class ClipRecord:
    """One clip as an offload's custody record describes it (times in UTC)."""

    key: str
    camera: str
    dock: str
    officer: str | None
    recorded_at: datetime
    duration_seconds: float | None
    docked_at: datetime | None  # when that dock found it on the camera

    @property
    def recorded_until(self) -> datetime:
        return self.recorded_at + timedelta(seconds=self.duration_seconds or 0)


def _clip_record(key: str, document: dict[str, Any]) -> ClipRecord:
    manifest = ManifestRecord.model_validate(document)
    discovered = manifest.times.get("discovered_at")
    return ClipRecord(
        key=manifest.key,
        camera=manifest.camera,
        dock=manifest.dock,
        officer=manifest.officer,
        recorded_at=aware(manifest.recorded_at, "recorded_at"),
        duration_seconds=manifest.duration_seconds,
        docked_at=aware(discovered, "times.discovered_at") if discovered else None,
    )


def is_manifest_key(key: str) -> bool:
    return not key.startswith("_") and _MANIFEST_KEY.search(key) is not None


def read_clips(backend: StorageBackend) -> tuple[list[ClipRecord], list[Problem]]:
    """Every clip's custody record in the store, from every dock (one flat listing of
    the store, sorted here: the review needs every key, in no particular order)."""
    keys = sorted(key for key in backend.list_keys_unordered("") if is_manifest_key(key))
    return parse_records(read_many(backend, keys), MANIFEST_SCHEMA, _clip_record)


# -- assignments ----------------------------------------------------------------------


class AssignmentRecord(_Record):
    camera: str
    officer_id: str
    assigned_at: datetime
    dock: str | None = None
    forced: bool = False

    @field_validator("camera", "officer_id")
    @classmethod
    def _bounded(cls, value: str) -> str:
        return _short_text(value)

    @field_validator("assigned_at")
    @classmethod
    def _zoned(cls, value: datetime) -> datetime:
        return aware(value, "assigned_at")


def read_assignments(
    backend: StorageBackend,
) -> tuple[list[tuple[str, AssignmentRecord]], list[Problem]]:
    """(key, record) of every fleet assignment, oldest key first."""
    return read_records(
        backend,
        ASSIGNMENTS_PREFIX,
        ASSIGNMENT_SCHEMA,
        lambda key, document: (key, AssignmentRecord.model_validate(document)),
    )


# -- explanations ---------------------------------------------------------------------


class ExplanationRecord(_Record):
    event: str
    officer: str
    reason: str
    note: str = Field(max_length=4000)
    made_at: datetime
    dock: str | None = None
    actor: str | None = None
    corrects: str | None = None  # the key of the record this one corrects

    @field_validator("event", "officer", "reason")
    @classmethod
    def _bounded(cls, value: str) -> str:
        return _short_text(value)

    @field_validator("made_at")
    @classmethod
    def _zoned(cls, value: datetime) -> datetime:
        return aware(value, "made_at")


def read_explanations(
    backend: StorageBackend,
) -> tuple[list[tuple[str, ExplanationRecord]], list[Problem]]:
    return read_records(
        backend,
        EXPLANATIONS_PREFIX,
        EXPLANATION_SCHEMA,
        lambda key, document: (key, ExplanationRecord.model_validate(document)),
    )


# -- camera evidence from dockings ------------------------------------------------------

EvidenceKind = Literal["docking", "sequence_gap", "counter_reset", "clip_vanished"]


class EvidenceRecord(_Record):
    camera: str
    kind: EvidenceKind
    dock: str
    at: datetime  # when the docking saw it
    missing: tuple[int, ...] = Field(default=(), max_length=10_000)
    # the recorded times of the files either side of a gap
    between: tuple[datetime, datetime] | None = None
    name: str | None = None  # a vanished file's name
    recorded_at: datetime | None = None  # a vanished file's recorded time
    offloaded: bool = False  # the vanished file had reached central storage

    @field_validator("camera", "dock")
    @classmethod
    def _bounded(cls, value: str) -> str:
        return _short_text(value)

    @field_validator("at", "recorded_at")
    @classmethod
    def _zoned(cls, value: datetime | None) -> datetime | None:
        return aware(value, "time") if value is not None else None

    @field_validator("between")
    @classmethod
    def _zoned_pair(
        cls, value: tuple[datetime, datetime] | None
    ) -> tuple[datetime, datetime] | None:
        if value is None:
            return None
        return aware(value[0], "between"), aware(value[1], "between")


def read_evidence(backend: StorageBackend) -> tuple[list[EvidenceRecord], list[Problem]]:
    return read_records(
        backend,
        EVIDENCE_PREFIX,
        EVIDENCE_SCHEMA,
        lambda _key, document: EvidenceRecord.model_validate(document),
    )


def read_last_dockings(backend: StorageBackend) -> tuple[list[EvidenceRecord], list[Problem]]:
    """Each camera's newest docking record (their names sort by docking time), checked
    against its name; when the newest is unusable, the one before it, and so on."""
    by_camera: dict[str, list[str]] = {}
    for key in backend.list_keys_unordered(DOCKINGS_PREFIX):
        folder, _, name = key[len(DOCKINGS_PREFIX):].partition("/")
        if folder and name.endswith(RECORD_SUFFIX) and "/" not in name:
            by_camera.setdefault(folder, []).append(key)
    records: list[EvidenceRecord] = []
    problems: list[Problem] = []
    for keys in (sorted(keys, reverse=True) for _camera, keys in sorted(by_camera.items())):
        for key in keys[:MAX_DOCKING_TRIES]:
            found, bad = parse_records(
                read_many(backend, [key]), EVIDENCE_SCHEMA, _docking_record
            )
            problems += bad
            if found:
                records += found
                break
    return records, problems


def _docking_record(key: str, document: dict[str, Any]) -> EvidenceRecord:
    record = EvidenceRecord.model_validate(document)
    if record.kind != "docking":
        raise ValueError(f"kind: {record.kind!r} is not a docking")
    expected = f"{DOCKINGS_PREFIX}{safe_name(record.camera.encode())}/{compact_time(record.at)}."
    if not key.startswith(expected):
        raise ValueError("its name does not match its camera and time")
    return record
