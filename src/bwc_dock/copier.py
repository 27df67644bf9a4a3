"""The copier stage: camera -> staging, hashed on the one read, verified from disk.

For each clip (and its sidecars): write a ``.part`` file in the clip's own staging
folder while hashing (the one read of the camera), then fsync, rename into place, fsync
the folder once (durable.py), drop the staged file from the page cache and hash it again
from disk. A mismatch copies again; a second mismatch quarantines the clip. (When an
uploader waits for work, that re-read is left to the upload's own read: handoff.py.)
Everything after the read is the verify stage, which may run in a thread of its own
while the camera's next clip is read. Staging paths come from the ledger id and the
sanitised name, never from a camera path.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import structlog

from bwc_dock.durable import PendingFile, fsync_directory
from bwc_dock.errors import IntegrityError, LeaseLost, SourceGone
from bwc_dock.handoff import UploadHandoff
from bwc_dock.hashing import PartHasher, copy_hashing, hash_file_from_disk
from bwc_dock.ledger import ClipWork, Ledger, SidecarWork
from bwc_dock.ledger.models import utc_now
from bwc_dock.outcomes import Action, copy_action
from bwc_dock.part_digests import KeptPartDigests
from bwc_dock.scanner import open_source_file
from bwc_dock.staging import (
    STAGING_DIRECTORY_MODE,
    StagingArea,
    discarded_on_failure,
    discarded_unless_kept,
    staging_space_errors,
)

log = structlog.get_logger(__name__)

MAX_COPY_TRIES = 2
_STAGING_RETRY = timedelta(seconds=5)
_SOURCE_RETRY = timedelta(seconds=2)
_HOSTILE_RETRY = timedelta(hours=1)


@dataclass(frozen=True)
class _CameraFile:
    """One file of a clip on the camera volume."""

    root: Path
    source_path_raw: bytes
    size: int
    mtime_ns: int | None  # kept on the staged copy; None for sidecars

    @classmethod
    def of_clip(cls, work: ClipWork) -> _CameraFile:
        assert work.volume_root is not None
        return cls(work.volume_root, work.source_path_raw, work.size, work.mtime_ns)

    @classmethod
    def of_sidecar(cls, work: ClipWork, sidecar: SidecarWork) -> _CameraFile:
        assert work.volume_root is not None
        return cls(work.volume_root, sidecar.source_path_raw, sidecar.size, None)


@dataclass
class _Read:
    """A clip and its sidecars read once off the camera into staging, not yet verified:
    their bytes are written under temporary names, not yet fsynced nor in place."""

    folder_relative: str
    folder: Path
    sha256: str
    sidecar_hashes: dict[int, str]
    files: list[PendingFile]
    renewer: _LeaseRenewer
    started: float
    read_seconds: float  # off the camera; the rest of copy.done's seconds is the verify stage
    parts: PartHasher | None = None  # the clip's parts, hashed in the same read


class Copier:
    """Copies clips off docked cameras for one worker (one lease owner).

    ``copy_next(..., verify_in_background=True)`` keeps the camera busy: once a clip is
    read into staging, waiting for the disk (fsync, rename) and re-reading it from disk
    to verify it run in a thread of its own while the next clip is read off the camera.
    At most one verification is in flight, and ``copy_next`` says "nothing to copy" only
    once it has finished.
    """

    def __init__(
        self,
        ledger: Ledger,
        staging: StagingArea,
        owner: str,
        on_staged: Callable[[], None] | None = None,
        handoff: UploadHandoff | None = None,
        part_digests: KeptPartDigests | None = None,
    ) -> None:
        """``on_staged`` is called once a clip is staged (the daemon wakes its uploaders);
        with ``handoff``, a clip an uploader waits for is left to it to verify; with
        ``part_digests``, a clip sent in parts has them hashed in the same read."""
        self.ledger = ledger
        self.staging = staging
        self.owner = owner
        self.on_staged = on_staged
        self.handoff = handoff
        self.part_digests = part_digests
        self._verifying: threading.Thread | None = None
        # (docking filter, clip) claimed in the transaction that finished the clip before
        self._claimed_ahead: tuple[int | None, ClipWork] | None = None

    def copy_next(
        self,
        cancel: threading.Event,
        docking_id: int | None = None,
        *,
        verify_in_background: bool = False,
    ) -> bool:
        """Claim and copy one clip; False when there was nothing (left) to copy.

        Without ``verify_in_background`` the clip is staged (or back, or quarantined) when
        this returns; with it, its verification may still be running.
        """
        work = self._claimed(docking_id) or self.ledger.claim_for_copy(self.owner, docking_id)
        if work is None:
            self.wait_verified()
            return False
        if verify_in_background:
            self._handled(work, lambda: self._read_then_verify_later(work, cancel))
        else:
            # staged, and the next clip claimed, in one transaction
            self._handled(
                work,
                lambda: self._verify(work, self._read(work, cancel), cancel, (docking_id,)),
            )
        return True

    def _claimed(self, docking_id: int | None) -> ClipWork | None:
        """The clip claimed ahead for this docking filter, if any (any other is given back)."""
        claimed, self._claimed_ahead = self._claimed_ahead, None
        if claimed is None:
            return None
        if claimed[0] != docking_id:
            self._release(claimed[1], "claimed for another docking", timedelta(0), count=False)
            return None
        return claimed[1]

    def copy(self, work: ClipWork, cancel: threading.Event) -> None:
        """Copy and verify one claimed clip before returning."""
        self._handled(work, lambda: self._verify(work, self._read(work, cancel), cancel))

    def wait_verified(self) -> None:
        """Wait for the verification still in flight, if any."""
        if self._verifying is not None:
            self._verifying.join()
            self._verifying = None

    def _read_then_verify_later(self, work: ClipWork, cancel: threading.Event) -> None:
        read = self._read(work, cancel)
        self.wait_verified()  # one in flight: staging and the disk are not flooded
        self._verifying = threading.Thread(
            target=self._verify_in_background,
            args=(work, read, cancel),
            name=f"{threading.current_thread().name}-verify",
        )
        self._verifying.start()

    def _verify_in_background(self, work: ClipWork, read: _Read, cancel: threading.Event) -> None:
        try:
            self._handled(work, lambda: self._verify(work, read, cancel))
        except Exception as error:
            # the error boundary of this thread: the clip goes back to be copied again
            log.exception("copy.verify_crashed", clip=work.id, error=str(error))
            self._release(work, str(error), _SOURCE_RETRY, count=True)

    def _handled(self, work: ClipWork, step: Callable[[], None]) -> None:
        """Run a step of copying ``work``; what can go wrong puts the clip where the
        error-to-action table (outcomes.py) says it belongs."""
        try:
            step()
        except Exception as error:
            action = copy_action(error)
            if action is Action.RAISE:
                raise
            self._act(work, action, error)

    def _act(self, work: ClipWork, action: Action, error: Exception) -> None:
        """Carry out ``action`` for ``work`` after ``error`` (outcomes.py)."""
        bound = log.bind(clip=work.id, camera=work.camera_serial, path=work.source_path)
        if action is Action.LEAVE:
            bound.warning("copy.lease_lost")
        elif action is Action.WAIT_FOR_ROOM:
            self._release(work, str(error), _STAGING_RETRY, count=False)
        elif action is Action.WAIT_FOR_CAMERA:
            bound.warning("copy.interrupted", reason=str(error))
            self._release(work, str(error), _SOURCE_RETRY, count=False)
        elif action is Action.REFUSE:
            bound.error("copy.refused", reason=str(error))
            self._release(work, str(error), _HOSTILE_RETRY, count=True)
        elif action is Action.QUARANTINE:
            self.ledger.quarantine(work, self.owner, str(error))
        elif action is Action.RETRY:
            bound.error("copy.failed", error=str(error), errno=getattr(error, "errno", None))
            failed = f"{error.strerror}: {error.filename}" if isinstance(error, OSError) else ""
            self._release(work, failed or str(error), _SOURCE_RETRY, count=True)
        else:
            raise error  # an action the copier has no way to carry out: a bug in the table

    def _release(self, work: ClipWork, error: str, delay: timedelta, *, count: bool) -> None:
        try:
            self.ledger.release(
                work, self.owner, error=error, retry_at=utc_now() + delay, count_attempt=count
            )
        except LeaseLost:
            log.warning("copy.lease_lost", clip=work.id)

    def _read(self, work: ClipWork, cancel: threading.Event) -> _Read:
        """Read the clip and its sidecars off the camera once, hashing, into staging."""
        assert work.volume_root is not None
        needed = work.size + sum(sidecar.size for sidecar in work.sidecars)
        self.staging.reserve_room(needed, work.camera_serial)
        folder_relative = self.staging.clip_folder(work.id)
        folder = self.staging.root / folder_relative
        folder.mkdir(mode=STAGING_DIRECTORY_MODE, parents=True, exist_ok=True)
        started = time.monotonic()
        renewer = _LeaseRenewer(self.ledger, work.id, self.owner, self.ledger.lease.total_seconds())
        files: list[PendingFile] = []
        parts = self.part_digests.hasher_for(work.size) if self.part_digests else None
        with discarded_on_failure(folder, work), discarded_unless_kept(files):
            sha256 = self._copy_once(
                _CameraFile.of_clip(work), folder / work.name, cancel, renewer, files, parts
            )
            sidecar_hashes = {
                sidecar.id: self._copy_once(
                    _CameraFile.of_sidecar(work, sidecar),
                    folder / sidecar.name,
                    cancel,
                    renewer,
                    files,
                )
                for sidecar in work.sidecars
            }
        read_seconds = time.monotonic() - started
        return _Read(
            folder_relative, folder, sha256, sidecar_hashes, files, renewer, started,
            read_seconds, parts,
        )

    def _verify(
        self,
        work: ClipWork,
        read: _Read,
        cancel: threading.Event,
        claim_next: tuple[int | None] | None = None,
    ) -> None:
        """Check every staged file from disk (or leave that to a waiting uploader); then
        the clip is ``staged``. With ``claim_next`` (a docking filter) the next clip is
        claimed in the same transaction."""
        assert work.volume_root is not None
        verify_started = time.monotonic()
        with discarded_on_failure(read.folder, work):
            with discarded_unless_kept(read.files):
                _put_in_place(read.files, read.folder)
            in_place = time.monotonic()
            handed_over = self._hand_over(work)
            if handed_over:  # the waiting uploader's read verifies it (handoff.py)
                sha256, sidecar_hashes = read.sha256, dict(read.sidecar_hashes)
            else:
                sha256, sidecar_hashes = self._verified_all(work, read, cancel)
        verified = time.monotonic()
        if self.part_digests is not None and read.parts is not None:
            # kept before the clip is staged: an uploader may take it at once
            self.part_digests.keep(work.id, read.sha256, read.parts)
        try:
            self._finish(work, read, (sha256, not handed_over), sidecar_hashes, claim_next)
        except BaseException:
            if handed_over:
                assert self.handoff is not None
                self.handoff.settle(work.id)  # never staged: no uploader will take it
            raise
        if self.on_staged is not None:
            self.on_staged()
        elapsed = time.monotonic() - read.started
        needed = work.size + sum(sidecar.size for sidecar in work.sidecars)
        log.info(
            "copy.done",
            clip=work.id,
            camera=work.camera_serial,
            sha256=sha256,
            size=work.size,
            seconds=round(elapsed, 3),
            mb_per_s=round(needed / 1e6 / elapsed, 1) if elapsed else None,
            # where the time went, for a dock that copies slower than its cameras read
            read_seconds=round(read.read_seconds, 3),
            waited_seconds=round(verify_started - read.started - read.read_seconds, 3),
            fsync_seconds=round(in_place - verify_started, 3),
            reread_seconds=round(verified - in_place, 3),
            verified_by="upload" if handed_over else "copier",
        )

    def _hand_over(self, work: ClipWork) -> bool:
        """Leave pass 2 to an uploader waiting for work, on a clip's first copy only: a
        clip whose staged copy was ever found damaged is verified here."""
        if self.handoff is None or work.copy_attempts > 0:
            return False
        return self.handoff.hand_over(work.id)

    def _verified_all(
        self, work: ClipWork, read: _Read, cancel: threading.Event
    ) -> tuple[str, dict[int, str]]:
        """Pass 2 over the clip and its sidecars: their hashes once each verifies."""
        sha256 = self._verified(
            _CameraFile.of_clip(work), read.folder / work.name, read.sha256, cancel, read.renewer
        )
        sidecar_hashes = {
            sidecar.id: self._verified(
                _CameraFile.of_sidecar(work, sidecar),
                read.folder / sidecar.name,
                read.sidecar_hashes[sidecar.id],
                cancel,
                read.renewer,
            )
            for sidecar in work.sidecars
        }
        return sha256, sidecar_hashes

    def _finish(
        self,
        work: ClipWork,
        read: _Read,
        checked: tuple[str, bool],  # the clip's sha256, and whether pass 2 verified it
        sidecar_hashes: dict[int, str],
        claim_next: tuple[int | None] | None,
    ) -> None:
        """Record the clip ``staged`` (and claim the next one with ``claim_next``); the
        ledger records whether it is verified or waits for its upload to verify it."""
        sha256, verified = checked
        if claim_next is None:
            self.ledger.finish_copy(
                work, self.owner, sha256, read.folder_relative, sidecar_hashes, verified=verified
            )
            return
        ahead = self.ledger.finish_copy_and_claim(
            work, self.owner, sha256, read.folder_relative, sidecar_hashes, claim_next[0],
            verified=verified,
        )
        self._claimed_ahead = None if ahead is None else (claim_next[0], ahead)

    def _verified(
        self,
        source: _CameraFile,
        destination: Path,
        sha256: str,
        cancel: threading.Event,
        renewer: _LeaseRenewer,
    ) -> str:
        """The staged file's hash once it verifies; one more copy if not; IntegrityError."""
        first_sha256 = sha256
        for attempt in range(1, MAX_COPY_TRIES + 1):
            if attempt > 1:
                again: list[PendingFile] = []
                try:
                    sha256 = self._copy_once(source, destination, cancel, renewer, again)
                    if sha256 == first_sha256:
                        _put_in_place(again, destination.parent)
                finally:
                    for part in again:
                        part.discard()  # a copy not put in place is not kept
                if sha256 != first_sha256:
                    # the camera itself gave different bytes twice: trust neither read
                    destination.unlink(missing_ok=True)
                    raise IntegrityError(
                        f"{destination.name}: the camera returned different bytes on two "
                        f"reads ({first_sha256}, then {sha256})"
                    )
            on_disk = hash_file_from_disk(destination)
            if on_disk == sha256:
                return sha256
            log.error(
                "copy.verify_mismatch",
                path=str(destination),
                attempt=attempt,
                sha256=sha256,
                on_disk=on_disk,
            )
            destination.unlink(missing_ok=True)
        raise IntegrityError(
            f"staged copy of {destination.name} did not verify after {MAX_COPY_TRIES} copies"
        )

    def _copy_once(
        self,
        source: _CameraFile,
        destination: Path,
        cancel: threading.Event,
        renewer: _LeaseRenewer,
        written: list[PendingFile],
        parts: PartHasher | None = None,
    ) -> str:
        """One read of the camera file into a temporary file for ``destination``, hashed
        (and each part with ``parts``); the file is appended to ``written`` (for the
        verify stage to put in place)."""
        source_fd = open_source_file(source.root, source.source_path_raw, source.size)
        try:
            with staging_space_errors():
                os.posix_fadvise(source_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                part = PendingFile(destination, mode=0o640)
                written.append(part)
                assert part.fd is not None
                sha256, copied = copy_hashing(
                    source_fd, part.fd, cancel, renewer.progress, parts=parts
                )
            if copied != source.size:
                raise SourceGone(
                    f"read {copied} B of {source.size} B: the file changed on the camera"
                )
            if source.mtime_ns is not None:
                os.utime(part.fd, ns=(source.mtime_ns, source.mtime_ns))
            return sha256
        finally:
            _close_source(source_fd)


def _put_in_place(files: list[PendingFile], folder: Path) -> None:
    """fsync each file read off the camera and rename it into place; then the folder once."""
    with staging_space_errors():
        for part in files:
            part.publish()
        fsync_directory(folder)


def _close_source(fd: int) -> None:
    """Close a camera file; on a yanked FUSE volume close fails (ENOTCONN), harmlessly."""
    try:
        os.close(fd)
    except OSError as error:
        log.debug("copy.close_failed", error=str(error))


class _LeaseRenewer:
    """Renews the clip's lease from the copy loop every third of the lease time."""

    def __init__(self, ledger: Ledger, clip_id: int, owner: str, lease_seconds: float) -> None:
        self.ledger = ledger
        self.clip_id = clip_id
        self.owner = owner
        self.interval = lease_seconds / 3
        self.last = time.monotonic()

    def progress(self, _count: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.ledger.renew_lease(self.clip_id, self.owner)
            self.last = now
