"""Write a disclosure bag: a BagIt 1.0 bag (RFC 8493) of a case's clips, signed.

Every byte copied into the bag is hashed on its way and compared with the SHA-256 of
the clip's custody records: a mismatch stops the bag, naming the clip, and no manifest
is ever written over bytes that differ. Clips stream through in blocks (memory stays
flat whatever their size). The bag is written in a temporary folder beside the target
and renamed into place only when complete and signed, so a failure (a missing clip, a
full disk) never leaves a half-written bag that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bwc_dock import __version__
from bwc_dock.disclosure import verify_bag
from bwc_dock.disclosure.certificate import certificate_text
from bwc_dock.disclosure.plan import BagRequest, PlannedClip, plan_clips
from bwc_dock.disclosure.readme import readme_text
from bwc_dock.disclosure.records import DisclosureError, StoredFile
from bwc_dock.disclosure.signing import allowed_signers_line, sign
from bwc_dock.durable import fsync_directory
from bwc_dock.errors import IntegrityError, PermanentStorageError, RefusalKind
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.audit import find_break
from bwc_dock.names import safe_name
from bwc_dock.storage.base import StorageBackend

INDEX_SCHEMA = "bwc-dock/disclosure/1"
ALLOWED_SIGNERS = "agency-allowed_signers"
CERTIFICATE = "CERTIFICATE.txt"
AUDIT_FILE = "audit/audit-rows.json"
RECORDS_PREFIX = "_disclosures"
# (bytes copied, bytes in all, label), e.g. a progress bar on a terminal
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BagResult:
    target: Path
    tagmanifest_sha256: str
    signature_sha256: str
    record_key: str
    clips: int
    files: int
    bytes: int


def write_bag(backend: StorageBackend, ledger: Ledger, request: BagRequest,
              progress: Progress | None = None) -> BagResult:
    """Bag the clips of ``request.keys``, sign, record the signature, then publish;
    ``progress`` hears (bytes copied, bytes in all, label) as clips stream in."""
    check_target(request.target)
    signers = allowed_signers_line(request.organization, request.signing_key)  # fail early
    clips = plan_clips(backend, request.keys)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{request.target.name}.", suffix=".part",
                                     dir=request.target.parent))
    except OSError as error:
        raise DisclosureError(f"{request.target.parent}: cannot write there:"
                              f" {error.strerror or error}") from error
    published = False
    try:
        result = _fill(backend, ledger, request, clips, work, signers, progress)
        _sync_tree(work)
        _record(backend, ledger, request, result)
        _publish(work, request.target)
        published = True
        return result
    except OSError as error:
        raise DisclosureError(
            f"{request.target}: cannot write the bag: {error.strerror or error}"
            " (nothing was published)"
        ) from error
    finally:
        if not published:
            shutil.rmtree(work, ignore_errors=True)


def check_target(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise DisclosureError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()):
        raise DisclosureError(f"{target}: exists and is not empty")
    if not target.parent.is_dir():
        raise DisclosureError(f"{target.parent}: no such folder")


# -- filling the bag ---------------------------------------------------------------------


def _fill(backend: StorageBackend, ledger: Ledger, request: BagRequest,
          clips: list[PlannedClip], work: Path, signers: str,
          progress: Progress | None) -> BagResult:
    total = sum(planned.stored.size for clip in clips for planned in clip.files)
    meter = _Meter(total, progress)
    payload: dict[str, str] = {}
    for clip in clips:
        for planned in clip.files:
            payload[planned.path] = copy_verified(backend, planned.stored, work / planned.path,
                                                  clip.key, meter.add)
        for record, path in zip(clip.records, clip.record_paths, strict=True):
            _write(work / path, record.content)  # verbatim, as central storage holds it
    bagged_at = datetime.now(UTC)
    _write(work / AUDIT_FILE, _json(audit_document(ledger, clips)))
    _write(work / verify_bag.INDEX, _json(index_document(request, clips)))
    _write(work / CERTIFICATE,
           certificate_text(request, clips, bagged_at, ledger.dock_id).encode("utf-8"))
    _write(work / "README-VERIFY.txt", readme_text(request.organization).encode("utf-8"))
    _write(work / "verify_bag.py", Path(verify_bag.__file__).read_bytes())
    _write(work / ALLOWED_SIGNERS, signers.encode("ascii"))
    info = {
        "Source-Organization": request.organization,
        "External-Identifier": request.case,
        "Bagging-Date": bagged_at.date().isoformat(),
        "Payload-Oxum": f"{total}.{len(payload)}",
        "Disclosed-By": request.disclosed_by,
        "Disclosed-To": request.disclosed_to,
        "Bag-Software-Agent": f"bwc-dock {__version__}",
        "Internal-Sender-Identifier": f"dock {ledger.dock_id}, bagged {bagged_at.isoformat()}",
    }
    tagmanifest_sha256 = verify_bag.write_tag_files(work, payload, info)
    signature_sha256 = _sha256_of(sign(request.signing_key, work / verify_bag.TAG_MANIFEST))
    return BagResult(
        target=request.target,
        tagmanifest_sha256=tagmanifest_sha256,
        signature_sha256=signature_sha256,
        record_key=f"{RECORDS_PREFIX}/{safe_name(request.case.encode())}/{signature_sha256}.json",
        clips=len(clips),
        files=len(payload),
        bytes=total,
    )


def copy_verified(backend: StorageBackend, stored: StoredFile, destination: Path,
                  clip_key: str, copied: Callable[[int], None] | None = None) -> str:
    """Stream ``stored`` into ``destination``, hashing on the way; its SHA-256, which is
    the custody record's, or an error naming the clip (the copy is then discarded)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(destination, "xb") as copy, closing(backend.read_chunks(stored.key)) as chunks:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                if size > stored.size:
                    break  # more bytes than recorded: the hash cannot match; stop reading
                copy.write(chunk)
                if copied is not None:
                    copied(len(chunk))
    except PermanentStorageError as error:
        if error.kind is RefusalKind.MISSING_OBJECT:
            raise DisclosureError(f"clip {clip_key}: {stored.key} is missing from central"
                                  " storage; no bag was made") from error
        raise
    found = digest.hexdigest()
    if size != stored.size or found != stored.sha256:
        held = (f"more than {stored.size} bytes" if size > stored.size
                else f"{size} bytes, sha256 {found}")
        raise IntegrityError(
            f"clip {clip_key}: central storage holds other bytes under {stored.key}"
            f" ({held}) than its custody record"
            f" ({stored.size} bytes, sha256 {stored.sha256}); no bag was made"
        )
    return found


class _Meter:
    """Bytes copied into the bag so far, told to a progress bar."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress

    def add(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total, "bagging")


def audit_document(ledger: Ledger, clips: list[PlannedClip]) -> dict[str, Any]:
    """This dock's audit rows about these clips, its chain head, and the anchors (custody
    records in central storage, each with its dock's chain head) that prove them."""
    entries = ledger.audit_entries()
    broken = find_break(entries)
    by_id = {entry.id: entry.hash for entry in entries}
    own = {record.clip_id for clip in clips for record in clip.records
           if record.dock == ledger.dock_id}
    head = (entries[-1].id, entries[-1].hash) if entries else (0, "0" * 64)
    return {
        "dock": ledger.dock_id,
        "chain": {"rows": len(entries), "intact": broken is None,
                  "first_broken_row": broken.entry_id if broken else None,
                  "head": {"id": head[0], "hash": head[1]}},
        "rows": [asdict(entry) for entry in entries if entry.clip_id in own],
        "anchors": [
            {"key": record.key, "dock": record.dock, "clip_id": record.clip_id,
             "audit_chain_head": {"id": record.audit_head[0], "hash": record.audit_head[1]},
             "head_in_this_ledger": (by_id.get(record.audit_head[0]) == record.audit_head[1]
                                     if record.dock == ledger.dock_id else None)}
            for clip in clips for record in clip.records
        ],
    }


def index_document(request: BagRequest, clips: list[PlannedClip]) -> dict[str, Any]:
    """disclosure.json: which payload files make up which clip, and its custody records."""
    return {
        "schema": INDEX_SCHEMA,
        "case": request.case,
        "organization": request.organization,
        "clips": [
            {
                "name": clip.clip.path.removeprefix("data/"),
                "key": clip.key,
                "sha256": clip.clip.stored.sha256,
                "size": clip.clip.stored.size,
                "files": [
                    {"path": planned.path, "key": planned.stored.key, "role": planned.role,
                     "sha256": planned.stored.sha256, "size": planned.stored.size}
                    for planned in clip.files
                ],
                "custody_records": list(clip.record_paths),
            }
            for clip in clips
        ],
    }


# -- recording and publishing ------------------------------------------------------------


def _record(backend: StorageBackend, ledger: Ledger, request: BagRequest,
            result: BagResult) -> None:
    """The signature's SHA-256 in the audit log and, create-only, in central storage, so
    the agency can later prove which bags it issued (before the bag is published)."""
    details = {
        "case": request.case,
        "keys": list(request.keys),
        "tagmanifest_sha256": result.tagmanifest_sha256,
        "disclosed_by": request.disclosed_by,
        "disclosed_to": request.disclosed_to,
        "record_key": result.record_key,
    }
    ledger.record_disclosure(result.signature_sha256, details)
    document = {"schema": "bwc-dock/disclosure-record/1", "dock": ledger.dock_id,
                "signature_sha256": result.signature_sha256, **details}
    backend.put_bytes(result.record_key, _json(document), {"dock": ledger.dock_id})


def _publish(work: Path, target: Path) -> None:
    """Rename the finished bag into place (over an empty folder, which rename allows)."""
    work.rename(target)
    fsync_directory(target.parent)


def _sync_tree(root: Path) -> None:
    for folder, _folders, files in os.walk(root):
        for name in files:
            fd = os.open(Path(folder) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(folder)


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as file:
        file.write(content)


def _json(document: object) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _sha256_of(path: Path) -> str:
    return verify_bag.sha256_of(path)
