"""The S3 backend itself: create-only, checksummed, verified puts and the reads around them.

A file below the multipart threshold is one PUT of the buffer that was hashed and
checked against the ledger's SHA-256; a larger one is a multipart upload (multipart.py).
Every write is conditional (``If-None-Match: *``) and starts with a HEAD, except a single
PUT to a store proven to honour the condition; after it a HEAD confirms size and SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection, Generator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bwc_dock.config import StorageConfig
from bwc_dock.errors import (
    IntegrityError,
    PermanentStorageError,
    RefusalKind,
    StorageConflict,
    TransientStorageError,
)
from bwc_dock.logs import get_logger
from bwc_dock.storage.base import (
    MAX_DOCUMENT_BYTES,
    DocumentTooLarge,
    MultipartJournal,
    PartDigests,
    ProgressCallback,
    StorageBackend,
    StoredObject,
)
from bwc_dock.storage.s3.connection import MeteredBody, sha256_base64
from bwc_dock.storage.s3.listing import S3Listing
from bwc_dock.storage.s3.multipart import MemoryJournal, MultipartUploads, Upload, read_exactly
from bwc_dock.storage.s3.retention import S3Retention
from bwc_dock.storage.s3.settings import (
    DEFAULT_ORPHAN_AGE,
    DOWNLOAD_CHUNK,
    MAX_PARTS,
    SHA256_METADATA_KEY,
    S3Settings,
)
from bwc_dock.storage.s3.translate import (
    METADATA_NAME,
    MISSING_KEY_CODES,
    computed_by_store,
    encode_metadata_value,
    error_code,
    is_precondition_failed,
)

logger = get_logger("bwc_dock.storage.s3")

COPY_OBJECT_LIMIT = 5 * 1024 * 1024 * 1024  # the most one CopyObject request copies
_COPY_PART_MINIMUM = 64 * 1024 * 1024  # fewer, larger copy requests; the store moves the bytes
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")

def _stored_composite(response: Mapping[str, Any]) -> str | None:
    """The composite checksum the store reports for a multipart object, if any."""
    checksum = str(response.get("ChecksumSHA256") or "")
    if "-" not in checksum or response.get("ChecksumType") not in (None, "COMPOSITE"):
        return None
    return checksum


class S3Backend(MultipartUploads, S3Retention, S3Listing, StorageBackend):
    """Create-only, checksummed, resumable storage in one bucket under one prefix."""

    name = "s3"
    # Above this, copy_object copies by parts (tests lower it to reach that path).
    single_copy_limit = COPY_OBJECT_LIMIT

    @classmethod
    def from_config(cls, config: StorageConfig, dock_id: str | None = None) -> S3Backend:
        """``dock_id`` names the dock's probe folder; without it the backend never
        probes the store and keeps the HEAD before every write."""
        return cls(S3Settings.from_config(config, dock_id))

    # -- reading ------------------------------------------------------------------------

    def _stored_object(self, key: str, response: Mapping[str, Any]) -> StoredObject:
        """The object as the store reports it. Its SHA-256 is only ever the store's own
        full-object hash: ``x-amz-meta-sha256`` is a claim anyone writing to the bucket
        can set (docs/design.md, trust boundaries), so an object the store keeps no such hash for
        (a multipart upload's composite checksum, a store without checksums) has none."""
        metadata = {name.lower(): value for name, value in response.get("Metadata", {}).items()}
        return StoredObject(key=key, size=int(response["ContentLength"]),
                            sha256=computed_by_store(response), metadata=metadata)

    def head(self, key: str) -> StoredObject | None:
        full_key = self._full_key(key)
        response = self._head_raw(full_key)
        if response is None:
            if not self._bucket_confirmed:
                self._probe_bucket()
            return None
        return self._stored_object(key, response)

    def read_sha256(self, key: str) -> str | None:
        full_key = self._full_key(key)
        digest = hashlib.sha256()
        with self._translated("GET", full_key):
            try:
                response = self._s3().get_object(Bucket=self._settings.bucket, Key=full_key)
            except ClientError as error:
                if error_code(error) in MISSING_KEY_CODES:
                    if not self._bucket_confirmed:
                        self._probe_bucket()
                    return None
                raise
            for chunk in response["Body"].iter_chunks(DOWNLOAD_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def read_chunks(self, key: str) -> Generator[bytes]:
        full_key = self._full_key(key)
        with self._translated("GET", full_key):
            try:
                response = self._s3().get_object(Bucket=self._settings.bucket, Key=full_key)
            except ClientError as error:
                if error_code(error) in MISSING_KEY_CODES:
                    raise PermanentStorageError(
                        f"{self._where(full_key)}: not in central storage",
                        RefusalKind.MISSING_OBJECT,
                    ) from error
                raise
            body = response["Body"]
            try:
                yield from body.iter_chunks(DOWNLOAD_CHUNK)
            finally:
                body.close()

    def check_reachable(self) -> None:
        self._probe_bucket()

    # -- writing ------------------------------------------------------------------------

    def put_bytes(
        self, key: str, data: bytes, metadata: Mapping[str, str], *, replace: bool = False
    ) -> StoredObject:
        expected = hashlib.sha256(data).hexdigest()
        full_key = self._full_key(key)
        guarded = replace or self._needs_head_before()
        existing = self._head_raw(full_key) if guarded else None
        object_metadata = self._object_metadata(metadata, expected)
        if existing is not None:
            stored = self._stored_object(key, existing)
            if replace and stored.sha256 != expected:
                # a document (manifest, SHA256SUMS) rewritten on purpose; never evidence
                self._put_single(full_key, data, object_metadata, None, create_only=False)
                return self._verify(key, expected, len(data))
            return self._accept_existing(key, existing, expected, len(data))
        if not self._put_single(full_key, data, object_metadata, None):
            return self._accept_existing(key, self._require_head_raw(key), expected, len(data))
        return self._verify(key, expected, len(data))

    def read_bytes(self, key: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes | None:
        """One ranged GET: never more than ``max_bytes + 1`` bytes cross the wire."""
        full_key = self._full_key(key)
        with self._translated("GET", full_key):
            try:
                response = self._s3().get_object(
                    Bucket=self._settings.bucket, Key=full_key, Range=f"bytes=0-{max_bytes}"
                )
            except ClientError as error:
                if error_code(error) in MISSING_KEY_CODES:
                    return None
                if error_code(error) == "InvalidRange":  # an empty object
                    return b""
                raise
            stream = response["Body"]
            try:
                body: bytes = stream.read(max_bytes + 1)
            finally:
                stream.close()
        if len(body) > max_bytes:
            raise DocumentTooLarge(key, None, max_bytes)
        return body

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
        expected = sha256.lower()
        if not _HEX_SHA256.match(expected):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        full_key = self._full_key(key)
        actual_size = source.stat().st_size
        if actual_size != size:
            raise IntegrityError(f"{source}: staged copy has {actual_size} bytes,"
                                 f" ledger says {size}")
        object_metadata = self._object_metadata(metadata, expected)
        upload = Upload(full_key, source, expected, size, object_metadata,
                         journal or MemoryJournal(), progress, part_digests)
        single = size < self._settings.multipart_threshold
        # A multipart upload keeps its HEAD: one request beside many parts, and it spares
        # resending every part of a clip that a lost answer left complete.
        guarded = not single or self._needs_head_before()
        existing = self._head_raw(full_key) if guarded else None
        if existing is not None:
            self._abandon(full_key, upload.journal)
            return self._accept_existing(key, existing, expected, size)
        known = None if single else self._digests_from_read(upload)  # from the camera read
        composite = None if single else self._put_multipart(upload, known)
        created = self._put_small_file(upload) if single else composite is not None
        if not created:
            self._abandon(full_key, upload.journal)
            return self._accept_existing(key, self._require_head_raw(key), expected, size)
        stored = self._verify(key, expected, size, composite)
        logger.info("s3.put.verified", key=full_key, sha256=expected, size=size,
                    hashed_here=known is None)
        return stored

    def _object_metadata(self, metadata: Mapping[str, str], sha256: str) -> dict[str, str]:
        cleaned: dict[str, str] = {}
        for name, value in metadata.items():
            lowered = name.lower()
            if not METADATA_NAME.match(lowered):
                raise ValueError(f"not a valid S3 metadata name: {name!r}")
            cleaned[lowered] = encode_metadata_value(value)
        cleaned[SHA256_METADATA_KEY] = sha256
        return cleaned

    def _put_small_file(self, upload: Upload) -> bool:
        with upload.source.open("rb") as file:
            data = read_exactly(file, upload.size, upload.source)
        # one pass: the digest that proves the staged copy is the ledger's is the
        # request's checksum too
        digest = hashlib.sha256(data).digest()
        actual = digest.hex()
        if actual != upload.expected:
            raise IntegrityError(f"{upload.source}: staged copy hashes to {actual},"
                                 f" ledger says {upload.expected}")
        return self._put_single(upload.full_key, data, upload.metadata, upload.progress,
                                checksum=base64.b64encode(digest).decode("ascii"))

    def _put_single(self, full_key: str, data: bytes, metadata: dict[str, str],
                    progress: ProgressCallback | None, *, create_only: bool = True,
                    checksum: str | None = None) -> bool:
        """PUT create-only; False when an object appeared under the key first.
        ``checksum``: the base64 SHA-256 of ``data``, when the caller has it already."""
        checksum = checksum or sha256_base64(data)
        condition = self._create_only() if create_only else {}

        def attempt() -> None:
            self._s3().put_object(
                Bucket=self._settings.bucket, Key=full_key,
                Body=MeteredBody(data, progress) if progress else data,
                ContentLength=len(data), ChecksumSHA256=checksum, Metadata=metadata,
                **condition, **self._lock_parameters(),
            )

        with self._translated("PUT", full_key):
            try:
                self._retrying_conditional(lambda: self._retrying_checksum(attempt, full_key))
            except ClientError as error:
                if is_precondition_failed(error):
                    return False
                raise
        return True

    def _require_head_raw(self, key: str) -> Mapping[str, Any]:
        response = self._head_raw(self._full_key(key))
        if response is None:
            raise TransientStorageError(f"{self._where(self._full_key(key))}: no object to"
                                        " be seen after the write; retry")
        return response

    def _require_head(self, key: str) -> StoredObject:
        return self._stored_object(key, self._require_head_raw(key))

    def _accept_existing(self, key: str, response: Mapping[str, Any], expected: str,
                         size: int) -> StoredObject:
        """Success if what is there is our evidence; StorageConflict otherwise.

        Only the store's own full-object hash or a read of the bytes counts: a metadata
        claim is what anyone writing to the bucket can set (docs/design.md, trust boundaries).
        """
        existing = self._stored_object(key, response)
        sha256 = computed_by_store(response)
        if sha256 is None and existing.size == size:
            sha256 = self.read_sha256(key)  # no hash of the store's own: hash the bytes
        if sha256 == expected and existing.size == size:
            logger.info("s3.put.already_present", key=self._full_key(key), sha256=expected)
            return StoredObject(key, existing.size, expected, existing.metadata)
        raise StorageConflict(
            f"{self._where(self._full_key(key))} already holds a different object"
            f" ({existing.size} bytes, sha256 {sha256 or 'unknown'}; ours: {size} bytes,"
            f" sha256 {expected}); nothing was overwritten"
        )

    def _verify(self, key: str, expected: str, size: int,
                composite: str | None = None) -> StoredObject:
        """After we created the object: proof that the store holds our evidence, before
        anything counts it as uploaded (and a camera may be cleared).

        The proof is the store's own full-object SHA-256; for a multipart upload, the
        store's own composite checksum (SHA-256 over the SHA-256 of each part it
        stored) equal to ``composite``, the one this upload computed from the parts it
        sent, whose bytes hashed, all together, to ``expected`` in the same read; where
        the store reports neither (some stores keep no checksums), the SHA-256 of the
        bytes read back. A HEAD reporting the right size is no proof: a store that
        accepted the PUT and kept nothing can answer that. Each request's
        ``x-amz-checksum-sha256`` only shows the store received the bytes intact."""
        response = self._require_head_raw(key)
        stored = self._stored_object(key, response)
        sha256 = stored.sha256
        if sha256 is None and stored.size == size and composite is not None and (
                _stored_composite(response) == composite):
            sha256 = expected  # the parts the store holds are the parts hashed here
        if sha256 is None and stored.size == size:
            sha256 = self.read_sha256(key)
        if stored.size != size or sha256 != expected:
            raise IntegrityError(
                f"{self._where(self._full_key(key))}: after upload the store holds"
                f" {stored.size} bytes, sha256 {sha256 or 'unreadable'};"
                f" expected {size} bytes, {expected}"
            )
        return StoredObject(key, stored.size, expected, stored.metadata)

    def copy_object(self, key: str, new_key: str) -> StoredObject:
        """Copy inside the store, create-only (HEAD, then ``If-None-Match: *``).

        Up to 5 GiB one CopyObject, asking the store for a full-object SHA-256 of the
        copy; above it (the CopyObject limit) a multipart copy by byte ranges of the
        unchanged source (``x-amz-copy-source-if-match`` its ETag). Where the store
        keeps no full-object SHA-256 of the copy, the copy is downloaded and hashed."""
        full_source, full_target = self._full_key(key), self._full_key(new_key)
        source = self._head_raw(full_source)
        if source is None:
            raise PermanentStorageError(
                f"{self._where(full_source)}: nothing stored there to copy to {new_key}",
                RefusalKind.MISSING_OBJECT)
        size = int(source["ContentLength"])
        existing: Mapping[str, Any] | None = self._head_raw(full_target)
        if existing is None:
            if size > self.single_copy_limit:
                created = self._copy_by_parts(full_source, full_target, size, source)
            else:
                created = self._copy_single(full_source, full_target)
            if created:
                return self._hashed_copy(new_key, size)
            existing = self._require_head_raw(new_key)
        source_sha256 = computed_by_store(source) or self.read_sha256(key)
        if source_sha256 is None:
            raise PermanentStorageError(f"{self._where(full_source)}: vanished while copied",
                                        RefusalKind.MISSING_OBJECT)
        return self._accept_existing(new_key, existing, source_sha256, size)

    def _copy_single(self, full_source: str, full_target: str) -> bool:
        """CopyObject create-only; False when an object appeared under the target first."""
        condition = self._create_only()

        def attempt() -> None:
            self._s3().copy_object(
                Bucket=self._settings.bucket, Key=full_target,
                CopySource={"Bucket": self._settings.bucket, "Key": full_source},
                ChecksumAlgorithm="SHA256", MetadataDirective="COPY",
                **condition, **self._lock_parameters(),
            )

        with self._translated("COPY", full_target):
            try:
                self._retrying_conditional(attempt)
            except ClientError as error:
                if is_precondition_failed(error):
                    return False
                if error_code(error) in MISSING_KEY_CODES:
                    raise PermanentStorageError(
                        f"{self._where(full_source)}: vanished while copied",
                        RefusalKind.MISSING_OBJECT) from error
                raise
        return True

    def _copy_by_parts(self, full_source: str, full_target: str, size: int,
                       source: Mapping[str, Any]) -> bool:
        """Multipart copy create-only; False when an object appeared under the target."""
        bucket = self._settings.bucket
        part_size = max(self._settings.part_size, -(-size // MAX_PARTS), _COPY_PART_MINIMUM)
        with self._translated("COPY MULTIPART", full_target):
            upload_id = str(self._s3().create_multipart_upload(
                Bucket=bucket, Key=full_target, Metadata=dict(source.get("Metadata", {})),
                **self._lock_parameters())["UploadId"])
        try:
            parts: list[dict[str, Any]] = []
            for number, start in enumerate(range(0, size, part_size), start=1):
                last = min(start + part_size, size) - 1
                with self._translated("COPY PART", full_target):
                    result = self._s3().upload_part_copy(
                        Bucket=bucket, Key=full_target, UploadId=upload_id, PartNumber=number,
                        CopySource={"Bucket": bucket, "Key": full_source},
                        CopySourceRange=f"bytes={start}-{last}",
                        CopySourceIfMatch=str(source["ETag"]),
                    )["CopyPartResult"]
                parts.append({"PartNumber": number, "ETag": result["ETag"]})
            return self._complete_copy(full_target, upload_id, parts)
        except BaseException:
            self._abort_quietly(full_target, upload_id)
            raise

    def _complete_copy(self, full_target: str, upload_id: str,
                       parts: list[dict[str, Any]]) -> bool:
        def attempt() -> None:
            self._s3().complete_multipart_upload(
                Bucket=self._settings.bucket, Key=full_target, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, **self._create_only(),
            )

        with self._translated("COMPLETE MULTIPART", full_target):
            try:
                self._retrying_conditional(attempt)
            except ClientError as error:
                if is_precondition_failed(error):
                    self._abort_quietly(full_target, upload_id)
                    return False
                raise
        return True

    def _abort_quietly(self, full_key: str, upload_id: str) -> None:
        try:
            self._s3().abort_multipart_upload(Bucket=self._settings.bucket, Key=full_key,
                                              UploadId=upload_id)
        except (ClientError, BotoCoreError) as error:  # cleanup_partials retries later
            logger.warning("s3.multipart.abort_failed", key=full_key, upload_id=upload_id,
                           error=str(error))

    def _hashed_copy(self, key: str, size: int) -> StoredObject:
        """The copy as stored, with the store's own full-object SHA-256 or a read's."""
        response = self._require_head_raw(key)
        stored = self._stored_object(key, response)
        sha256 = computed_by_store(response) or self.read_sha256(key)
        if stored.size != size or sha256 is None:
            raise IntegrityError(f"{self._where(self._full_key(key))}: the copy holds"
                                 f" {stored.size} bytes (sha256 {sha256}), source {size}")
        logger.info("s3.copy.verified", key=self._full_key(key), sha256=sha256, size=size)
        return StoredObject(key, stored.size, sha256, stored.metadata)

    # -- housekeeping -------------------------------------------------------------------

    def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        with self._translated("DELETE", full_key):
            try:
                self._s3().delete_object(Bucket=self._settings.bucket, Key=full_key)
            except ClientError as error:
                if error_code(error) not in MISSING_KEY_CODES:
                    raise

    def cleanup_partials(
        self,
        keep: Collection[str] = frozenset(),
        folders: Collection[str] | None = None,
        older_than: timedelta = DEFAULT_ORPHAN_AGE,
    ) -> int:
        """Abort multipart uploads under the prefix that no journal wants.

        ``keep`` is the set of upload ids the ledger still wants. Uploads younger than
        ``older_than`` are spared too: one may have just been created and not yet
        journaled by a running uploader. ``folders`` does not narrow it: the store
        lists unfinished uploads itself, without a walk.
        """
        cutoff = datetime.now(UTC) - older_than
        aborted = 0
        with self._translated("LIST MULTIPART", None):
            paginator = self._s3().get_paginator("list_multipart_uploads")
            pages = paginator.paginate(Bucket=self._settings.bucket, Prefix=self._settings.prefix)
            uploads = [upload for page in pages for upload in page.get("Uploads", [])]
        for upload in uploads:
            upload_id, full_key = str(upload["UploadId"]), str(upload["Key"])
            initiated = upload.get("Initiated")
            if upload_id in keep or (isinstance(initiated, datetime) and initiated > cutoff):
                continue
            with self._translated("ABORT MULTIPART", full_key):
                try:
                    self._s3().abort_multipart_upload(Bucket=self._settings.bucket,
                                                      Key=full_key, UploadId=upload_id)
                except ClientError as error:
                    if error_code(error) not in ("NoSuchUpload", "404"):
                        raise
            logger.info("s3.multipart.orphan_aborted", key=full_key, upload_id=upload_id)
            aborted += 1
        return aborted

