"""Chain of custody: anchors kept outside the dock (the export a court reads is in
custody_export.py).

Anchors: every clip manifest in central storage records the audit chain head (row id
and hash) at the time of its upload, and every docking gets a ``SHA256SUMS`` file in
the standard ``sha256sum`` form listing each object it delivered, with names relative
to the folder the file lies in (so ``sha256sum -c`` run in a downloaded copy of that
folder checks everything). Anchors are written once: a docking's list is create-only,
and a list gone stale (a clip delivered after it was written) gets a new version beside
it (``.v2``, ``.v3``), never a replacement.

:func:`check_anchors` starts from central storage, not from the ledger (docs/design.md,
trust boundaries: whoever owns the dock PC can edit the ledger). It lists every anchor of
this dock that central storage holds, and each must be explained by the ledger: its
chain head row present with the same hash, its clip present, delivered, with the same
hash and key, every line of a list an object the ledger says that docking delivered.
Rewriting the ledger after the fact, even with every hash recomputed and clips hidden
behind ``duplicate_of`` or other states, leaves an anchor the ledger no longer explains.
Rows newer than the newest anchor cannot be checked that way (said in the report).
"""

from __future__ import annotations

import json
import posixpath
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from bwc_dock.errors import PermanentStorageError, StorageConflict, StorageError
from bwc_dock.ledger import ClipState, Ledger
from bwc_dock.ledger.audit import find_break
from bwc_dock.ledger.models import utc_now
from bwc_dock.ledger.snapshots import ClipWork, DockingClocks
from bwc_dock.names import safe_name
from bwc_dock.storage.base import DocumentTooLarge, StorageBackend

log = structlog.get_logger(__name__)

# Two uploader threads finishing clips of one docking must not write its list in turns
# with stale views; across processes a later write (or resync) puts the newest list.
_SUMS_LOCK = threading.Lock()


# -- per-docking SHA256SUMS ------------------------------------------------------------


@dataclass(frozen=True)
class DockingSums:
    docking_id: int
    key: str
    content: bytes


def docking_sums(ledger: Ledger, docking_id: int) -> DockingSums | None:
    """The SHA256SUMS document of a docking's delivered objects; None before any."""
    objects = ledger.delivered_objects(docking_id)
    if not objects:
        return None
    folder = _common_folder(list(objects))
    name = f"SHA256SUMS.{safe_name(ledger.dock_id.encode())}.docking-{docking_id:06d}"
    key = f"{folder}/{name}" if folder else name
    lines = [
        f"{sha256}  {posixpath.relpath(object_key, folder or '.')}\n"
        for object_key, sha256 in sorted(objects.items())
    ]
    docking = ledger.docking(docking_id)
    header = sums_header(docking.clocks) if docking is not None else []
    return DockingSums(docking_id, key, "".join(header + lines).encode("ascii"))


def sums_header(clocks: DockingClocks) -> list[str]:
    """Comment lines (``sha256sum -c`` skips them) saying how the times of the docking's
    clips were read. None for dockings from before clocks were measured, so that their
    stored lists stay current and are never written again."""
    if not clocks.measured:
        return []
    offset = clocks.camera_clock_offset_seconds
    if offset is None:
        times = "UTC, uncorrected (the camera's clock offset was not measured)"
    else:
        times = f"UTC, corrected by the camera's clock offset of {offset:+.3f} s"
    synchronized = clocks.dock_clock_synchronized
    if synchronized is None:
        dock = "unknown"
    elif not synchronized:
        dock = "not synchronised"
    elif clocks.dock_clock_error_seconds is None:
        dock = "synchronised"
    else:
        dock = f"synchronised (estimated error {clocks.dock_clock_error_seconds:g} s)"
    return [f"# recorded times: {times}\n", f"# dock clock at docking: {dock}\n"]


def _common_folder(keys: list[str]) -> str:
    folders = [key.rsplit("/", 1)[0] if "/" in key else "" for key in keys]
    return posixpath.commonpath(folders) if all(folders) else ""


def sums_versions(backend: StorageBackend, base_key: str) -> list[tuple[int, str]]:
    """(version, key) of the stored versions of a docking's list, oldest first:
    ``base_key`` itself is version 1, then ``base_key.v2``, ``base_key.v3`` ..."""
    numbered: list[tuple[int, str]] = []
    for key in backend.list_keys(base_key):
        if key == base_key:
            numbered.append((1, key))
        elif (match := _VERSION.fullmatch(key[len(base_key):])) is not None:
            numbered.append((int(match["version"]), key))
    return sorted(numbered)


_VERSION = re.compile(r"\.v(?P<version>[1-9][0-9]*)")


def stored_sums_current(backend: StorageBackend, sums: DockingSums) -> bool:
    """Whether the newest stored version of the docking's list is the ledger's list."""
    versions = sums_versions(backend, sums.key)
    return bool(versions) and _stored_list(backend, versions[-1][1]) == sums.content


def _stored_list(backend: StorageBackend, key: str) -> bytes | None:
    """A stored list's content; None when missing or too large to be one of ours (a
    planted giant is never read whole: the list goes beside it as the next version)."""
    try:
        return backend.read_bytes(key)
    except DocumentTooLarge as error:
        log.warning("custody.sums_too_large", key=key, error=str(error))
        return None


def write_docking_sums(ledger: Ledger, backend: StorageBackend, docking_id: int) -> str | None:
    """Store a docking's SHA256SUMS from the ledger, create-only; return its key.

    The newest stored version already holding this list is success. A stale one stays
    as it is (an anchor is never replaced) and the list goes beside it as the next
    version. Another writer taking that version first is a StorageConflict: the next
    round (anchor_dockings) tries the version after it.
    """
    with _SUMS_LOCK:
        read_at = utc_now()  # an upload after this makes the list stale again
        sums = docking_sums(ledger, docking_id)
        if sums is None:
            return None
        versions = sums_versions(backend, sums.key)
        if versions and _stored_list(backend, versions[-1][1]) == sums.content:
            key = versions[-1][1]
        else:
            key = f"{sums.key}.v{versions[-1][0] + 1}" if versions else sums.key
            backend.put_bytes(
                key, sums.content, {"dock": ledger.dock_id, "docking-id": str(docking_id)}
            )
        ledger.mark_sums_written(docking_id, read_at)
    log.info("custody.sums_written", docking=docking_id, key=key)
    return key


def anchor_dockings(ledger: Ledger, backend: StorageBackend, budget_seconds: float = 5.0) -> int:
    """Write the SHA256SUMS the ledger says are missing or stale; the number written.

    The uploader writes a docking's list when its last clip is stored; this catches a
    daemon killed at that moment or a store that refused the write. A storage error
    ends the round when it may heal (the store is down), and so does ``budget_seconds``:
    the daemon's main loop (its watchdog pings) must not wait on a long catch-up. The
    next round goes on where this one stopped. A refusal of one docking's list (its name
    taken by something unwritable) is logged and the next docking is anchored: one bad
    name never holds back the anchors of every later docking.
    """
    deadline = time.monotonic() + budget_seconds
    written = 0
    for docking_id in ledger.dockings_to_anchor():
        if time.monotonic() >= deadline:
            break
        try:
            write_docking_sums(ledger, backend, docking_id)
        except (PermanentStorageError, StorageConflict) as error:
            log.error("custody.sums_refused", docking=docking_id, error=str(error))
            continue
        except StorageError as error:
            log.warning("custody.sums_failed", docking=docking_id, error=str(error))
            break
        written += 1
    return written


# -- audit chain against the anchors in central storage ------------------------------------


@dataclass(frozen=True)
class AnchorProblem:
    clip_id: int | None  # None for a problem of a docking's list or of the listing
    anchor_key: str  # the manifest or SHA256SUMS list in central storage
    anchor_row: int | None
    problem: str


@dataclass
class AnchorReport:
    local_rows: int
    local_break: int | None = None
    local_break_reason: str | None = None
    anchors_checked: int = 0
    lists_checked: int = 0
    newest_anchor_row: int = 0
    problems: list[AnchorProblem] = field(default_factory=list)
    changed_after_row: int | None = None  # the edit lies after this row ...
    changed_at_or_before_row: int | None = None  # ... and at or before this one

    @property
    def ok(self) -> bool:
        return self.local_break is None and not self.problems

    def document(self) -> dict[str, Any]:
        document = asdict(self)
        document["ok"] = self.ok
        document["unanchored_rows"] = max(0, self.local_rows - self.newest_anchor_row)
        return document


_MANIFEST_SUFFIX = ".json"
# Another offload's record (``{clip_key}.{dock}.clip-{id}.json``, any dock): not legacy.
_ANY_OFFLOAD_RECORD = re.compile(r"\.[^./]+\.clip-[0-9]+\.json$")


@dataclass(frozen=True)
class _Patterns:
    """How this dock's anchors are named in central storage."""

    manifest: re.Pattern[str]  # {clip_key}.{dock}.clip-{clip_id}.json
    sums: re.Pattern[str]  # [folder/]SHA256SUMS.{dock}.docking-NNNNNN[.vN]

    @classmethod
    def of(cls, dock_id: str) -> _Patterns:
        dock = re.escape(safe_name(dock_id.encode()))
        return cls(
            re.compile(rf"^(?P<clip_key>.+)\.{dock}\.clip-(?P<clip_id>[0-9]+)\.json$"),
            re.compile(rf"^(?:(?P<folder>.*)/)?SHA256SUMS\.{dock}\.docking-(?P<docking>[0-9]+)"
                       rf"(?:\.v[1-9][0-9]*)?$"),
        )


@dataclass
class _Check:
    """One run of check_anchors: the ledger's facts and the report being filled."""

    ledger: Ledger
    backend: StorageBackend
    report: AnchorReport
    hashes: dict[int, str]
    clips: dict[int, ClipWork]
    good_rows: list[int] = field(default_factory=list)
    anchored_clips: set[int] = field(default_factory=set)

    def problem(self, clip_id: int | None, key: str, row: int | None, text: str) -> None:
        self.report.problems.append(AnchorProblem(clip_id, key, row, text))


def check_anchors(ledger: Ledger, backend: StorageBackend) -> AnchorReport:
    """Every anchor of this dock in central storage, found by listing the store, must
    be explained by the ledger; every clip the ledger says it delivered must have one."""
    entries = ledger.audit_entries()
    broken = find_break(entries)
    check = _Check(
        ledger, backend,
        AnchorReport(len(entries), broken.entry_id if broken else None,
                     broken.reason if broken else None),
        {entry.id: entry.hash for entry in entries},
        {clip.id: clip for clip in ledger.clips()},
    )
    patterns = _Patterns.of(ledger.dock_id)
    other_docks: set[str] = set()
    for key in backend.list_keys(""):
        if (anchor := _ANY_ANCHOR.search(key)) is not None:
            other_docks.add(anchor["dock"] or anchor["sums_dock"])
        if (manifest := patterns.manifest.match(key)) is not None:
            _check_manifest(check, key, int(manifest["clip_id"]), manifest["clip_key"])
        elif (sums := patterns.sums.match(key)) is not None:
            _check_sums(check, key, int(sums["docking"]), sums["folder"] or "")
        elif key.endswith(_MANIFEST_SUFFIX) and not _ANY_OFFLOAD_RECORD.search(key):
            _check_legacy_manifest(check, key)
    for clip in check.clips.values():
        delivered = clip.state in (ClipState.UPLOADED, ClipState.CLEARED) and clip.remote_key
        # a duplicate's content is anchored by its original's manifest
        if delivered and clip.duplicate_of is None and clip.id not in check.anchored_clips:
            check.problem(clip.id, str(clip.remote_key), None,
                          "the ledger says this clip was delivered, but central storage"
                          " holds no manifest of it from this dock")
    _check_identity(check, entries, other_docks)
    _bound_the_edit(check.report, check.good_rows)
    return check.report


_ANY_ANCHOR = re.compile(r"\.(?P<dock>[^./]+)\.clip-[0-9]+\.json$"
                         r"|(?:^|/)SHA256SUMS\.(?P<sums_dock>[^/]+)\.docking-[0-9]+(?:\.v[0-9]+)?$")
_DOCKS_NAMED = 20  # other docks named in the problem at most


def _check_identity(check: _Check, entries: list[Any], docks_in_store: set[str]) -> None:
    """The configured dock id alone proves nothing: the ledger's own rows must name it,
    and central storage must hold at least one anchor of it (else nothing there vouches
    for this ledger: a dock that delivered nothing yet, or a ledger started afresh or
    under a new name)."""
    dock = check.ledger.dock_id
    named = sorted({entry.dock_id for entry in entries} - {dock})
    if named:
        check.problem(None, "", None, f"the ledger's audit rows name dock(s)"
                      f" {', '.join(named[:_DOCKS_NAMED])}, the configuration {dock}: the"
                      f" dock was renamed, or this is another dock's ledger")
    if check.report.anchors_checked or check.report.lists_checked:
        return
    # names from central storage: escaped (ascii()), never shown raw on a terminal
    others = [ascii(name) for name in sorted(docks_in_store - {safe_name(dock.encode())})]
    check.problem(None, "", None, f"central storage holds no anchor of dock {dock}: nothing"
                  f" there vouches for this ledger (nothing delivered yet, or a ledger"
                  f" started afresh or under a new dock id); anchors of other docks there:"
                  f" {', '.join(others[:_DOCKS_NAMED]) or 'none'}")


def _check_legacy_manifest(check: _Check, key: str) -> None:
    """A manifest named ``{clip_key}.json`` (releases before per-offload records): this
    dock's when its ``dock`` says so."""
    document = _read_json(check.backend, key)
    if not isinstance(document, dict) or "audit_chain_head" not in document:
        return  # not a manifest (a sidecar or another system's JSON)
    if document.get("dock") != check.ledger.dock_id:
        return
    clip_id = document.get("clip_id")
    if not isinstance(clip_id, int):
        check.problem(None, key, None, "a manifest naming this dock without a clip id")
        return
    _check_manifest(check, key, clip_id, key[: -len(_MANIFEST_SUFFIX)], document)


def _check_manifest(check: _Check, key: str, clip_id: int, clip_key: str,
                    document: object = None) -> None:
    if document is None:
        document = _read_json(check.backend, key)
    anchor = _anchor_of(document)
    if isinstance(anchor, str):
        check.problem(clip_id, key, None, anchor)
        return
    row, row_hash, manifest_sha256 = anchor
    check.report.anchors_checked += 1
    check.report.newest_anchor_row = max(check.report.newest_anchor_row, row)
    check.anchored_clips.add(clip_id)
    clip = check.clips.get(clip_id)
    if clip is None:
        check.problem(clip_id, key, row, f"central storage holds a manifest of clip {clip_id},"
                      " which the ledger does not have")
    elif clip.state not in (ClipState.UPLOADED, ClipState.CLEARED):
        check.problem(clip_id, key, row, f"central storage holds a manifest of clip {clip_id},"
                      f" which the ledger has as {clip.state} (an upload finishing right"
                      f" now, or the ledger was changed)")
    elif clip.remote_key != _stored_key(document, clip_key):
        check.problem(clip_id, key, row, f"the manifest has the clip at"
                      f" {_stored_key(document, clip_key)}, the ledger at {clip.remote_key}")
    elif manifest_sha256 != clip.sha256:
        check.problem(clip_id, key, row, f"the ledger's hash {clip.sha256} differs from"
                      f" the manifest's {manifest_sha256}")
    if row in check.hashes and check.hashes[row] == row_hash:
        check.good_rows.append(row)
        return
    problem = (
        f"audit row {row} is missing from the local ledger"
        if row not in check.hashes
        else f"audit row {row} differs from the chain head recorded in central storage"
    )
    check.problem(clip_id, key, row, problem)


def _check_sums(check: _Check, key: str, docking_id: int, folder: str) -> None:
    """Every line of a docking's list must be an object the ledger says it delivered."""
    try:
        content = check.backend.read_bytes(key)
    except DocumentTooLarge as error:
        check.problem(None, key, None, f"not read: {error}")
        return
    if content is None:
        return  # deleted since it was listed; the clips' manifests still speak
    check.report.lists_checked += 1
    delivered = check.ledger.delivered_objects(docking_id)
    if not delivered:
        check.problem(None, key, None, f"a list of docking {docking_id}, which the ledger"
                      " does not show as having delivered anything")
        return
    for line in content.decode("utf-8", "replace").splitlines():
        if line.startswith("#"):
            continue  # the header (sums_header), a comment to sha256sum -c as well
        sha256, _, name = line.partition("  ")
        object_key = posixpath.normpath(posixpath.join(folder, name)) if folder else name
        if delivered.get(object_key) != sha256:
            check.problem(None, key, None, f"lists {object_key} (sha256 {sha256}), which"
                          f" the ledger does not show docking {docking_id} delivering")
            return


def _stored_key(document: object, named_after: str) -> str:
    """Where the manifest says the clip is stored (a duplicate's manifest may lie
    beside its own would-be key, naming its original's); else the key it is named after."""
    stored = document.get("key") if isinstance(document, dict) else None
    return stored if isinstance(stored, str) else named_after


@dataclass(frozen=True)
class _Unreadable:
    reason: str


def _read_json(backend: StorageBackend, key: str) -> object:
    try:
        content = backend.read_bytes(key)
    except DocumentTooLarge as error:
        return _Unreadable(f"manifest not read: {error}")
    if content is None:
        return _Unreadable("manifest gone from central storage while it was checked")
    try:
        document: object = json.loads(content)
    except ValueError as error:
        return _Unreadable(f"manifest unreadable: {error}")
    return document


def _anchor_of(document: object) -> tuple[int, str, str | None] | str:
    """(chain head row, its hash, the clip's SHA-256) from a manifest, or what is wrong."""
    if isinstance(document, _Unreadable):
        return document.reason
    if not isinstance(document, dict):
        return "manifest unreadable: not a JSON object"
    try:
        head = document["audit_chain_head"]
        sha256 = document.get("sha256")
        return int(head["id"]), str(head["hash"]), sha256 if isinstance(sha256, str) else None
    except (ValueError, KeyError, TypeError) as error:
        return f"manifest unreadable: {error!r}"


def _bound_the_edit(report: AnchorReport, good_rows: list[int]) -> None:
    bad_rows = [p.anchor_row for p in report.problems if p.anchor_row is not None]
    if not bad_rows:
        return
    first_bad = min(bad_rows)
    report.changed_at_or_before_row = first_bad
    below = [row for row in good_rows if row < first_bad]
    report.changed_after_row = max(below, default=0)
