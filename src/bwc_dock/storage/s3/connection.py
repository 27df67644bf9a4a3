"""The S3 backend's connection: the botocore client, error translation, request retries.

What every request needs, whichever object or upload it is about: the client (made
on first use, made again after the store refused the credentials), the bucket, the
create-only condition and Object Lock parameters, the HEAD before a write, and the probe
that shows whether the store honours the create-only condition (sparing that HEAD).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import botocore.loaders
import botocore.session
import tenacity
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from bwc_dock.errors import (
    PermanentStorageError,
    RefusalKind,
    StorageError,
    TransientStorageError,
)
from bwc_dock.logs import get_logger
from bwc_dock.storage.base import ProgressCallback, current_retain_until
from bwc_dock.storage.s3.part_buffers import PartBuffers
from bwc_dock.storage.s3.settings import (
    BOTOCORE_ATTEMPTS,
    CHECKSUM_ATTEMPTS,
    S3Settings,
    systemd_credential_file,
)
from bwc_dock.storage.s3.translate import (
    MISSING_KEY_CODES,
    error_code,
    http_status,
    is_checksum_rejection,
    is_precondition_failed,
    translate,
)

logger = get_logger("bwc_dock.storage.s3")

_Result = TypeVar("_Result")


# NotImplemented answers to If-None-Match in a row before writes go on without it
_NOT_IMPLEMENTED_IN_A_ROW = 3

# The HTTP client reads a file-like body 16 KiB at a time: a Python call, a copy and a
# progress report per 16 KiB cost more CPU per MB than the bytes' SHA-256. A metered
# body hands it blocks of this size instead (the client sends whatever a read returns).
_METERED_BLOCK = 1024 * 1024


class MeteredBody:
    """A request body that reports each block read from it (for the bandwidth limiter),
    read in blocks of at least ``_METERED_BLOCK`` bytes. It reads the caller's buffer in
    place: no copy of it is made."""

    def __init__(self, data: bytes | bytearray, progress: ProgressCallback) -> None:
        self._view = memoryview(data)
        self._position = 0
        self._progress = progress

    def read(self, size: int | None = -1) -> bytes:
        """The next block: a view of the bytes, not a copy (the HTTP client only sends
        it; a copy per block would cost a fresh buffer's page faults and a memcpy)."""
        start = min(self._position, len(self._view))
        end = len(self._view) if size is None or size < 0 else start + max(size, _METERED_BLOCK)
        chunk = self._view[start:end]
        self._position = start + len(chunk)
        if chunk:
            self._progress(len(chunk))
        # a bytes-like view where the HTTP client expects bytes: it only sends it
        return cast(bytes, chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Where botocore rewinds the body to send it again."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


# The conditional-write probe's two bodies: the second must never replace the first.
_PROBE_FIRST = b"bwc-dock conditional-write probe: the first write\n"
_PROBE_OVERWRITE = b"bwc-dock conditional-write probe: an overwrite the store must refuse\n"


def sha256_base64(data: bytes | bytearray) -> str:
    """The base64 SHA-256 of ``data``, as S3's x-amz-checksum-sha256 wants it."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def composite_checksum(part_checksums: Collection[str]) -> str:
    """S3's checksum of a multipart object: SHA-256 over the part digests, ``-N``."""
    joined = b"".join(base64.b64decode(checksum) for checksum in part_checksums)
    return f"{sha256_base64(joined)}-{len(part_checksums)}"


@functools.cache
def _shared_loader() -> Any:
    """botocore's loader of service models, one per process: it caches the S3 model it
    parsed, so a second client (the fleet's, a new one after refused credentials) costs
    about 15 ms of CPU instead of 70-160 ms of parsing JSON again. (Two threads asking
    at once may each make one; one is kept.)"""
    return botocore.loaders.create_loader()


class S3Connection:
    """Requests to one bucket under one prefix, with errors translated and retried."""

    def __init__(self, settings: S3Settings) -> None:
        self._settings = settings
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._bucket_confirmed = False
        # Cleared when the store answers NotImplemented to If-None-Match several times in
        # a row (one answer may be a glitch or a forgery); the HEAD before every write is
        # then the only create-only guard.
        self._conditional_writes = True
        self._not_implemented_answers = 0
        # Whether the store was seen to refuse an overwrite under If-None-Match (a canary
        # written twice, see _probe_conditional_writes): only then does a create-only
        # single PUT go without the HEAD before it. None until asked; never asked (so the
        # HEAD stays) by a backend that was given no probe prefix of its own dock.
        self._overwrites_refused: bool | None = None if settings.probe_prefix else False
        # Whether the store was seen to refuse a body that does not match its
        # x-amz-checksum-sha256 (_probe_checksum_refusal): only then are a clip's parts
        # sent with the digests taken when it was read off the camera, unhashed here.
        self._checksums_enforced: bool | None = None if settings.probe_prefix else False
        self._probe_lock = threading.Lock()
        # the parts in flight and being read, of every upload this backend runs at once
        self._part_buffers = PartBuffers(settings.part_size)
        if settings.endpoint_url and urlsplit(settings.endpoint_url).scheme == "http":
            logger.warning("s3.cleartext_endpoint", endpoint=settings.endpoint_url,
                           why="no TLS: bodies are checksummed but not confidential")

    # -- the client ---------------------------------------------------------------------

    def _new_session(self) -> botocore.session.Session:
        """A session of its own (credentials are read again for each), reading the
        service's model through the process's one loader."""
        core = botocore.session.Session()
        core.register_component("data_loader", _shared_loader())
        core.set_config_variable("region", self._settings.region)
        credential_file = systemd_credential_file()
        if credential_file is not None:
            core.set_config_variable("credentials_file", str(credential_file))
        return core

    def _s3(self) -> Any:
        """The S3 client, made on first use (and again after credentials were refused)."""
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
                session = self._new_session()
                # verify=None keeps verification on with the default (or AWS_CA_BUNDLE) roots
                self._client = session.create_client(
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
        self._part_buffers.clear()
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
        """The S3 failure as our error, and what it tells this connection."""
        translated = translate(error, action, self._where(full_key), self._settings.bucket)
        if isinstance(translated, PermanentStorageError):
            if translated.kind is RefusalKind.CREDENTIALS and isinstance(error, ClientError):
                self._forget_client()  # fixed credentials are read again on the next call
            elif translated.kind is RefusalKind.MISSING_BUCKET:
                self._bucket_confirmed = False
        return translated

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
            retry=tenacity.retry_if_exception(is_checksum_rejection),
            wait=tenacity.wait_exponential(multiplier=0.2, max=2),
            before_sleep=log_retry,
            reraise=True,
        )
        return retrying(call)

    # -- writing ------------------------------------------------------------------------

    def _create_only(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self._conditional_writes else {}

    def _retrying_conditional(self, call: Callable[[], _Result]) -> _Result:
        """Run ``call``; once more without If-None-Match only when the store answered
        NotImplemented to it _NOT_IMPLEMENTED_IN_A_ROW times in a row (before that, the
        write fails as transient and is retried later, still create-only)."""
        try:
            result = call()
        except ClientError as error:
            if error_code(error) != "NotImplemented" or not self._conditional_writes:
                raise
            self._not_implemented_answers += 1
            if self._not_implemented_answers < _NOT_IMPLEMENTED_IN_A_ROW:
                raise TransientStorageError(
                    f"{self._settings.endpoint_url}: the store answered NotImplemented to a"
                    f" create-only write (If-None-Match); tried again later, still create-only"
                ) from error
            self._conditional_writes = False
            logger.warning("s3.conditional_writes_unsupported",
                           endpoint=self._settings.endpoint_url,
                           why="only the HEAD before each write guards against overwrites")
            return call()
        if self._conditional_writes:
            self._not_implemented_answers = 0
        return result

    def _needs_head_before(self) -> bool:
        """Whether a create-only single PUT must start with a HEAD: yes, unless this store
        proved it refuses an overwrite under If-None-Match (and still gets the header).
        Without the HEAD, a 412 from the PUT leads to the HEAD that accepts what is there."""
        if not self._conditional_writes:
            return True
        with self._probe_lock:
            if self._overwrites_refused is None:
                self._overwrites_refused = self._probe_conditional_writes()
            return self._overwrites_refused is not True

    def _probe_conditional_writes(self) -> bool | None:
        """Write a canary under the dock's probe prefix, then again create-only: True if
        the store refused the second write and kept the first bytes, False if it did not
        (it ignores If-None-Match) or refuses the probe, None if unanswered (asked again
        at the next write; until then the HEAD stays)."""
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{os.urandom(4).hex()}"
        full_key = self._full_key(f"{self._settings.probe_prefix}{stamp}.if-none-match")
        try:
            self._put_canary(full_key, _PROBE_FIRST)
            try:
                self._put_canary(full_key, _PROBE_OVERWRITE)
                refused = False
            except ClientError as error:
                if not is_precondition_failed(error) and (
                        error_code(error) != "ConditionalRequestConflict"):
                    raise
                refused = True
            kept = refused and self._read_canary(full_key) == _PROBE_FIRST
        except (ClientError, BotoCoreError) as error:
            translated = self._translate(error, "PUT probe", full_key)
            definite = isinstance(translated, PermanentStorageError) or (
                isinstance(error, ClientError) and error_code(error) == "NotImplemented")
            logger.warning("s3.conditional_writes_unproven", error=str(translated),
                           why="a HEAD before each write stays the guard against overwrites")
            return False if definite else None
        self._delete_canary(full_key)
        if kept:
            logger.info("s3.conditional_writes_proven", canary=full_key)
            return True
        logger.warning("s3.conditional_writes_ignored", canary=full_key,
                       endpoint=self._settings.endpoint_url,
                       why="the store took an overwrite under If-None-Match: *; a HEAD"
                           " before each write stays the guard against overwrites")
        return False

    def _enforces_checksums(self) -> bool:
        """Whether this store proved it refuses a body that does not match its checksum
        (asked once, on the first upload that could rely on it)."""
        with self._probe_lock:
            if self._checksums_enforced is None:
                self._checksums_enforced = self._probe_checksum_refusal()
            return self._checksums_enforced is True

    def _probe_checksum_refusal(self) -> bool | None:
        """Send a canary whose x-amz-checksum-sha256 is another body's: True if the store
        refused it, False if it kept it (it does not check checksums) or refuses the
        probe, None if unanswered (asked again at the next upload)."""
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{os.urandom(4).hex()}"
        full_key = self._full_key(f"{self._settings.probe_prefix}{stamp}.bad-checksum")
        try:
            self._s3().put_object(Bucket=self._settings.bucket, Key=full_key, Body=_PROBE_FIRST,
                                  ContentLength=len(_PROBE_FIRST),
                                  ChecksumSHA256=sha256_base64(_PROBE_OVERWRITE))
        except ClientError as error:
            if is_checksum_rejection(error):
                logger.info("s3.checksums_enforced", canary=full_key)
                return True
            translated = self._translate(error, "PUT probe", full_key)
            logger.warning("s3.checksums_unproven", error=str(translated),
                           why="each clip is hashed again as it is sent")
            return False if isinstance(translated, PermanentStorageError) else None
        except BotoCoreError as error:
            logger.warning("s3.checksums_unproven", error=str(error),
                           why="each clip is hashed again as it is sent")
            return None
        self._delete_canary(full_key)
        logger.warning("s3.checksums_not_enforced", canary=full_key,
                       endpoint=self._settings.endpoint_url,
                       why="the store kept a body that did not match its checksum; each"
                           " clip is hashed again as it is sent")
        return False

    def _put_canary(self, full_key: str, body: bytes) -> None:
        self._s3().put_object(Bucket=self._settings.bucket, Key=full_key, Body=body,
                              ContentLength=len(body), ChecksumSHA256=sha256_base64(body),
                              IfNoneMatch="*")

    def _read_canary(self, full_key: str) -> bytes:
        response = self._s3().get_object(Bucket=self._settings.bucket, Key=full_key)
        stream = response["Body"]
        try:
            body: bytes = stream.read(len(_PROBE_OVERWRITE) + 1)
        finally:
            stream.close()
        return body

    def _delete_canary(self, full_key: str) -> None:
        """Tidy up; a store or key that may not delete (Object Lock, a policy) keeps it."""
        try:
            self._s3().delete_object(Bucket=self._settings.bucket, Key=full_key)
        except (ClientError, BotoCoreError) as error:
            logger.info("s3.probe_canary_left", canary=full_key, error=str(error))

    def _lock_parameters(self) -> dict[str, Any]:
        """Object Lock for a new object: the retain-until date of the clip being written
        (its recorded time plus its class's days, see retention.py), set on the write
        itself so the object is never unprotected. A write outside a clip (SHA256SUMS,
        anchors) is retained ``object_lock_days`` from now where that older key is set,
        else by the bucket's default retention alone."""
        settings = self._settings
        if not settings.object_lock_mode:
            return {}
        until = current_retain_until()
        if until is None and settings.object_lock_days:
            until = datetime.now(UTC) + timedelta(days=settings.object_lock_days)
        if until is None:
            return {}
        return {"ObjectLockMode": settings.object_lock_mode, "ObjectLockRetainUntilDate": until}

    # -- the HEAD every read and write starts with ----------------------------------------

    def _head_raw(self, full_key: str) -> dict[str, Any] | None:
        """HEAD the object; None when the store has nothing under the key."""
        with self._translated("HEAD", full_key):
            try:
                response: dict[str, Any] = self._s3().head_object(
                    Bucket=self._settings.bucket, Key=full_key, ChecksumMode="ENABLED"
                )
            except ClientError as error:
                if error_code(error) in MISSING_KEY_CODES:
                    return None
                if http_status(error) == 403:
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

