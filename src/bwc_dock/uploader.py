"""The uploader stage: staging -> central storage, verified, retried until it works.

A clip is ``uploaded`` only after storage confirmed the SHA-256 taken when the clip
was first read off the camera, for the clip and every sidecar, and the manifest is
stored beside it. Errors that can heal are retried a few times at once (tenacity,
exponential backoff with jitter), then the clip goes back to ``staged`` with its
attempt count, last error and next attempt time: it is never given up. A permanent
refusal (credentials, permissions) is logged loudly once per kind and waits long.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from bwc_dock.config import StorageConfig
from bwc_dock.custody import write_docking_sums
from bwc_dock.errors import (
    IntegrityError,
    LeaseLost,
    PermanentStorageError,
    StorageConflict,
    StorageError,
    is_transient,
)
from bwc_dock.handoff import UploadHandoff
from bwc_dock.key_templates import CONTENT_FIELDS, key_template_fields
from bwc_dock.ledger import ClipState, ClipWork, Ledger
from bwc_dock.ledger.models import utc_now
from bwc_dock.manifest import (
    KeyTemplate,
    ManifestIdentity,
    build_manifest,
    manifest_identity,
    manifest_key,
)
from bwc_dock.outcomes import Action, upload_action
from bwc_dock.part_digests import KeptPartDigests
from bwc_dock.storage.base import (
    PartDigests,
    ProgressCallback,
    StorageBackend,
    retained_until,
)
from bwc_dock.verify import check_staged, staged_files

log = structlog.get_logger(__name__)

IMMEDIATE_TRIES = 3
_WAIT_FOR_ORIGINAL = ("", "")  # _original_copy's answer: try again later
_DUPLICATE_WAIT = timedelta(seconds=30)


class Uploader:
    """Uploads staged clips for one worker (one lease owner)."""

    def __init__(
        self,
        ledger: Ledger,
        backend: StorageBackend,
        staging_root: Path,
        storage_config: StorageConfig,
        owner: str,
        throttle: ProgressCallback | None = None,
        on_permanent_error: Callable[[PermanentStorageError], None] | None = None,
        handoff: UploadHandoff | None = None,
        retention: Callable[[ClipWork], datetime | None] | None = None,
        part_digests: KeptPartDigests | None = None,
    ) -> None:
        self.ledger = ledger
        self.backend = backend
        self.staging_root = staging_root
        self.config = storage_config
        self.owner = owner
        self.keys = KeyTemplate(storage_config.key_template, ledger.dock_id)
        self.content_addressed = bool(
            key_template_fields(storage_config.key_template) & CONTENT_FIELDS
        )
        self.throttle = throttle
        self.on_permanent_error = on_permanent_error
        self.handoff = handoff
        # each clip's Object Lock retain-until date (retention.py); None: no lock
        self.retention = retention
        # the digests of a clip's parts from the copier's read (part_digests.py)
        self.part_digests = part_digests
        self._reported_permanent: set[str] = set()  # RefusalKind values
        self._lock = threading.Lock()

    def upload_next(self) -> bool:
        """Claim and upload one due clip; False when none is due."""
        work = self.ledger.claim_for_upload(self.owner)
        if work is None:
            return False
        self.upload(work)
        return True

    def upload(self, work: ClipWork) -> None:
        """Upload one claimed clip; whatever happens, it ends where it belongs."""
        if self.handoff is not None:
            self.handoff.claimed(work.id)
        try:
            # left by the copier without pass 2 (the ledger says so, whichever process
            # staged it): this upload's read verifies it
            self._upload(work, not work.staged_verified)
        finally:
            if self.handoff is not None:
                self.handoff.settle(work.id)

    def _upload(self, work: ClipWork, unverified: bool) -> None:
        try:
            stored_as: tuple[str, str] | None = None
            if work.duplicate_of is not None:
                stored_as = self._original_copy(work)
                if stored_as == _WAIT_FOR_ORIGINAL:
                    if not (unverified and self._sent_back_if_damaged(work, "not sent yet")):
                        self._wait_for_original(work, staged_copy_verified=unverified)
                    return
            self._send_with_retries(work, stored_as)
        except Exception as error:
            action = upload_action(error)
            if action is Action.RAISE:
                raise
            self._act(work, action, error, unverified)

    def _act(self, work: ClipWork, action: Action, error: Exception, unverified: bool) -> None:
        """Carry out ``action`` for ``work`` after ``error`` (outcomes.py); ``unverified``:
        its staged copy was left to this upload to verify (handoff.py)."""
        bound = log.bind(clip=work.id, camera=work.camera_serial, sha256=work.sha256)
        if action is Action.LEAVE:
            bound.warning("upload.lease_lost")
        elif action is Action.PUT_BACK:
            bound.info("upload.interrupted")
            why = "interrupted by shutdown"
            self.ledger.release(work, self.owner, error=why, retry_at=None, count_attempt=False)
        elif action is Action.QUARANTINE:
            bound.error("upload.conflict", error=str(error))
            self.ledger.quarantine(work, self.owner, str(error))
        elif action is Action.CHECK_STAGED_COPY:
            unreadable = f"staged copy unreadable: {error}" if isinstance(error, OSError) else ""
            self._staged_copy_suspect(work, unreadable or str(error), unverified)
        elif action is Action.REFUSE:
            self._report_refusal(error)
            self._later(work, error, self.config.permanent_error_backoff_seconds, unverified)
        elif action is Action.RETRY:
            bound.warning("upload.retry", error=str(error), attempts=work.upload_attempts + 1)
            self._later(work, error, self._backoff_seconds(work.upload_attempts), unverified)
        else:
            raise error  # an action the uploader has no way to carry out: a bug in the table

    def _later(
        self, work: ClipWork, error: Exception, delay_seconds: float, unverified: bool
    ) -> None:
        """Try the clip again later; one whose staged copy was left to this upload to
        verify is read back from disk first, and sent back to the camera if damaged."""
        if not (unverified and self._sent_back_if_damaged(work, str(error))):
            self._retry_later(work, error, delay_seconds, staged_copy_verified=unverified)

    def _send_with_retries(self, work: ClipWork, stored_as: tuple[str, str] | None) -> None:
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(IMMEDIATE_TRIES),
            wait=wait_random_exponential(multiplier=self.config.retry_initial_seconds, max=30),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.info(
                        "upload.retry_now", clip=work.id, attempt=attempt.retry_state.attempt_number
                    )
                until = self.retention(work) if self.retention is not None else None
                with retained_until(until):
                    self._send(work, stored_as)

    def _send(self, work: ClipWork, stored_as: tuple[str, str] | None) -> None:
        """Upload sidecars, the clip (unless ``stored_as`` names the (key, sha256) its
        content is stored under already) and the manifest; then record ``uploaded``."""
        assert work.sha256 is not None and work.staged_path is not None
        folder = self.staging_root / work.staged_path
        metadata = {"sha256": work.sha256, "camera": work.camera_serial, "clip-id": str(work.id)}
        sidecar_keys: dict[int, str] = {}
        sidecar_remote: dict[int, tuple[str, str]] = {}
        for sidecar in work.sidecars:
            assert sidecar.sha256 is not None
            key = self.keys.key(work, sidecar.name, sidecar.sha256)
            confirmed_sidecar = self._put_evidence(
                work, key, folder / sidecar.name, sidecar.sha256, sidecar.size,
                {**metadata, "sha256": sidecar.sha256},
            )
            sidecar_keys[sidecar.id] = key
            sidecar_remote[sidecar.id] = (key, confirmed_sidecar)
        if stored_as is None:
            clip_key = self.keys.key(work)
            digests = self.part_digests.get(work.id, work.sha256) if self.part_digests else None
            confirmed = self._put_evidence(
                work, clip_key, folder / work.name, work.sha256, work.size, metadata, digests
            )
        else:
            clip_key, confirmed = stored_as
            log.info("upload.duplicate", clip=work.id, original=work.duplicate_of, key=clip_key)
        record_key = manifest_key(clip_key, self.ledger.dock_id, work.id)
        self._put_manifest(work, clip_key, sidecar_keys, record_key)
        self.ledger.finish_upload(work, self.owner, clip_key, confirmed, sidecar_remote, record_key)
        if self.part_digests is not None:
            self.part_digests.forget(work.id)
        self._write_docking_sums(work)
        log.info(
            "upload.done", clip=work.id, camera=work.camera_serial, sha256=confirmed, key=clip_key
        )

    def _put_evidence(
        self,
        work: ClipWork,
        key: str,
        source: Path,
        sha256: str,
        size: int,
        metadata: dict[str, str],
        part_digests: PartDigests | None = None,
    ) -> str:
        """Store one staged file create-only; its confirmed SHA-256. The same content
        already under the key (another dock, an earlier attempt) is a verified no-op."""
        try:
            stored = self.backend.put_file(
                key,
                source,
                sha256,
                size,
                metadata,
                self.ledger.multipart_journal(key, work.id),
                self.throttle,
                part_digests,
            )
        except StorageConflict as error:
            raise content_conflict(self.backend, key, sha256, self.content_addressed) from error
        return _confirmed(stored.sha256, sha256, key)

    def _write_docking_sums(self, work: ClipWork) -> None:
        """Anchor the docking in central storage once its last clip is there (rewriting the
        list after every clip would cost O(clips²) per docking). The clip is safe either
        way: if this fails or is cut short, the ledger still has the list as unwritten and
        the daemon writes it at its next start or within a minute (anchor_dockings)."""
        if self.ledger.pending_in_docking(work.docking_id):
            return
        try:
            write_docking_sums(self.ledger, self.backend, work.docking_id)
        except StorageError as error:
            log.warning("custody.sums_failed", docking=work.docking_id, error=str(error))

    def _put_manifest(
        self, work: ClipWork, clip_key: str, sidecar_keys: dict[int, str], key: str
    ) -> None:
        """Write this offload's custody record once. One already there is accepted only
        when it records this very offload (an attempt cut short before the ledger knew)."""
        facts = self.ledger.manifest_facts(work.id)
        document = build_manifest(
            work,
            dock_id=self.ledger.dock_id,
            clip_key=clip_key,
            sidecar_keys=sidecar_keys,
            officer_id=facts.officer_id,
            times={**facts.times, "uploaded_at": utc_now()},
            audit_head=facts.audit_head,
            device=facts.device,
            clocks=facts.clocks,
        )
        assert work.sha256 is not None
        try:
            self.backend.put_bytes(key, document, {"clip-sha256": work.sha256}, replace=False)
        except StorageConflict:
            stored = self.backend.read_bytes(key)
            identity = manifest_identity(stored) if stored is not None else None
            if identity != ManifestIdentity(self.ledger.dock_id, work.id, work.sha256):
                raise StorageConflict(
                    f"{key}: central storage already holds another custody record under "
                    f"this offload's manifest key ({_describe(identity)}; this offload: dock "
                    f"{self.ledger.dock_id}, clip {work.id}, sha256 {work.sha256}): "
                    "tampering or corruption; nothing was overwritten"
                ) from None
            log.info("upload.manifest_present", clip=work.id, key=key)

    def _original_copy(self, work: ClipWork) -> tuple[str, str] | None:
        """Same content from the same camera is stored once: the (key, sha256) of the
        first copy when it is stored, None to upload this copy itself (the first copy
        cannot vouch), or _WAIT_FOR_ORIGINAL after putting the clip back for later."""
        assert work.duplicate_of is not None
        original = self.ledger.get(work.duplicate_of)
        if original is None or original.state is ClipState.QUARANTINED:
            return None
        if original.state in (ClipState.UPLOADED, ClipState.CLEARED) and original.remote_key:
            stored_sha256 = original.remote_sha256
            if stored_sha256 is None or stored_sha256 != work.sha256:
                return None  # not what this clip holds after all: upload it itself
            return original.remote_key, stored_sha256
        return _WAIT_FOR_ORIGINAL

    def _wait_for_original(self, work: ClipWork, *, staged_copy_verified: bool) -> None:
        """Put the clip back until the first copy of its content is stored."""
        self.ledger.release(
            work,
            self.owner,
            error=f"waiting for clip {work.duplicate_of}",
            retry_at=utc_now() + _DUPLICATE_WAIT,
            count_attempt=False,
            staged_copy_verified=staged_copy_verified,
        )

    def _staged_copy_suspect(self, work: ClipWork, reason: str, unverified: bool) -> None:
        """Storage saw other bytes than the ledger's hash: is the staged copy damaged?"""
        damage = self._staged_copy_damage(work)
        if damage is None:
            log.warning("upload.retry", clip=work.id, error=reason)
            self._retry_later(
                work, IntegrityError(reason), self._backoff_seconds(0), staged_copy_verified=True
            )
        elif unverified:
            self._send_back(work, f"{damage} ({reason})")
        else:
            self.ledger.quarantine(
                work, self.owner, f"staged copy no longer matches the ledger hash: {reason}"
            )

    def _sent_back_if_damaged(self, work: ClipWork, reason: str) -> bool:
        """Pass 2 for a clip handed over unverified whose upload did not succeed (handoff.py):
        read its staged copy back from disk now; a damaged one is sent back to be read off
        the camera again. Whether it was sent back."""
        damage = self._staged_copy_damage(work)
        if damage is None:
            return False
        self._send_back(work, f"{damage} (upload: {reason})")
        return True

    def _staged_copy_damage(self, work: ClipWork) -> str | None:
        """What is wrong with the staged clip or a sidecar, re-read from disk; None if intact."""
        found = check_staged(self.staging_root, work)
        if not found:
            return None
        return "; ".join(f"staged copy of {m.file}: {m.problem}" for m in found)

    def _send_back(self, work: ClipWork, reason: str) -> None:
        """A staged copy no pass 2 had verified is damaged: read the clip off the camera
        again (the copier then verifies the new copy itself) rather than quarantine it."""
        assert work.staged_path is not None
        try:
            self.ledger.send_back_for_copy(work, self.owner, reason)
        except LeaseLost:
            log.warning("upload.lease_lost", clip=work.id)
            return  # another worker holds the clip, and its staged copy, now
        for _name, path, _sha256 in staged_files(self.staging_root, work):
            path.unlink(missing_ok=True)
        if self.handoff is not None:
            self.handoff.note_sent_back(work.camera_serial)
        log.error(
            "upload.staged_copy_damaged",
            clip=work.id,
            camera=work.camera_serial,
            reason=reason,
            action="read off the camera again",
        )

    def _retry_later(
        self,
        work: ClipWork,
        error: Exception,
        delay_seconds: float,
        *,
        staged_copy_verified: bool = False,
    ) -> None:
        """Put the clip back for a later attempt; ``staged_copy_verified`` when its staged
        copy was just read back intact (the ledger then records it verified)."""
        try:
            self.ledger.release(
                work,
                self.owner,
                error=str(error),
                retry_at=utc_now() + timedelta(seconds=delay_seconds),
                staged_copy_verified=staged_copy_verified,
            )
        except LeaseLost:
            log.warning("upload.lease_lost", clip=work.id)

    def _backoff_seconds(self, attempts: int) -> float:
        ceiling = min(
            self.config.retry_max_seconds,
            self.config.retry_initial_seconds * 2 ** min(attempts, 20),
        )
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not secrecy

    def _report_refusal(self, error: Exception) -> None:
        """Loud once per kind of refusal: the daemon's reporter spans all its uploaders."""
        if not isinstance(error, PermanentStorageError):
            log.error("storage.refused", error=str(error), kind=type(error).__name__)
            return
        if self.on_permanent_error is not None:
            self.on_permanent_error(error)
            return
        report_refusal_once(error, self._reported_permanent, self._lock)


def _confirmed(stored_sha256: str | None, expected: str, key: str) -> str:
    if stored_sha256 is not None and stored_sha256 != expected:
        raise IntegrityError(f"{key}: storage confirmed {stored_sha256}, expected {expected}")
    return expected


def content_conflict(
    backend: StorageBackend, key: str, expected: str, content_addressed: bool = True
) -> StorageConflict:
    """The loud conflict for a key that holds other bytes than ``expected``: the stored
    hash is read from the bytes themselves, never from a metadata claim."""
    try:
        stored: str | None = backend.read_sha256(key)
    except StorageError as error:
        log.warning("upload.conflict_unreadable", key=key, error=str(error))
        stored = None
    cause = (
        "tampering or corruption"
        if content_addressed
        else "tampering or corruption, or another clip with the same key "
        "(the key_template has no {sha16} or {sha256})"
    )
    return StorageConflict(
        f"{key}: integrity conflict, central storage holds other content under this key "
        f"(stored sha256 {stored or 'unreadable'}, expected sha256 {expected}): {cause}; "
        "nothing was overwritten"
    )


def _describe(identity: ManifestIdentity | None) -> str:
    if identity is None:
        return "not a bwc-dock manifest"
    return f"dock {identity.dock}, clip {identity.clip_id}, sha256 {identity.sha256}"


def report_refusal_once(
    error: PermanentStorageError, reported: set[str], lock: threading.Lock
) -> bool:
    """Log ``storage.refused`` the first time a kind of refusal is seen; True if logged.

    ``reported`` holds the RefusalKind values seen so far (a StrEnum is a str).
    """
    with lock:
        if error.kind in reported:
            return False
        reported.add(error.kind)
    log.error(
        "storage.refused",
        error=str(error),
        kind=error.kind.value,
        hint="check the storage credentials, bucket and permissions",
    )
    return True
