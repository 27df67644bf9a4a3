"""The port every central-storage backend implements.

The uploader talks only to this interface. A backend's job is narrow: store a file
under a key, create-only, and prove that what it stored hashes to the SHA-256 the
ledger took when the clip was first read off the camera. Everything else (which
clip, when, how often to retry) is the uploader's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from bwc_dock.errors import PermanentStorageError, RefusalKind, UsageError

# Called with the number of bytes just sent; a bandwidth limiter may sleep in it.
ProgressCallback = Callable[[int], None]

# The most bwc-dock reads back of any document that is not a clip (manifests, SHA256SUMS
# lists, fleet documents): anyone can plant a huge "document" in shared storage.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


class DocumentTooLarge(PermanentStorageError):
    """A document in central storage is larger than bwc-dock reads back; not read."""

    def __init__(self, key: str, size: int | None, limit: int) -> None:
        held = f"{size} bytes" if size is not None else "more"
        super().__init__(f"{key}: holds {held}, more than the {limit} bytes a document"
                         f" may have; not read", RefusalKind.OTHER)


@dataclass(frozen=True)
class StoredObject:
    """What central storage holds under a key, as the store reports it."""

    key: str
    size: int
    sha256: str | None  # lowercase hex; None where the store keeps no SHA-256 for it
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartRecord:
    """One finished part of a multipart upload, as kept in the ledger."""

    number: int
    etag: str
    checksum: str
    size: int


@dataclass(frozen=True)
class PartDigests:
    """The SHA-256 of each part of a file, taken in the same read as the SHA-256 of the
    whole (the copier's one read of the camera): with them, a backend that sends the
    file in parts of ``part_size`` bytes need not hash the staged copy again, since the
    store checks every part it receives against its digest."""

    sha256: str  # of the whole file, lowercase hex
    part_size: int
    digests: tuple[bytes, ...]  # raw SHA-256 of each part, in order


@dataclass(frozen=True)
class MultipartState:
    upload_id: str
    parts: tuple[PartRecord, ...]


class MultipartJournal(Protocol):
    """Ledger-backed memory of an unfinished multipart upload, so a restart resumes it."""

    def load(self) -> MultipartState | None: ...

    def begin(self, upload_id: str) -> None: ...

    def part_done(self, part: PartRecord) -> None: ...

    def finish(self) -> None: ...


# The retain-until date of the clip being written by this thread (uploader workers are
# threads, each in its own context): what the clip, its sidecars and its custody record
# are locked until. Writes outside a clip (SHA256SUMS, anchors) have none.
_RETAIN_UNTIL: ContextVar[datetime | None] = ContextVar("bwc_dock_retain_until", default=None)


@contextmanager
def retained_until(until: datetime | None) -> Iterator[None]:
    """Objects written inside this block are retained until ``until`` (where the store
    enforces retention; None: no date of the clip's)."""
    token = _RETAIN_UNTIL.set(until)
    try:
        yield
    finally:
        _RETAIN_UNTIL.reset(token)


def current_retain_until() -> datetime | None:
    return _RETAIN_UNTIL.get()


class RetentionUnsupported(UsageError):
    """This storage cannot enforce retention or legal holds."""


@dataclass(frozen=True)
class RetentionChange:
    """What extending one object version's retention did."""

    key: str
    version_id: str
    before: datetime | None  # the retain-until date found
    after: datetime | None  # the date it has now (``before`` when refused)
    refused: bool  # True: the change would have shortened it, so nothing was sent


@dataclass(frozen=True)
class HoldChange:
    key: str
    version_id: str


@dataclass(frozen=True)
class LockCheck:
    """One question ``storage probe`` asked the store, and its answer."""

    name: str  # e.g. "delete_refused"
    passed: bool  # True: the store protected the locked version
    detail: str


FOLDER_CANNOT_RETAIN = (
    "a NAS folder cannot enforce retention or legal holds (anyone with write access to "
    "the share can delete a file); use the s3 backend with a bucket created with Object "
    "Lock enabled and set storage.object_lock_mode"
)


class StorageBackend(ABC):
    """Central evidence storage. Keys are ``/``-separated, already sanitised by the caller."""

    name: str

    @abstractmethod
    def put_file(
        self,
        key: str,
        source: Path,
        sha256: str,
        size: int,
        metadata: Mapping[str, str],
        journal: MultipartJournal | None = None,
        progress: ProgressCallback | None = None,
        part_digests: PartDigests | None = None,
    ) -> StoredObject:
        """Store ``source`` under ``key`` and return once the store confirmed ``sha256``.

        Create-only and idempotent: an object already under ``key`` with the same SHA-256
        counts as success; one with a different SHA-256 raises StorageConflict and is
        never overwritten. Raises TransientStorageError for what may heal,
        PermanentStorageError for what will not, IntegrityError when the stored bytes
        do not hash to ``sha256`` (or the staged copy differs from ``part_digests``,
        the digests of its parts taken in the read that gave ``sha256``, which a
        backend may use instead of hashing the file again).
        """

    def part_size_for(self, size: int) -> int | None:
        """The size of the parts this backend sends a file of ``size`` bytes in, where
        it can use digests of them taken in an earlier read (``part_digests``); None
        where it sends the file whole or hashes it itself."""
        return None

    @abstractmethod
    def put_bytes(
        self, key: str, data: bytes, metadata: Mapping[str, str], *, replace: bool = False
    ) -> StoredObject:
        """Store a small document (a manifest, a SHA256SUMS list).

        Create-only like put_file unless ``replace``: a manifest describes evidence and
        is rewritten when a retry records new times; the evidence itself never is.
        """

    @abstractmethod
    def head(self, key: str) -> StoredObject | None:
        """What is stored under ``key``, or None when nothing is."""

    @abstractmethod
    def read_bytes(self, key: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        """A small document's content (manifests); None if missing. DocumentTooLarge
        when it holds more than ``max_bytes`` (nothing more than that is read)."""

    @abstractmethod
    def read_chunks(self, key: str) -> Generator[bytes]:
        """The stored object's bytes in blocks of at most a few MiB, read as they are
        consumed (memory stays flat whatever the size); close the iterator to stop early.
        A missing key raises PermanentStorageError (RefusalKind.MISSING_OBJECT)."""

    @abstractmethod
    def read_sha256(self, key: str) -> str | None:
        """Download and hash the stored object (for ``verify --remote``); None if missing."""

    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every stored key under the ``/``-separated ``prefix`` ("" = all), sorted.

        Sorted as Python sorts str (code points, which is UTF-8 byte order, S3's own).
        Temporary ``.part`` files and unfinished multipart uploads are not keys. A prefix
        is matched as a string (``"cam1/2026"`` also finds ``"cam1/2026-old/x"``), as S3
        matches it. The folder backend follows no link: a symlink is skipped and logged.
        """

    def list_keys_unordered(self, prefix: str) -> Iterator[str]:
        """The keys list_keys gives, in any order: for a reader that sorts them itself or
        needs no order, where the store can list more cheaply than level by level."""
        return self.list_keys(prefix)

    @abstractmethod
    def copy_object(self, key: str, new_key: str) -> StoredObject:
        """Copy what is stored under ``key`` to ``new_key``, create-only.

        Returns the copy with a SHA-256 the store computed over the whole copied object
        or one this dock computed by reading the copy back, never a metadata claim.
        ``new_key`` already holding the same bytes is success; other bytes raise
        StorageConflict and are left as they are. A missing ``key`` raises
        PermanentStorageError (RefusalKind.MISSING_OBJECT).
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; deleting what is already gone succeeds."""

    @abstractmethod
    def cleanup_partials(self, keep: Collection[str] = frozenset(),
                         folders: Collection[str] | None = None) -> int:
        """Remove leftovers of interrupted writes (``.part`` files, orphaned multipart
        uploads whose id is not in ``keep``: the ledger's wanted ones); return how many.
        ``folders``: look for temporary files only directly in these folders ("" = the
        root), not in the whole store; None walks it all (a hand-run resync)."""

    @abstractmethod
    def check_reachable(self) -> None:
        """Raise a StorageError describing why the store cannot be used right now."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # -- retention and legal hold: only stores that enforce them override these ----------

    def extend_retention(self, key: str, until: datetime) -> list[RetentionChange]:
        """Retain every version of ``key`` until at least ``until``; never shorten one."""
        raise RetentionUnsupported(f"{self.name} backend: {FOLDER_CANNOT_RETAIN}")

    def set_legal_hold(self, key: str, on: bool) -> list[HoldChange]:
        """Turn the legal hold of every version of ``key`` on (or off)."""
        raise RetentionUnsupported(f"{self.name} backend: {FOLDER_CANNOT_RETAIN}")

    def probe_lock(self, canary_key: str) -> list[LockCheck]:
        """Write a locked canary under ``canary_key``, try to destroy it, say what held."""
        raise RetentionUnsupported(f"{self.name} backend: {FOLDER_CANNOT_RETAIN}")
