"""Multipart uploads: read the file once in order, send parts in parallel.

One thread reads the file, part by part into buffers the backend keeps (part_buffers.py);
a pool sends each part with its own ``x-amz-checksum-sha256``, which the store checks.
The digest of each part comes from one of two places:

- taken in the copier's read of the camera, in the same read as the ledger's SHA-256
  (``PartDigests``), where the store proved it refuses a body that does not match its
  checksum: then nothing is hashed here. A part of the staged copy that differs from
  what was read off the camera is refused by the store, and the upload is aborted with
  an IntegrityError once the part, hashed here, shows the staged copy is at fault;
- otherwise hashed here, and every byte also feeds the SHA-256 of the whole file: the
  upload is completed only if the whole file hashed to the ledger's SHA-256.

Either way the parts the store assembled hash, together, to the ledger's SHA-256. The
upload's id and finished parts go to the caller's MultipartJournal, so a restart resumes
the same upload: finished parts are not sent again.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError

from bwc_dock.errors import IntegrityError, TransientStorageError
from bwc_dock.logs import get_logger
from bwc_dock.storage.base import (
    MultipartJournal,
    MultipartState,
    PartDigests,
    PartRecord,
    ProgressCallback,
)
from bwc_dock.storage.s3.connection import (
    MeteredBody,
    S3Connection,
    composite_checksum,
    sha256_base64,
)
from bwc_dock.storage.s3.settings import MAX_PARTS, MIB
from bwc_dock.storage.s3.translate import (
    error_code,
    is_checksum_rejection,
    is_precondition_failed,
)

logger = get_logger("bwc_dock.storage.s3")


class MemoryJournal:
    """A MultipartJournal that lives only as long as one put_file call (no resume)."""

    def __init__(self) -> None:
        self._state: MultipartState | None = None

    def load(self) -> MultipartState | None:
        return self._state

    def begin(self, upload_id: str) -> None:
        self._state = MultipartState(upload_id=upload_id, parts=())

    def part_done(self, part: PartRecord) -> None:
        assert self._state is not None, "part_done before begin"
        self._state = MultipartState(self._state.upload_id, (*self._state.parts, part))

    def finish(self) -> None:
        self._state = None



@dataclass(frozen=True)
class Upload:
    """One put_file call's inputs, checked."""

    full_key: str
    source: Path
    expected: str  # the ledger's SHA-256, lowercase hex
    size: int
    metadata: dict[str, str]
    journal: MultipartJournal
    progress: ProgressCallback | None
    part_digests: PartDigests | None = None  # taken in the read that gave ``expected``


@dataclass(frozen=True)
class _Part:
    number: int
    offset: int
    length: int


class _StaleUpload(Exception):  # an internal signal; never leaves this package
    """The journaled upload does not hold the parts of this file; start a new one."""



class MultipartUploads(S3Connection):
    """The multipart half of the S3 backend (put_file above the multipart threshold)."""

    def _part_size(self, size: int) -> int:
        part_size = max(self._settings.part_size, -(-size // MAX_PARTS))
        return -(-part_size // MIB) * MIB  # whole MiB, so a resumed plan is the same

    def part_size_for(self, size: int) -> int | None:
        """StorageBackend.part_size_for: the part size of a clip sent by parts, unless the
        store was seen to keep a body that did not match its checksum."""
        if size < self._settings.multipart_threshold or self._checksums_enforced is False:
            return None
        return self._part_size(size)

    def _plan(self, size: int) -> list[_Part]:
        part_size = self._part_size(size)
        return [
            _Part(number=index + 1, offset=offset, length=min(part_size, size - offset))
            for index, offset in enumerate(range(0, size, part_size))
        ]

    def _digests_from_read(self, upload: Upload) -> list[str] | None:
        """Each part's base64 digest as taken in the read that gave the ledger's SHA-256,
        where they fit this upload's parts and the store proved it checks each part
        against its digest; None: the parts are hashed here."""
        given = upload.part_digests
        if given is None or given.sha256 != upload.expected:
            return None
        plan = self._plan(upload.size)
        if given.part_size != self._part_size(upload.size) or len(given.digests) != len(plan):
            return None
        if not self._enforces_checksums():
            return None
        return [base64.b64encode(digest).decode("ascii") for digest in given.digests]

    def _put_multipart(self, upload: Upload, known: list[str] | None) -> str | None:
        """Upload by parts (with ``known``, their digests from the camera read); the
        composite checksum of the parts sent once completed, None when an object
        appeared under the key first."""
        plan = self._plan(upload.size)
        full_key, journal = upload.full_key, upload.journal
        for _ in range(2):  # a stale journaled upload is replaced once by a new one
            upload_id, finished = self._resume_or_begin(full_key, plan, upload.metadata, journal)
            try:
                digest, parts = self._send_parts(upload, upload_id, plan, finished, known)
            except _StaleUpload as stale:
                logger.warning("s3.multipart.restart", key=full_key, upload_id=upload_id,
                               reason=str(stale))
                self._abandon(full_key, journal)
                continue
            except IntegrityError:
                self._abandon(full_key, journal)  # the staged copy is not what was read
                raise
            if digest is not None and digest != upload.expected:
                self._abandon(full_key, journal)
                raise IntegrityError(f"{upload.source}: hashed to {digest} while sending,"
                                     f" ledger says {upload.expected}; the upload was aborted")
            return self._complete(full_key, upload_id, parts, journal)
        raise TransientStorageError(f"{self._where(full_key)}: multipart upload restarted twice")

    def _resume_or_begin(self, full_key: str, plan: list[_Part], metadata: dict[str, str],
                         journal: MultipartJournal) -> tuple[str, dict[int, PartRecord]]:
        state = journal.load()
        if state is not None:
            listed = self._listed_parts(full_key, state.upload_id)
            if listed is not None:
                finished = _usable_parts(state, listed, plan)
                logger.info("s3.multipart.resume", key=full_key, upload_id=state.upload_id,
                            finished_parts=len(finished), parts=len(plan))
                return state.upload_id, finished
            logger.warning("s3.multipart.vanished", key=full_key, upload_id=state.upload_id)
            journal.finish()
        with self._translated("CREATE MULTIPART", full_key):
            response = self._s3().create_multipart_upload(
                Bucket=self._settings.bucket, Key=full_key, Metadata=metadata,
                ChecksumAlgorithm="SHA256", **self._lock_parameters(),
            )
        upload_id = str(response["UploadId"])
        journal.begin(upload_id)
        logger.info("s3.multipart.begin", key=full_key, upload_id=upload_id, parts=len(plan))
        return upload_id, {}

    def _listed_parts(self, full_key: str, upload_id: str) -> dict[int, tuple[str, int]] | None:
        """Part number -> (ETag, size) as the store lists them; None if the upload is gone."""
        listed: dict[int, tuple[str, int]] = {}
        with self._translated("LIST PARTS", full_key):
            try:
                paginator = self._s3().get_paginator("list_parts")
                pages = paginator.paginate(Bucket=self._settings.bucket, Key=full_key,
                                           UploadId=upload_id)
                for page in pages:
                    for part in page.get("Parts", []):
                        listed[int(part["PartNumber"])] = (str(part["ETag"]), int(part["Size"]))
            except ClientError as error:
                if error_code(error) in ("NoSuchUpload", "404"):
                    return None
                raise
        return listed

    def _send_parts(self, upload: Upload, upload_id: str, plan: list[_Part],
                    finished: dict[int, PartRecord], known: list[str] | None,
                    ) -> tuple[str | None, list[PartRecord]]:
        """Read the file in order while the pool sends the parts not yet finished; the
        SHA-256 of the whole file, hashed on the way unless the parts' digests are
        ``known`` (then None)."""
        whole = None if known is not None else hashlib.sha256()
        done = dict(finished)
        journal = upload.journal
        concurrency = self._settings.concurrency
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
        pending: set[Future[PartRecord]] = set()
        try:
            with upload.source.open("rb") as file:
                for part in plan:
                    digest = None if known is None else known[part.number - 1]
                    if digest is not None and part.number in finished:
                        _check_finished_part(finished[part.number], digest, part.length)
                        continue  # nothing to hash: the part need not be read
                    file.seek(part.offset)
                    data = self._part_buffers.take(part.length)
                    read_into(file, data, upload.source)
                    if whole is not None:
                        whole.update(data)
                    if part.number in finished:
                        _check_finished_part(finished[part.number], sha256_base64(data),
                                             len(data))
                        self._part_buffers.give_back(data)
                        continue
                    while len(pending) >= concurrency:
                        pending = self._collect(pending, journal, done)
                    sent = pool.submit(self._upload_part_then_give_back, upload.full_key,
                                       upload_id, (part.number, digest), data,
                                       upload.progress)
                    pending.add(sent)
            while pending:
                pending = self._collect(pending, journal, done)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _journal_succeeded(pending, journal, done)
        return (None if whole is None else whole.hexdigest()), [done[p.number] for p in plan]

    @staticmethod
    def _collect(pending: set[Future[PartRecord]], journal: MultipartJournal,
                 done: dict[int, PartRecord]) -> set[Future[PartRecord]]:
        """Journal the parts that finished (in this thread: the journal may be a ledger)."""
        completed, still_pending = wait(pending, return_when=FIRST_COMPLETED)
        failure: BaseException | None = None
        for future in completed:
            error = future.exception()
            if error is not None:
                failure = failure or error
                continue
            record = future.result()
            journal.part_done(record)
            done[record.number] = record
        if failure is not None:
            raise failure  # the caller's finally cancels the parts not yet started
        return still_pending

    def _upload_part_then_give_back(self, full_key: str, upload_id: str,
                                    part: tuple[int, str | None], data: bytearray,
                                    progress: ProgressCallback | None) -> PartRecord:
        """_upload_part, then ``data`` kept for a later part: never before it was sent or
        failed, and before the reading thread learns the part is done, so that thread
        finds it free instead of making another. (A part cancelled before it ran leaves
        its buffer to the garbage collector.)"""
        try:
            return self._upload_part(full_key, upload_id, part, data, progress)
        finally:
            self._part_buffers.give_back(data)

    def _upload_part(self, full_key: str, upload_id: str, part: tuple[int, str | None],
                     data: bytearray, progress: ProgressCallback | None) -> PartRecord:
        """Send part ``number`` with its digest (``known``: taken in the camera read, else
        hashed here)."""
        number, known = part
        checksum = known or sha256_base64(data)

        def attempt() -> dict[str, Any]:
            try:
                response: dict[str, Any] = self._s3().upload_part(
                    Bucket=self._settings.bucket, Key=full_key, UploadId=upload_id,
                    PartNumber=number, Body=MeteredBody(data, progress) if progress else data,
                    ContentLength=len(data), ChecksumSHA256=checksum,
                )
            except ClientError as error:
                # refused: damaged on the way (sent again), or a staged copy that is not
                # what was read off the camera (hashed here once, to tell which)
                if known and is_checksum_rejection(error) and sha256_base64(data) != known:
                    raise IntegrityError(
                        f"{self._where(full_key)}: part {number} of the staged copy differs"
                        " from what was read off the camera (the store refused it); the"
                        " upload was aborted") from error
                raise
            return response

        with self._translated(f"PUT part {number}", full_key):
            try:
                response = self._retrying_checksum(attempt, f"part {number} of {full_key}")
            except ClientError as error:
                if error_code(error) == "NoSuchUpload":
                    raise _StaleUpload(f"upload {upload_id} is gone") from error
                raise
        confirmed = response.get("ChecksumSHA256")
        if confirmed and confirmed != checksum:
            raise IntegrityError(f"{self._where(full_key)}: part {number} stored with checksum"
                                 f" {confirmed}, sent {checksum}")
        return PartRecord(number=number, etag=str(response["ETag"]), checksum=checksum,
                          size=len(data))

    def _complete(self, full_key: str, upload_id: str, parts: list[PartRecord],
                  journal: MultipartJournal) -> str | None:
        """Complete create-only; the composite checksum of ``parts``, or None when an
        object appeared under the key first."""
        listing = [{"PartNumber": part.number, "ETag": part.etag, "ChecksumSHA256": part.checksum}
                   for part in parts]
        def attempt() -> dict[str, Any]:
            response: dict[str, Any] = self._s3().complete_multipart_upload(
                Bucket=self._settings.bucket, Key=full_key, UploadId=upload_id,
                MultipartUpload={"Parts": listing}, **self._create_only(),
            )
            return response

        with self._translated("COMPLETE MULTIPART", full_key):
            try:
                response = self._retrying_conditional(attempt)
            except ClientError as error:
                if is_precondition_failed(error):
                    self._abandon(full_key, journal)
                    return None
                if error_code(error) == "NoSuchUpload":
                    # completed by an earlier try whose answer was lost, or aborted: the
                    # HEAD that follows tells which
                    journal.finish()
                    return None
                raise
        journal.finish()
        expected = composite_checksum([part.checksum for part in parts])
        reported = response.get("ChecksumSHA256")
        if reported and reported != expected:
            raise IntegrityError(f"{self._where(full_key)}: the store assembled checksum"
                                 f" {reported}, the parts sent make {expected}")
        return expected

    def _abandon(self, full_key: str, journal: MultipartJournal) -> None:
        """Abort the journaled upload (if any) and forget it."""
        state = journal.load()
        if state is None:
            return
        with self._translated("ABORT MULTIPART", full_key):
            try:
                self._s3().abort_multipart_upload(Bucket=self._settings.bucket, Key=full_key,
                                                  UploadId=state.upload_id)
            except ClientError as error:
                if error_code(error) not in ("NoSuchUpload", "404"):
                    raise
        journal.finish()
        logger.info("s3.multipart.aborted", key=full_key, upload_id=state.upload_id)



def read_exactly(file: IO[bytes], length: int, source: Path) -> bytes:
    data = file.read(length)
    if len(data) != length:
        raise _ended_early(source)
    return data


def read_into(file: io.BufferedReader, buffer: bytearray, source: Path) -> None:
    """Fill all of ``buffer`` from ``file``."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        count = file.readinto(view[filled:])
        if not count:
            raise _ended_early(source)
        filled += count


def _ended_early(source: Path) -> IntegrityError:
    return IntegrityError(f"{source}: the staged copy ended early (file shrank while sending)")


def _journal_succeeded(futures: Collection[Future[PartRecord]], journal: MultipartJournal,
                       done: dict[int, PartRecord]) -> None:
    """After a failure, keep the parts that did get through, so a retry skips them."""
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is None:
            record = future.result()
            if record.number not in done:
                journal.part_done(record)
                done[record.number] = record


def _check_finished_part(record: PartRecord, checksum: str, size: int) -> None:
    """A journaled part counts only if this file's part (its digest, from the camera read
    or hashed here) is what the store verified for it."""
    if record.size != size or record.checksum != checksum:
        raise _StaleUpload(f"part {record.number} on the store is not this file's part")


def _usable_parts(state: MultipartState, listed: Mapping[int, tuple[str, int]],
                  plan: list[_Part]) -> dict[int, PartRecord]:
    """Journaled parts that the store still lists with the same ETag and size."""
    lengths = {part.number: part.length for part in plan}
    usable: dict[int, PartRecord] = {}
    for record in state.parts:
        if lengths.get(record.number) != record.size:
            continue
        if listed.get(record.number) == (record.etag, record.size):
            usable[record.number] = record
    return usable
