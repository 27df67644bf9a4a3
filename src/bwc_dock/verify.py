"""``bwc-dock verify``: re-hash staged copies (and central objects) against the ledger.

The ledger's SHA-256 is the one taken when the clip was first read off the camera;
every copy anywhere must hash to it. Each clip checked leaves a ``clip.verified``
audit event with the outcome, so the chain of custody shows when a copy was last
proven intact and by whom.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from bwc_dock.errors import StorageError
from bwc_dock.hashing import hash_file_from_disk
from bwc_dock.ledger import ClipState, ClipWork, Ledger
from bwc_dock.manifest import legacy_manifest_key, manifest_key
from bwc_dock.storage.base import DocumentTooLarge, StorageBackend

log = structlog.get_logger(__name__)

# Clips whose staged copy should be there (unless purged after retention).
STAGED_STATES = frozenset(
    {ClipState.STAGED, ClipState.UPLOADING, ClipState.UPLOADED, ClipState.CLEARED}
)
REMOTE_STATES = frozenset({ClipState.UPLOADED, ClipState.CLEARED})

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Mismatch:
    clip_id: int
    camera_serial: str
    where: str  # "staging" or "central"
    file: str  # the clip's or sidecar's name, or "manifest"
    location: str  # staged path or remote key
    expected: str | None
    found: str | None  # None: missing
    problem: str


@dataclass
class VerifyReport:
    staged_checked: int = 0
    remote_checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def document(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "staged_checked": self.staged_checked,
            "remote_checked": self.remote_checked,
            "mismatches": [asdict(m) for m in self.mismatches],
        }


def staged_files(staging_root: Path, work: ClipWork) -> Iterator[tuple[str, Path, str | None]]:
    """(name, path, expected sha256) of the clip's staged file and each sidecar's."""
    assert work.staged_path is not None
    folder = staging_root / work.staged_path
    yield work.name, folder / work.name, work.sha256
    for sidecar in work.sidecars:
        yield sidecar.name, folder / sidecar.name, sidecar.sha256


def remote_files(work: ClipWork) -> Iterator[tuple[str, str, str | None]]:
    """(name, key, expected sha256) of the clip's central object and each sidecar's."""
    assert work.remote_key is not None
    yield work.name, work.remote_key, work.sha256
    for sidecar in work.sidecars:
        if sidecar.remote_key is not None:
            yield sidecar.name, sidecar.remote_key, sidecar.sha256


def has_staged_copy(work: ClipWork, purged: bool) -> bool:
    return work.state in STAGED_STATES and work.staged_path is not None and not purged


def check_staged(staging_root: Path, work: ClipWork) -> list[Mismatch]:
    mismatches = []
    for name, path, expected in staged_files(staging_root, work):
        try:
            found: str | None = hash_file_from_disk(path)
        except FileNotFoundError:
            found = None
        except OSError as error:
            mismatches.append(
                _mismatch(work, "staging", name, str(path), expected, None, f"unreadable: {error}")
            )
            continue
        if found != expected:
            problem = "missing" if found is None else "content differs from the ledger hash"
            mismatches.append(_mismatch(work, "staging", name, str(path), expected, found, problem))
    return mismatches


def check_remote(backend: StorageBackend, work: ClipWork, dock_id: str) -> list[Mismatch]:
    """Download and hash every central object of the clip (its bytes, never a metadata
    claim); check this dock's manifest of it too."""
    mismatches = []
    for name, key, expected in remote_files(work):
        found = backend.read_sha256(key)
        if found != expected:
            problem = "missing" if found is None else "content differs from the ledger hash"
            mismatches.append(_mismatch(work, "central", name, key, expected, found, problem))
    mismatches.extend(_check_manifest(backend, work, dock_id))
    return mismatches


def _check_manifest(backend: StorageBackend, work: ClipWork, dock_id: str) -> list[Mismatch]:
    assert work.remote_key is not None
    key = manifest_key(work.remote_key, dock_id, work.id)
    try:
        content = backend.read_bytes(key)
        if content is None and work.duplicate_of is None:
            # uploaded by a release that kept one manifest per key: the record is there
            content = backend.read_bytes(legacy_manifest_key(work.remote_key))
    except DocumentTooLarge:  # not read whole: not a record this dock wrote
        return [_mismatch(work, "central", "manifest", key, work.sha256, None,
                          "too large to be a custody record; not read")]
    if content is None:
        return [_mismatch(work, "central", "manifest", key, work.sha256, None, "missing")]
    try:
        recorded = json.loads(content).get("sha256")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        recorded = "unreadable"
    if recorded != work.sha256:
        return [
            _mismatch(
                work,
                "central",
                "manifest",
                key,
                work.sha256,
                recorded,
                "manifest names another hash",
            )
        ]
    return []


def _mismatch(
    work: ClipWork,
    where: str,
    name: str,
    location: str,
    expected: str | None,
    found: str | None,
    problem: str,
) -> Mismatch:
    return Mismatch(work.id, work.camera_serial, where, name, location, expected, found, problem)


def verify(
    ledger: Ledger,
    staging_root: Path,
    backend: StorageBackend | None,
    *,
    camera_serial: str | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check every staged copy, and every central object when ``backend`` is given."""
    report = VerifyReport()
    clips = ledger.clips(camera_serial=camera_serial)
    purged = ledger.purged_clip_ids()
    for number, work in enumerate(clips, start=1):
        found: list[Mismatch] = []
        where: list[str] = []
        if has_staged_copy(work, work.id in purged):
            report.staged_checked += 1
            where.append("staging")
            found.extend(check_staged(staging_root, work))
        if backend is not None and work.state in REMOTE_STATES and work.remote_key:
            report.remote_checked += 1
            where.append("central")
            try:
                found.extend(check_remote(backend, work, ledger.dock_id))
            except StorageError as error:
                found.append(
                    _mismatch(
                        work,
                        "central",
                        work.name,
                        work.remote_key,
                        work.sha256,
                        None,
                        f"could not be read: {error}",
                    )
                )
        if where:
            _record(ledger, work, where, found)
        report.mismatches.extend(found)
        if progress:
            progress(number, len(clips), "verifying")
    return report


def _record(ledger: Ledger, work: ClipWork, where: list[str], found: list[Mismatch]) -> None:
    outcome = "ok" if not found else "mismatch"
    ledger.record_event(
        "clip.verified",
        camera_serial=work.camera_serial,
        clip_id=work.id,
        sha256=work.sha256,
        details={
            "where": where,
            "outcome": outcome,
            "mismatches": [
                {"where": m.where, "file": m.file, "found": m.found, "problem": m.problem}
                for m in found
            ],
        },
    )
    if found:
        for mismatch in found:
            log.error(
                "verify.mismatch",
                clip=work.id,
                camera=work.camera_serial,
                where=mismatch.where,
                file=mismatch.file,
                location=mismatch.location,
                expected=mismatch.expected,
                found=mismatch.found,
                problem=mismatch.problem,
            )
