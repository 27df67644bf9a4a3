"""Object Lock on the S3 backend: extending retention, legal holds, and the probe that
checks the store really refuses to destroy a locked version.

Every call works on each version of a key (an Object Lock bucket is versioned, and an
older version is evidence as much as the newest). Retention is only ever extended: a
date earlier than the one a version has is refused here, before any request, and logged
as ``retention.shorten_refused``. No request ever asks to bypass governance retention.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from bwc_dock.errors import PermanentStorageError, RefusalKind
from bwc_dock.logs import get_logger
from bwc_dock.storage.base import HoldChange, LockCheck, RetentionChange, RetentionUnsupported
from bwc_dock.storage.s3.connection import S3Connection, sha256_base64
from bwc_dock.storage.s3.translate import error_code

logger = get_logger("bwc_dock.storage.s3")

# A version without retention answers GetObjectRetention with one of these.
_NO_RETENTION_CODES = frozenset(
    {"NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError",
     "NoSuchObjectLegalHold"}
)
PROBE_RETENTION = timedelta(days=1)
_CANARY = b"bwc-dock storage probe canary: a locked version must survive delete and overwrite\n"


class S3Retention(S3Connection):
    """Retention, legal hold and the lock probe (mixed into the S3 backend)."""

    def _require_lock_mode(self) -> str:
        mode = self._settings.object_lock_mode
        if not mode:
            raise RetentionUnsupported(
                "storage.object_lock_mode is not set: bwc-dock sets no retention or legal "
                "hold (set it to GOVERNANCE or COMPLIANCE, on a bucket created with Object "
                "Lock enabled)"
            )
        return mode

    def _versions(self, full_key: str) -> Iterator[str]:
        """Every version id stored under exactly ``full_key`` (delete markers excluded)."""
        with self._translated("LIST VERSIONS", full_key):
            paginator = self._s3().get_paginator("list_object_versions")
            pages = paginator.paginate(Bucket=self._settings.bucket, Prefix=full_key)
            versions = [
                str(version["VersionId"])
                for page in pages
                for version in page.get("Versions", [])
                if version.get("Key") == full_key and version.get("VersionId")
            ]
        if not versions:
            raise PermanentStorageError(f"{self._where(full_key)}: no object stored there",
                                        RefusalKind.MISSING_OBJECT)
        yield from versions

    def _retention_of(self, full_key: str, version_id: str) -> tuple[str | None, datetime | None]:
        """(mode, retain-until) of one version; (None, None) when it has none."""
        with self._translated("GET RETENTION", full_key):
            try:
                response = self._s3().get_object_retention(
                    Bucket=self._settings.bucket, Key=full_key, VersionId=version_id)
            except ClientError as error:
                if error_code(error) in _NO_RETENTION_CODES:
                    return None, None
                raise
        retention: dict[str, Any] = response.get("Retention") or {}
        until = retention.get("RetainUntilDate")
        mode = retention.get("Mode")
        return (str(mode) if mode else None,
                until.astimezone(UTC) if isinstance(until, datetime) else None)

    def extend_retention(self, key: str, until: datetime) -> list[RetentionChange]:
        configured_mode = self._require_lock_mode()
        full_key = self._full_key(key)
        changes = []
        for version_id in self._versions(full_key):
            mode, before = self._retention_of(full_key, version_id)
            changes.append(self._extend_version(full_key, version_id, mode or configured_mode,
                                                before, until))
        return changes

    def _extend_version(self, full_key: str, version_id: str, mode: str,
                        before: datetime | None, until: datetime) -> RetentionChange:
        if before is not None and until < before:
            logger.warning("retention.shorten_refused", key=full_key, version=version_id,
                           retain_until=before.isoformat(), requested=until.isoformat())
            return RetentionChange(full_key, version_id, before, before, refused=True)
        if before != until:
            # a COMPLIANCE version keeps COMPLIANCE (the store refuses to weaken it)
            with self._translated("PUT RETENTION", full_key):
                self._s3().put_object_retention(
                    Bucket=self._settings.bucket, Key=full_key, VersionId=version_id,
                    Retention={"Mode": mode, "RetainUntilDate": until})
            logger.info("retention.extended", key=full_key, version=version_id,
                        retain_until=until.isoformat(),
                        previous=before.isoformat() if before else None)
        return RetentionChange(full_key, version_id, before, until, refused=False)

    def set_legal_hold(self, key: str, on: bool) -> list[HoldChange]:
        self._require_lock_mode()
        full_key = self._full_key(key)
        status = "ON" if on else "OFF"
        changes = []
        for version_id in self._versions(full_key):
            with self._translated("PUT LEGAL HOLD", full_key):
                self._s3().put_object_legal_hold(
                    Bucket=self._settings.bucket, Key=full_key, VersionId=version_id,
                    LegalHold={"Status": status})
            logger.info("hold.object", key=full_key, version=version_id, status=status)
            changes.append(HoldChange(full_key, version_id))
        return changes

    # -- the probe ----------------------------------------------------------------------

    def probe_lock(self, canary_key: str) -> list[LockCheck]:
        """A canary under GOVERNANCE retention for a day and a legal hold; then a delete of
        its version, the same delete asking to bypass governance (the hold must still
        refuse it), and an overwrite (a new version; the canary must stay readable)."""
        self._require_lock_mode()
        full_key = self._full_key(canary_key)
        version_id = self._write_canary(full_key)
        checks = [self._check_locked(full_key, version_id)]
        checks.append(self._check_delete(full_key, version_id, bypass=False))
        checks.append(self._check_delete(full_key, version_id, bypass=True))
        checks.append(self._check_overwrite(full_key, version_id))
        self._release_canary_hold(full_key, version_id)
        return checks

    def _write_canary(self, full_key: str) -> str:
        until = (datetime.now(UTC) + PROBE_RETENTION).replace(microsecond=0)
        with self._translated("PUT", full_key):
            response = self._s3().put_object(
                Bucket=self._settings.bucket, Key=full_key, Body=_CANARY,
                ContentLength=len(_CANARY), ChecksumSHA256=sha256_base64(_CANARY),
                ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until,
                ObjectLockLegalHoldStatus="ON")
        version_id = response.get("VersionId")
        if not version_id:
            raise PermanentStorageError(
                f"{self._where(full_key)}: the store gave the canary no version id: the "
                "bucket is not versioned, so it has no Object Lock", RefusalKind.INVALID_REQUEST)
        return str(version_id)

    def _check_locked(self, full_key: str, version_id: str) -> LockCheck:
        mode, until = self._retention_of(full_key, version_id)
        with self._translated("GET LEGAL HOLD", full_key):
            try:
                hold = self._s3().get_object_legal_hold(
                    Bucket=self._settings.bucket, Key=full_key, VersionId=version_id)
                status = str((hold.get("LegalHold") or {}).get("Status"))
            except ClientError as error:
                if error_code(error) not in _NO_RETENTION_CODES:
                    raise
                status = "none"
        passed = mode == "GOVERNANCE" and until is not None and status == "ON"
        return LockCheck("lock_recorded", passed,
                         f"the store reports retention {mode or 'none'} until "
                         f"{until.isoformat() if until else 'none'}, legal hold {status}")

    def _check_delete(self, full_key: str, version_id: str, *, bypass: bool) -> LockCheck:
        name = "delete_with_bypass_refused" if bypass else "delete_refused"
        extra = {"BypassGovernanceRetention": True} if bypass else {}
        try:
            self._s3().delete_object(Bucket=self._settings.bucket, Key=full_key,
                                     VersionId=version_id, **extra)
        except ClientError as error:
            return LockCheck(name, True, f"refused ({error_code(error)})")
        if self._version_readable(full_key, version_id):
            return LockCheck(name, True, "answered success, but the version is still there")
        what = "with a governance bypass, despite its legal hold" if bypass else ""
        return LockCheck(name, False, f"the store deleted a locked version {what}".strip())

    def _check_overwrite(self, full_key: str, version_id: str) -> LockCheck:
        replacement = b"bwc-dock storage probe: overwrite attempt\n"
        try:
            self._s3().put_object(Bucket=self._settings.bucket, Key=full_key, Body=replacement,
                                  ChecksumSHA256=sha256_base64(replacement))
        except ClientError as error:
            return LockCheck("overwrite_kept_version", True, f"refused ({error_code(error)})")
        if self._version_readable(full_key, version_id):
            return LockCheck("overwrite_kept_version", True,
                             "a new version was written; the locked one is intact")
        return LockCheck("overwrite_kept_version", False,
                         "an overwrite destroyed or changed the locked version")

    def _version_readable(self, full_key: str, version_id: str) -> bool:
        """Whether the version still holds the canary's exact bytes."""
        try:
            response = self._s3().get_object(Bucket=self._settings.bucket, Key=full_key,
                                             VersionId=version_id)
            body: bytes = response["Body"].read(len(_CANARY) + 1)
        except ClientError:
            return False
        return body == _CANARY

    def _release_canary_hold(self, full_key: str, version_id: str) -> None:
        """Lift the canary's legal hold so that only its one-day retention keeps it."""
        try:
            self._s3().put_object_legal_hold(Bucket=self._settings.bucket, Key=full_key,
                                             VersionId=version_id, LegalHold={"Status": "OFF"})
        except ClientError as error:
            logger.warning("storage.probe_hold_left", key=full_key, error=error_code(error))
