"""The S3 backend's settings and its fixed numbers; no boto3 needed to read them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bwc_dock.config import StorageConfig
from bwc_dock.errors import PermanentStorageError, RefusalKind
from bwc_dock.names import safe_name

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # the S3 minimum for every part but the last
MAX_PARTS = 10_000  # the S3 maximum number of parts
SHA256_METADATA_KEY = "sha256"  # stored as x-amz-meta-sha256
CREDENTIAL_FILE_NAME = "aws-credentials"  # in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)
BOTOCORE_ATTEMPTS = 3  # botocore's own tries per request, first one included
CHECKSUM_ATTEMPTS = 3  # our tries when the store rejects a request's checksum
DOWNLOAD_CHUNK = 1 * MIB
DEFAULT_ORPHAN_AGE = timedelta(hours=1)
PROBE_PREFIX = "_probe/"  # the storage probes' canaries, one folder per dock


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
    # where this dock writes its probe canaries ("_probe/<dock>/"); None: no probes
    probe_prefix: str | None = None

    @classmethod
    def from_config(cls, config: StorageConfig, dock_id: str | None = None) -> S3Settings:
        if not config.bucket:
            raise PermanentStorageError(
                "storage.bucket: required for the s3 backend", RefusalKind.INVALID_REQUEST
            )
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
            probe_prefix=None if dock_id is None else probe_prefix(dock_id),
        )


def probe_prefix(dock_id: str) -> str:
    """The folder of one dock's probe canaries, below the configured prefix."""
    return f"{PROBE_PREFIX}{safe_name(dock_id.encode())}/"


def systemd_credential_file() -> Path | None:
    """The AWS shared-credentials file systemd passed to the service, if any."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    candidate = Path(directory) / CREDENTIAL_FILE_NAME
    return candidate if candidate.is_file() else None
