"""Central storage on any S3-compatible object store (AWS S3, MinIO, Ceph, SeaweedFS).

How a clip gets there, and why it is proven equal to the evidence hash:

- Below the multipart threshold: one PUT. The file is read once into memory, hashed,
  and refused with IntegrityError if it is not the ledger's SHA-256; the same buffer is
  sent with ``x-amz-checksum-sha256``, which the store verifies against the bytes it got.
- Above it: a multipart upload. One thread reads the file in order, feeds every byte
  into the running SHA-256 of the whole file, and hands each part to a pool that sends
  it with its own ``x-amz-checksum-sha256``. The upload is completed only if the whole
  file hashed to the ledger's SHA-256; the store's composite checksum (SHA-256 of the
  part digests) is checked against ours. The upload id and finished parts go to the
  caller's MultipartJournal, so a restart resumes the same upload: finished parts are
  re-read and re-hashed locally (their SHA-256 must equal what the store verified)
  but not sent again.
- SHA-256 rather than a CRC for the per-request checksum: a CRC only catches accidents,
  while the part checksums are what proves, without downloading, that the store holds
  the parts of the evidence. It costs one extra SHA-256 pass over multipart uploads
  (about 0.8 CPU s/GiB with SHA-NI), done in the upload threads. Payload signing is
  turned off because the signed checksum header already binds the body; that saves
  botocore's own SHA-256 pass on plain-http endpoints.
- Writes are create-only: a HEAD first (cheap, and the only guard on stores that ignore
  conditional writes), then ``If-None-Match: *`` on the PUT and on the completion. An
  object already there with the same SHA-256 is success (a retry after a lost
  response); a different one is StorageConflict, never an overwrite.
- The evidence SHA-256 is stored as metadata ``x-amz-meta-sha256`` (lowercase hex) and
  a HEAD after the upload confirms size and hash.

Retries: botocore runs in "standard" mode with 3 attempts for what it knows to be
transient (connection errors, timeouts, 5xx, throttling). Inside one put_file call we
retry only what botocore does not: a request the store rejected because its checksum
did not match (bytes damaged in flight). Everything else surfaces as
TransientStorageError or PermanentStorageError for the uploader's own backoff, so the
layers do not multiply.

Credentials: the standard AWS chain (environment, shared credentials file, instance
roles). Under systemd, ``LoadCredential=aws-credentials:...`` puts an AWS
shared-credentials file in ``$CREDENTIALS_DIRECTORY``, which then serves as the
shared credentials file. Never the configuration file.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlsplit

import boto3
import botocore.session
import structlog
import tenacity
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from bwc_dock.config import StorageConfig
from bwc_dock.errors import (
    IntegrityError,
    PermanentStorageError,
    StorageConflict,
    StorageError,
    TransientStorageError,
)
from bwc_dock.storage.base import (
    MultipartJournal,
    MultipartState,
    PartRecord,
    ProgressCallback,
    StorageBackend,
    StoredObject,
)

logger = structlog.get_logger(__name__)

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # the S3 minimum for every part but the last
MAX_PARTS = 10_000  # the S3 maximum number of parts
SHA256_METADATA_KEY = "sha256"  # stored as x-amz-meta-sha256
CREDENTIAL_FILE_NAME = "aws-credentials"  # in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)
BOTOCORE_ATTEMPTS = 3  # botocore's own tries per request, first one included
CHECKSUM_ATTEMPTS = 3  # our tries when the store rejects a request's checksum
DOWNLOAD_CHUNK = 1 * MIB
DEFAULT_ORPHAN_AGE = timedelta(hours=1)

_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_METADATA_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Printable ASCII except '%', which introduces our percent-escapes of anything else.
_METADATA_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")

# Error codes, grouped by what the uploader can do about them.
_CHECKSUM_REJECTIONS = frozenset(
    {"BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest", "InvalidChecksum"}
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
    }
)
_THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "InternalError",
        "OperationAborted",
        "ConditionalRequestConflict",
    }
)
_MISSING_KEY_CODES = frozenset({"404", "NoSuchKey", "NotFound"})

_Result = TypeVar("_Result")


@dataclass(frozen=True)
class S3Settings:
    """The S3 backend's settings, in bytes and plain values (from StorageConfig)."""

    bucket: str
    endpoint_url: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    addressing_style: str = "auto"
    ca_bundle: Path | None = None
    multipart_threshold: int = 64 * MIB
    part_size: int = 16 * MIB
    concurrency: int = 4
    object_lock_mode: str | None = None
    object_lock_days: int | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 120.0

    @classmethod
    def from_config(cls, config: StorageConfig) -> S3Settings:
        if not config.bucket:
            raise PermanentStorageError("storage.bucket: required for the s3 backend")
        prefix = config.prefix.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(
            bucket=config.bucket,
            endpoint_url=config.endpoint_url,
            prefix=prefix,
            region=config.region,
            addressing_style=config.addressing_style,
            ca_bundle=config.ca_bundle,
            multipart_threshold=config.multipart_threshold_mb * MIB,
            part_size=max(config.multipart_part_mb * MIB, MIN_PART_SIZE),
            concurrency=config.multipart_concurrency,
            object_lock_mode=config.object_lock_mode,
            object_lock_days=config.object_lock_days,
        )


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
class _Upload:
    """One put_file call's inputs, checked."""

    full_key: str
    source: Path
    expected: str  # the ledger's SHA-256, lowercase hex
    size: int
    metadata: dict[str, str]
    journal: MultipartJournal
    progress: ProgressCallback | None


@dataclass(frozen=True)
class _Part:
    number: int
    offset: int
    length: int


class _StaleUpload(Exception):  # an internal signal; never leaves this module
    """The journaled upload does not hold the parts of this file; start a new one."""


class _MeteredBody(io.BytesIO):
    """A request body that reports each chunk read from it (for the bandwidth limiter)."""

    def __init__(self, data: bytes, progress: ProgressCallback) -> None:
        super().__init__(data)  # shares the bytes; no copy until written to
        self._progress = progress

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if chunk:
            self._progress(len(chunk))
        return chunk


def sha256_base64(data: bytes) -> str:
    """The base64 SHA-256 of ``data``, as S3's x-amz-checksum-sha256 wants it."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def composite_checksum(part_checksums: Collection[str]) -> str:
    """S3's checksum of a multipart object: SHA-256 over the part digests, ``-N``."""
    joined = b"".join(base64.b64decode(checksum) for checksum in part_checksums)
    return f"{sha256_base64(joined)}-{len(part_checksums)}"


def systemd_credential_file() -> Path | None:
    """The AWS shared-credentials file systemd passed to the service, if any."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    candidate = Path(directory) / CREDENTIAL_FILE_NAME
    return candidate if candidate.is_file() else None


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _is_checksum_rejection(error: BaseException) -> bool:
    return isinstance(error, ClientError) and _error_code(error) in _CHECKSUM_REJECTIONS


def _is_precondition_failed(error: ClientError) -> bool:
    return _error_code(error) == "PreconditionFailed" or _status(error) == 412


def _encode_metadata_value(value: str) -> str:
    """S3 metadata travels in HTTP headers: printable ASCII only, the rest %-escaped."""
    return quote(value, safe=_METADATA_SAFE)


class S3Backend(StorageBackend):
    """Create-only, checksummed, resumable storage in one bucket under one prefix."""

    name = "s3"

    def __init__(self, settings: S3Settings, session: boto3.Session | None = None) -> None:
        self._settings = settings
        self._session = session
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._bucket_confirmed = False
        # Cleared when the store answers NotImplemented to If-None-Match; the HEAD before
        # every write is then the only create-only guard.
        self._conditional_writes = True
        if settings.endpoint_url and urlsplit(settings.endpoint_url).scheme == "http":
            logger.warning("s3.cleartext_endpoint", endpoint=settings.endpoint_url,
                           why="no TLS: bodies are checksummed but not confidential")

    @classmethod
    def from_config(cls, config: StorageConfig) -> S3Backend:
        return cls(S3Settings.from_config(config))

    # -- the client ---------------------------------------------------------------------

    def _new_session(self) -> boto3.Session:
        core = botocore.session.Session()
        credential_file = systemd_credential_file()
        if credential_file is not None:
            core.set_config_variable("credentials_file", str(credential_file))
        return boto3.Session(botocore_session=core, region_name=self._settings.region)

    def _s3(self) -> Any:
        """The boto3 client, made on first use (and again after credentials were refused)."""
        with self._client_lock:
            if self._client is None:
                settings = self._settings
                s3_options: Any = {"addressing_style": settings.addressing_style,
                                   "payload_signing_enabled": False}
                config = BotoConfig(
                    region_name=settings.region,
                    signature_version="s3v4",
                    s3=s3_options,
                    retries={"mode": "standard", "total_max_attempts": BOTOCORE_ATTEMPTS},
                    connect_timeout=settings.connect_timeout,
                    read_timeout=settings.read_timeout,
                    max_pool_connections=settings.concurrency + 4,
                    tcp_keepalive=True,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                session = self._session or self._new_session()
                # verify=None keeps verification on with the default (or AWS_CA_BUNDLE) roots
                self._client = session.client(
                    "s3",
                    endpoint_url=settings.endpoint_url,
                    verify=str(settings.ca_bundle) if settings.ca_bundle else None,
                    config=config,
                )
            return self._client

    def _forget_client(self) -> None:
        """Drop the client so fixed credentials are read again on the next call.

        Not closed here: other upload threads may still be using it.
        """
        with self._client_lock:
            self._client = None

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- keys and errors ----------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        if not key or key.startswith("/") or "\x00" in key:
            raise ValueError(f"not a storage key: {key!r}")
        return self._settings.prefix + key

    def _where(self, full_key: str | None = None) -> str:
        endpoint = self._settings.endpoint_url or "AWS S3"
        target = f"s3://{self._settings.bucket}/{full_key or ''}"
        return f"{target} at {endpoint}"

    def _translate(self, error: Exception, action: str, full_key: str | None) -> StorageError:
        """The one place that decides what an S3 failure means and what to do about it."""
        where = self._where(full_key)
        if isinstance(error, ClientError):
            return self._translate_client_error(error, action, where)
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            return PermanentStorageError(
                f"{action} {where}: no usable S3 credentials ({error}); set AWS_ACCESS_KEY_ID"
                f" and AWS_SECRET_ACCESS_KEY, an AWS credentials file, or the systemd"
                f" credential {CREDENTIAL_FILE_NAME}"
            )
        if isinstance(error, SSLError):
            return PermanentStorageError(
                f"{action} {where}: TLS verification failed ({error}); install the store's CA"
                f" and point storage.ca_bundle at it"
            )
        if isinstance(error, BotoConnectionError | HTTPClientError | ResponseStreamingError):
            return TransientStorageError(f"{action} {where}: store unreachable: {error}")
        if isinstance(error, BotoCoreError):
            return PermanentStorageError(f"{action} {where}: {error}")
        return TransientStorageError(f"{action} {where}: {error}")

    def _translate_client_error(self, error: ClientError, action: str, where: str) -> StorageError:
        code, status = _error_code(error), _status(error)
        said = f"{code or status}: {error.response.get('Error', {}).get('Message', '')}".strip()
        if code in _CREDENTIAL_CODES:
            self._forget_client()
            return PermanentStorageError(
                f"{action} {where}: the store refused the credentials ({said}); check the"
                f" access key and secret (environment, AWS credentials file or systemd"
                f" credential {CREDENTIAL_FILE_NAME}) and storage.region"
            )
        if code == "NoSuchBucket":
            self._bucket_confirmed = False
            return PermanentStorageError(
                f"{action} {where}: bucket {self._settings.bucket!r} does not exist; create it"
                f" (with Object Lock if storage.object_lock_mode is set) or fix storage.bucket"
            )
        if code == "AccessDenied" or status == 403:
            return PermanentStorageError(
                f"{action} {where}: access denied ({said}); grant this key s3:PutObject,"
                f" s3:GetObject, s3:ListBucket and the multipart permissions on the bucket"
            )
        if code in _THROTTLING_CODES or code in _CHECKSUM_REJECTIONS or status >= 500:
            return TransientStorageError(f"{action} {where}: store busy or failing ({said})")
        if code in ("PermanentRedirect", "IllegalLocationConstraintException"):
            return PermanentStorageError(
                f"{action} {where}: the bucket lives elsewhere ({said}); check storage.region,"
                f" storage.endpoint_url and storage.addressing_style"
            )
        return PermanentStorageError(f"{action} {where}: refused ({said})")

    @contextmanager
    def _translated(self, action: str, full_key: str | None = None) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, action, full_key) from error

    def _retrying_checksum(self, call: Callable[[], _Result], what: str) -> _Result:
        """Run ``call`` again when the store rejected its checksum (bytes damaged in flight)."""

        def log_retry(state: tenacity.RetryCallState) -> None:
            logger.warning("s3.checksum_rejected", request=what, attempt=state.attempt_number)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(CHECKSUM_ATTEMPTS),
            retry=tenacity.retry_if_exception(_is_checksum_rejection),
            wait=tenacity.wait_exponential(multiplier=0.2, max=2),
            before_sleep=log_retry,
            reraise=True,
        )
        return retrying(call)

    # -- reading ------------------------------------------------------------------------

    def _head_raw(self, full_key: str) -> dict[str, Any] | None:
        """HEAD the object; None when the store has nothing under the key."""
        with self._translated("HEAD", full_key):
            try:
                response: dict[str, Any] = self._s3().head_object(
                    Bucket=self._settings.bucket, Key=full_key, ChecksumMode="ENABLED"
                )
            except ClientError as error:
                if _error_code(error) in _MISSING_KEY_CODES:
                    return None
                if _status(error) == 403:
                    # A HEAD answer has no body, so a 403 does not say whether the key or
                    # the credentials are at fault; a listing raises the precise error.
                    self._probe_bucket()
                raise
        return response

    def _probe_bucket(self) -> None:
        """Raise the precise error when the bucket is missing or the credentials are bad."""
        with self._translated("LIST", None):
            self._s3().list_objects_v2(
                Bucket=self._settings.bucket, Prefix=self._settings.prefix, MaxKeys=1
            )
        self._bucket_confirmed = True

    def _stored_object(self, key: str, response: Mapping[str, Any]) -> StoredObject:
        metadata = {name.lower(): value for name, value in response.get("Metadata", {}).items()}
        claimed = metadata.get(SHA256_METADATA_KEY, "").lower()
        store_checksum = str(response.get("ChecksumSHA256") or "")
        computed_by_store = None
        whole_object = response.get("ChecksumType") != "COMPOSITE" and "-" not in store_checksum
        if store_checksum and whole_object:
            computed_by_store = base64.b64decode(store_checksum).hex()
        # The store's own full-object hash, where it kept one, outranks our metadata claim.
        sha256 = computed_by_store or (claimed if _HEX_SHA256.match(claimed) else None)
        return StoredObject(key=key, size=int(response["ContentLength"]), sha256=sha256,
                            metadata=metadata)

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
                if _error_code(error) in _MISSING_KEY_CODES:
                    if not self._bucket_confirmed:
                        self._probe_bucket()
                    return None
                raise
            for chunk in response["Body"].iter_chunks(DOWNLOAD_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def check_reachable(self) -> None:
        self._probe_bucket()

    # -- writing ------------------------------------------------------------------------

    def put_bytes(
        self, key: str, data: bytes, metadata: Mapping[str, str], *, replace: bool = False
    ) -> StoredObject:
        expected = hashlib.sha256(data).hexdigest()
        full_key = self._full_key(key)
        existing = self._head_raw(full_key)
        object_metadata = self._object_metadata(metadata, expected)
        if existing is not None:
            stored = self._stored_object(key, existing)
            if replace and stored.sha256 != expected:
                # a document (manifest, SHA256SUMS) rewritten on purpose; never evidence
                self._put_single(full_key, data, object_metadata, None, create_only=False)
                return self._verify(key, expected, len(data))
            return self._accept_existing(key, stored, expected, len(data))
        if not self._put_single(full_key, data, object_metadata, None):
            return self._accept_existing(key, self._require_head(key), expected, len(data))
        return self._verify(key, expected, len(data))

    def read_bytes(self, key: str) -> bytes | None:
        full_key = self._full_key(key)
        with self._translated("GET", full_key):
            try:
                response = self._s3().get_object(Bucket=self._settings.bucket, Key=full_key)
            except ClientError as error:
                if _error_code(error) in _MISSING_KEY_CODES:
                    return None
                raise
            body: bytes = response["Body"].read()
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
        upload = _Upload(full_key, source, expected, size, object_metadata,
                         journal or MemoryJournal(), progress)
        existing = self._head_raw(full_key)
        if existing is not None:
            self._abandon(full_key, upload.journal)
            return self._accept_existing(key, self._stored_object(key, existing), expected, size)
        if size < self._settings.multipart_threshold:
            created = self._put_small_file(upload)
        else:
            created = self._put_multipart(upload)
        if not created:
            return self._accept_existing(key, self._require_head(key), expected, size)
        stored = self._verify(key, expected, size)
        logger.info("s3.put.verified", key=full_key, sha256=expected, size=size)
        return stored

    def _object_metadata(self, metadata: Mapping[str, str], sha256: str) -> dict[str, str]:
        cleaned: dict[str, str] = {}
        for name, value in metadata.items():
            lowered = name.lower()
            if not _METADATA_NAME.match(lowered):
                raise ValueError(f"not a valid S3 metadata name: {name!r}")
            cleaned[lowered] = _encode_metadata_value(value)
        cleaned[SHA256_METADATA_KEY] = sha256
        return cleaned

    def _lock_parameters(self) -> dict[str, Any]:
        settings = self._settings
        if not settings.object_lock_mode or not settings.object_lock_days:
            return {}
        until = datetime.now(UTC) + timedelta(days=settings.object_lock_days)
        return {"ObjectLockMode": settings.object_lock_mode, "ObjectLockRetainUntilDate": until}

    def _put_small_file(self, upload: _Upload) -> bool:
        with upload.source.open("rb") as file:
            data = _read_exactly(file, upload.size, upload.source)
        actual = hashlib.sha256(data).hexdigest()
        if actual != upload.expected:
            raise IntegrityError(f"{upload.source}: staged copy hashes to {actual},"
                                 f" ledger says {upload.expected}")
        return self._put_single(upload.full_key, data, upload.metadata, upload.progress)

    def _put_single(self, full_key: str, data: bytes, metadata: dict[str, str],
                    progress: ProgressCallback | None, *, create_only: bool = True) -> bool:
        """PUT create-only; False when an object appeared under the key first."""
        checksum = sha256_base64(data)
        condition = self._create_only() if create_only else {}

        def attempt() -> None:
            self._s3().put_object(
                Bucket=self._settings.bucket, Key=full_key,
                Body=_MeteredBody(data, progress) if progress else data,
                ContentLength=len(data), ChecksumSHA256=checksum, Metadata=metadata,
                **condition, **self._lock_parameters(),
            )

        with self._translated("PUT", full_key):
            try:
                self._retrying_conditional(lambda: self._retrying_checksum(attempt, full_key))
            except ClientError as error:
                if _is_precondition_failed(error):
                    return False
                raise
        return True

    def _create_only(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self._conditional_writes else {}

    def _retrying_conditional(self, call: Callable[[], _Result]) -> _Result:
        """Run ``call``; once more without If-None-Match if the store does not know it."""
        try:
            return call()
        except ClientError as error:
            if _error_code(error) != "NotImplemented" or not self._conditional_writes:
                raise
            self._conditional_writes = False
            logger.warning("s3.conditional_writes_unsupported",
                           endpoint=self._settings.endpoint_url,
                           why="only the HEAD before each write guards against overwrites")
            return call()

    def _require_head(self, key: str) -> StoredObject:
        stored = self.head(key)
        if stored is None:
            raise TransientStorageError(f"{self._where(self._full_key(key))}: no object to"
                                        " be seen after the write; retry")
        return stored

    def _accept_existing(self, key: str, existing: StoredObject, expected: str,
                         size: int) -> StoredObject:
        """Success if what is there is our evidence; StorageConflict otherwise."""
        sha256 = existing.sha256
        if sha256 is None and existing.size == size:
            sha256 = self.read_sha256(key)  # no hash on record: hash the bytes themselves
        if sha256 == expected and existing.size == size:
            logger.info("s3.put.already_present", key=self._full_key(key), sha256=expected)
            return StoredObject(key, existing.size, expected, existing.metadata)
        raise StorageConflict(
            f"{self._where(self._full_key(key))} already holds a different object"
            f" ({existing.size} bytes, sha256 {sha256 or 'unknown'}; ours: {size} bytes,"
            f" sha256 {expected}); nothing was overwritten"
        )

    def _verify(self, key: str, expected: str, size: int) -> StoredObject:
        stored = self._require_head(key)
        if stored.size != size or stored.sha256 != expected:
            raise IntegrityError(
                f"{self._where(self._full_key(key))}: after upload the store reports"
                f" {stored.size} bytes, sha256 {stored.sha256}; expected {size} bytes, {expected}"
            )
        return stored

    # -- multipart ----------------------------------------------------------------------

    def _plan(self, size: int) -> list[_Part]:
        part_size = max(self._settings.part_size, -(-size // MAX_PARTS))
        part_size = -(-part_size // MIB) * MIB  # whole MiB, so a resumed plan is the same
        return [
            _Part(number=index + 1, offset=offset, length=min(part_size, size - offset))
            for index, offset in enumerate(range(0, size, part_size))
        ]

    def _put_multipart(self, upload: _Upload) -> bool:
        plan = self._plan(upload.size)
        full_key, journal = upload.full_key, upload.journal
        for _ in range(2):  # a stale journaled upload is replaced once by a new one
            upload_id, finished = self._resume_or_begin(full_key, plan, upload.metadata, journal)
            try:
                digest, parts = self._send_parts(upload, upload_id, plan, finished)
            except _StaleUpload as stale:
                logger.warning("s3.multipart.restart", key=full_key, upload_id=upload_id,
                               reason=str(stale))
                self._abandon(full_key, journal)
                continue
            if digest != upload.expected:
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
                if _error_code(error) in ("NoSuchUpload", "404"):
                    return None
                raise
        return listed

    def _send_parts(self, upload: _Upload, upload_id: str, plan: list[_Part],
                    finished: dict[int, PartRecord]) -> tuple[str, list[PartRecord]]:
        """Hash the whole file in order while the pool sends the parts not yet finished."""
        whole = hashlib.sha256()
        done = dict(finished)
        journal = upload.journal
        concurrency = self._settings.concurrency
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
        pending: set[Future[PartRecord]] = set()
        try:
            with upload.source.open("rb") as file:
                for part in plan:
                    data = _read_exactly(file, part.length, upload.source)
                    whole.update(data)
                    if part.number in finished:
                        _check_finished_part(finished[part.number], data)
                        continue
                    while len(pending) >= concurrency:
                        pending = self._collect(pending, journal, done)
                    pending.add(pool.submit(self._upload_part, upload.full_key, upload_id,
                                            part.number, data, upload.progress))
            while pending:
                pending = self._collect(pending, journal, done)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _journal_succeeded(pending, journal, done)
        return whole.hexdigest(), [done[part.number] for part in plan]

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

    def _upload_part(self, full_key: str, upload_id: str, number: int, data: bytes,
                     progress: ProgressCallback | None) -> PartRecord:
        checksum = sha256_base64(data)

        def attempt() -> dict[str, Any]:
            response: dict[str, Any] = self._s3().upload_part(
                Bucket=self._settings.bucket, Key=full_key, UploadId=upload_id,
                PartNumber=number, Body=_MeteredBody(data, progress) if progress else data,
                ContentLength=len(data), ChecksumSHA256=checksum,
            )
            return response

        with self._translated(f"PUT part {number}", full_key):
            try:
                response = self._retrying_checksum(attempt, f"part {number} of {full_key}")
            except ClientError as error:
                if _error_code(error) == "NoSuchUpload":
                    raise _StaleUpload(f"upload {upload_id} is gone") from error
                raise
        confirmed = response.get("ChecksumSHA256")
        if confirmed and confirmed != checksum:
            raise IntegrityError(f"{self._where(full_key)}: part {number} stored with checksum"
                                 f" {confirmed}, sent {checksum}")
        return PartRecord(number=number, etag=str(response["ETag"]), checksum=checksum,
                          size=len(data))

    def _complete(self, full_key: str, upload_id: str, parts: list[PartRecord],
                  journal: MultipartJournal) -> bool:
        """Complete create-only; False when an object appeared under the key first."""
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
                if _is_precondition_failed(error):
                    self._abandon(full_key, journal)
                    return False
                if _error_code(error) == "NoSuchUpload":
                    # completed by an earlier try whose answer was lost, or aborted: the
                    # HEAD that follows tells which
                    journal.finish()
                    return False
                raise
        journal.finish()
        expected = composite_checksum([part.checksum for part in parts])
        reported = response.get("ChecksumSHA256")
        if reported and reported != expected:
            raise IntegrityError(f"{self._where(full_key)}: the store assembled checksum"
                                 f" {reported}, the parts sent make {expected}")
        return True

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
                if _error_code(error) not in ("NoSuchUpload", "404"):
                    raise
        journal.finish()
        logger.info("s3.multipart.aborted", key=full_key, upload_id=state.upload_id)

    # -- housekeeping -------------------------------------------------------------------

    def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        with self._translated("DELETE", full_key):
            try:
                self._s3().delete_object(Bucket=self._settings.bucket, Key=full_key)
            except ClientError as error:
                if _error_code(error) not in _MISSING_KEY_CODES:
                    raise

    def cleanup_partials(
        self,
        keep: Callable[[str], bool] | Collection[str] = frozenset(),
        older_than: timedelta = DEFAULT_ORPHAN_AGE,
    ) -> int:
        """Abort multipart uploads under the prefix that no journal wants.

        ``keep`` is the set of upload ids the ledger still wants, or a predicate on an
        upload id. Uploads younger than ``older_than`` are spared too: one may have just
        been created and not yet journaled by a running uploader.
        """
        wanted = keep if callable(keep) else keep.__contains__
        cutoff = datetime.now(UTC) - older_than
        aborted = 0
        with self._translated("LIST MULTIPART", None):
            paginator = self._s3().get_paginator("list_multipart_uploads")
            pages = paginator.paginate(Bucket=self._settings.bucket, Prefix=self._settings.prefix)
            uploads = [upload for page in pages for upload in page.get("Uploads", [])]
        for upload in uploads:
            upload_id, full_key = str(upload["UploadId"]), str(upload["Key"])
            initiated = upload.get("Initiated")
            if wanted(upload_id) or (isinstance(initiated, datetime) and initiated > cutoff):
                continue
            with self._translated("ABORT MULTIPART", full_key):
                try:
                    self._s3().abort_multipart_upload(Bucket=self._settings.bucket,
                                                      Key=full_key, UploadId=upload_id)
                except ClientError as error:
                    if _error_code(error) not in ("NoSuchUpload", "404"):
                        raise
            logger.info("s3.multipart.orphan_aborted", key=full_key, upload_id=upload_id)
            aborted += 1
        return aborted


def _read_exactly(file: IO[bytes], length: int, source: Path) -> bytes:
    data = file.read(length)
    if len(data) != length:
        raise IntegrityError(f"{source}: the staged copy ended early (file shrank while sending)")
    return data


def _journal_succeeded(futures: Collection[Future[PartRecord]], journal: MultipartJournal,
                       done: dict[int, PartRecord]) -> None:
    """After a failure, keep the parts that did get through, so a retry skips them."""
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is None:
            record = future.result()
            if record.number not in done:
                journal.part_done(record)
                done[record.number] = record


def _check_finished_part(record: PartRecord, data: bytes) -> None:
    """A journaled part counts only if our bytes hash to what the store verified for it."""
    if record.size != len(data) or record.checksum != sha256_base64(data):
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
