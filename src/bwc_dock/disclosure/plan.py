"""What goes into a disclosure bag, under which names: the request, and each clip with
its custody records and files, named so that no manifest needs percent-encoding."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bwc_dock.disclosure.records import (
    CustodyRecord,
    DisclosureError,
    StoredFile,
    custody_records,
)
from bwc_dock.names import safe_name
from bwc_dock.storage.base import StorageBackend


@dataclass(frozen=True)
class BagRequest:
    case: str
    keys: tuple[str, ...]
    target: Path
    organization: str
    signing_key: Path
    disclosed_by: str
    disclosed_to: str


@dataclass(frozen=True)
class PlannedFile:
    path: str  # in the bag: data/CAMERA/NAME, a sanitised name
    stored: StoredFile
    role: str  # "clip" or "sidecar"


@dataclass(frozen=True)
class PlannedClip:
    key: str
    records: tuple[CustodyRecord, ...]
    record_paths: tuple[str, ...]
    files: tuple[PlannedFile, ...]

    @property
    def clip(self) -> PlannedFile:
        return self.files[0]



def plan_clips(backend: StorageBackend, keys: Iterable[str]) -> list[PlannedClip]:
    """Each key's custody records and files, with payload names unique in the bag."""
    used: set[str] = set()
    planned = []
    for key in dict.fromkeys(keys):  # a key given twice is bagged once
        records = custody_records(backend, key)
        camera = safe_name(records[0].camera.encode())
        files = [PlannedFile(_unique(f"data/{camera}", records[0].clip.name, used),
                             records[0].clip, "clip")]
        for sidecar in _sidecars(records):
            files.append(PlannedFile(_unique(f"data/{camera}", sidecar.name, used),
                                     sidecar, "sidecar"))
        record_paths = tuple(_unique("custody", record.key.replace("/", "_"), used)
                             for record in records)
        planned.append(PlannedClip(key, tuple(records), record_paths, tuple(files)))
    return planned


def _sidecars(records: list[CustodyRecord]) -> list[StoredFile]:
    """Every sidecar any record names, once; records disagreeing on one is an error."""
    by_key: dict[str, StoredFile] = {}
    for record in records:
        for sidecar in record.sidecars:
            known = by_key.setdefault(sidecar.key, sidecar)
            if known.sha256 != sidecar.sha256:
                raise DisclosureError(f"{sidecar.key}: custody records disagree on its SHA-256")
    return sorted(by_key.values(), key=lambda sidecar: sidecar.key)


def _unique(folder: str, raw_name: str, used: set[str]) -> str:
    """``folder/NAME`` with NAME safe in any manifest (no percent-encoding needed) and on
    any filesystem, unique in the bag also where case is not significant."""
    name = safe_name(raw_name.encode())
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    candidate, number = f"{folder}/{name}", 1
    while candidate.lower() in used:
        number += 1
        candidate = f"{folder}/{stem}-{number}{dot}{extension}"
    used.add(candidate.lower())
    return candidate
