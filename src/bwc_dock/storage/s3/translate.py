"""What an S3 failure means: the one place that maps the store's errors to ours.

Every failure becomes TransientStorageError (a later attempt may work) or
PermanentStorageError with its RefusalKind (what the operator has to fix); the message
names the request, the object and the fix.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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

from bwc_dock.errors import (
    PermanentStorageError,
    RefusalKind,
    StorageError,
    TransientStorageError,
)
from bwc_dock.storage.s3.settings import CREDENTIAL_FILE_NAME

# Error codes, grouped by what the uploader can do about them.
CHECKSUM_REJECTIONS = frozenset(
    {"BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest", "InvalidChecksum"}
)
CREDENTIAL_CODES = frozenset(
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
THROTTLING_CODES = frozenset(
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
MISSING_KEY_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def http_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_checksum_rejection(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error_code(error) in CHECKSUM_REJECTIONS


def is_precondition_failed(error: ClientError) -> bool:
    return error_code(error) == "PreconditionFailed" or http_status(error) == 412



def translate(error: Exception, action: str, where: str, bucket: str) -> StorageError:
    """What an S3 failure of ``action`` on ``where`` (``s3://bucket/key at endpoint``) means."""
    if isinstance(error, ClientError):
        return _translate_client_error(error, action, where, bucket)
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return PermanentStorageError(
            f"{action} {where}: no usable S3 credentials ({error}); set AWS_ACCESS_KEY_ID"
            f" and AWS_SECRET_ACCESS_KEY, an AWS credentials file, or the systemd"
            f" credential {CREDENTIAL_FILE_NAME}",
            RefusalKind.CREDENTIALS,
        )
    if isinstance(error, SSLError):
        return PermanentStorageError(
            f"{action} {where}: TLS verification failed ({error}); install the store's CA"
            f" and point storage.ca_bundle at it",
            RefusalKind.TLS,
        )
    if isinstance(error, BotoConnectionError | HTTPClientError | ResponseStreamingError):
        return TransientStorageError(f"{action} {where}: store unreachable: {error}")
    if isinstance(error, BotoCoreError):
        return PermanentStorageError(f"{action} {where}: {error}", RefusalKind.OTHER)
    return TransientStorageError(f"{action} {where}: {error}")


def _translate_client_error(
    error: ClientError, action: str, where: str, bucket: str
) -> StorageError:
    code, status = error_code(error), http_status(error)
    said = f"{code or status}: {error.response.get('Error', {}).get('Message', '')}".strip()
    if code in CREDENTIAL_CODES:
        return PermanentStorageError(
            f"{action} {where}: the store refused the credentials ({said}); check the"
            f" access key and secret (environment, AWS credentials file or systemd"
            f" credential {CREDENTIAL_FILE_NAME}) and storage.region",
            RefusalKind.CREDENTIALS,
        )
    if code == "NoSuchBucket":
        return PermanentStorageError(
            f"{action} {where}: bucket {bucket!r} does not exist; create it"
            f" (with Object Lock if storage.object_lock_mode is set) or fix storage.bucket",
            RefusalKind.MISSING_BUCKET,
        )
    if code == "AccessDenied" or status == 403:
        return PermanentStorageError(
            f"{action} {where}: access denied ({said}); grant this key s3:PutObject,"
            f" s3:GetObject, s3:ListBucket and the multipart permissions on the bucket",
            RefusalKind.PERMISSION,
        )
    if code in THROTTLING_CODES or code in CHECKSUM_REJECTIONS or status >= 500:
        return TransientStorageError(f"{action} {where}: store busy or failing ({said})")
    if code in ("PermanentRedirect", "IllegalLocationConstraintException"):
        return PermanentStorageError(
            f"{action} {where}: the bucket lives elsewhere ({said}); check storage.region,"
            f" storage.endpoint_url and storage.addressing_style",
            RefusalKind.WRONG_LOCATION,
        )
    return PermanentStorageError(f"{action} {where}: refused ({said})", RefusalKind.OTHER)


# What a store's answers mean, beyond errors: its own hash of an object, and metadata.
METADATA_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Printable ASCII except '%', which introduces our percent-escapes of anything else.
_METADATA_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")


def computed_by_store(response: Mapping[str, Any]) -> str | None:
    """The full-object SHA-256 the store computed itself (hex), if it reports one."""
    store_checksum = str(response.get("ChecksumSHA256") or "")
    whole_object = response.get("ChecksumType") != "COMPOSITE" and "-" not in store_checksum
    if store_checksum and whole_object:
        return base64.b64decode(store_checksum).hex()
    return None


def encode_metadata_value(value: str) -> str:
    """S3 metadata travels in HTTP headers: printable ASCII only, the rest %-escaped."""
    return quote(value, safe=_METADATA_SAFE)
