"""Hand-run work (``ingest``): the same stage code, ledger and leases as the daemon.

With a daemon alive, ``ingest`` records the docking and hands the copying over; with
none, it copies (and with ``--wait`` uploads) itself. It never writes to the folder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from bwc_dock.config import Config
from bwc_dock.errors import UsageError
from bwc_dock.handoff import UploadHandoff
from bwc_dock.ledger import ClipState, ClipWork, Ledger
from bwc_dock.ledger.leases import current_owner, heartbeat_alive
from bwc_dock.ledger.models import utc_now
from bwc_dock.ledger.states import PENDING_STATES
from bwc_dock.scanner import ScanResult
from bwc_dock.scanning import folder_profile, scan_into_ledger
from bwc_dock.sources.base import DockedVolume
from bwc_dock.staging import StagingArea
from bwc_dock.storage import open_backend
from bwc_dock.uploader import Uploader
from bwc_dock.wiring import Stages

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.5
# A hand-run copy waiting for staging space gives up when nothing moved for this long.
STALL_SECONDS = 60.0


def daemon_alive(ledger: Ledger, heartbeat_seconds: float) -> bool:
    return heartbeat_alive(ledger.heartbeat(), heartbeat_seconds)


@dataclass
class IngestReport:
    docking_id: int
    clips: int = 0
    new: int = 0
    refused: int = 0
    states: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    handed_over: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def ingest_folder(
    config: Config,
    ledger: Ledger,
    path: Path,
    camera_serial: str,
    *,
    wait: bool,
    timeout_seconds: float,
    progress: ProgressSink | None = None,
) -> IngestReport:
    if not path.is_dir():
        raise UsageError(f"{path}: not a folder")
    profile = folder_profile(config)
    volume = DockedVolume(
        source="ingest",
        device=str(path.resolve()),
        root=path.resolve(),
        camera_serial=camera_serial,
        profile_name=profile.name,
    )
    handing_over = daemon_alive(ledger, config.service.heartbeat_seconds)
    # an ownerless docking is the daemon's to adopt
    docking_id = ledger.record_docking(volume, None if handing_over else current_owner("ingest"))
    report = IngestReport(docking_id, handed_over=handing_over)
    new_ids, found = scan_into_ledger(ledger, config, docking_id, volume)
    report.new, report.refused = len(new_ids), len(found.refused)
    clip_ids = _clips_of_folder(ledger, camera_serial, found)
    report.clips = len(clip_ids)
    deadline = time.monotonic() + timeout_seconds
    if handing_over:
        log.info("ingest.handed_over", docking=docking_id, clips=report.clips)
        if wait:
            _wait_for(ledger, clip_ids, ClipState.UPLOADED, deadline, progress)
    else:
        backend = open_backend(config)
        try:
            stages = Stages(config, ledger, backend)
            # as many uploading threads as the daemon has upload workers
            uploaders = [
                stages.uploader(current_owner(f"ingest-uploader-{number}"))
                for number in range(1, config.dock.upload_workers + 1)
            ]
            if wait:
                stopped = _copy_while_uploading(
                    stages, volume, docking_id, uploaders, clip_ids, deadline, progress
                )
            else:
                stopped = _copy_all(stages, docking_id, uploaders[0], progress, deadline)
                ledger.end_docking(docking_id, "ingest copied")
            if stopped is not None:
                log.error("ingest.stopped", docking=docking_id, reason=stopped)
                report.problems.append(stopped)
        finally:
            backend.close()
    return _summarise(ledger, clip_ids, report, wait)


def _clips_of_folder(ledger: Ledger, camera_serial: str, found: ScanResult) -> list[int]:
    """Every clip of this camera whose file is in the folder now (new or seen before)."""
    return ledger.present_clip_ids(camera_serial, found.clips)


class ProgressSink(Protocol):
    """Where hand-run work reports how far it got (a progress bar, or nothing)."""

    def update(self, done: int, total: int, label: str) -> None:
        """Called after each step."""


@dataclass
class _Signals:
    """What the copying thread tells the uploading ones."""

    wakes: list[threading.Event]  # one per uploading thread: a clip was staged
    handoff: UploadHandoff  # the uploading threads wait inside it (handoff.py)
    copied: threading.Event = field(default_factory=threading.Event)  # no more to come
    abandoned: threading.Event = field(default_factory=threading.Event)  # copying failed

    def wake_all(self) -> None:
        """A clip was staged, or uploaded (the others may have nothing left to wait for)."""
        for wake in self.wakes:
            wake.set()


def _copy_while_uploading(
    stages: Stages,
    volume: DockedVolume,
    docking_id: int,
    uploaders: list[Uploader],
    clip_ids: list[int],
    deadline: float,
    progress: ProgressSink | None,
) -> str | None:
    """Copy the folder in this thread while one thread per uploader uploads what is
    staged: clip N goes to central storage while clip N+1 is read off the camera, as in
    the daemon. What _copy_all says (why copying stopped short, or None)."""
    signals = _Signals([threading.Event() for _ in uploaders], stages.handoff)
    failures: list[Exception] = []

    def upload(uploader: Uploader, wake: threading.Event) -> None:
        try:
            _upload_all(stages.ledger, uploader, clip_ids, deadline, progress, signals, wake)
        except Exception as error:  # handed to the caller's thread below
            log.exception("ingest.upload_failed", error=str(error))
            failures.append(error)

    uploading = [
        threading.Thread(target=upload, args=(uploader, wake), name=uploader.owner, daemon=True)
        for uploader, wake in zip(uploaders, signals.wakes, strict=True)
    ]
    for thread in uploading:
        thread.start()
    try:
        stopped = _copy_all(
            stages, docking_id, uploaders[0], progress, deadline, on_staged=signals.wake_all
        )
        # a clip left for an upload to verify and found damaged is read off the folder again
        while stopped is None and _sent_back(stages, volume.camera_serial, deadline):
            stopped = _copy_all(
                stages, docking_id, uploaders[0], progress, deadline, on_staged=signals.wake_all
            )
        stages.ledger.end_docking(docking_id, "ingest copied")
    except BaseException:
        signals.abandoned.set()  # the uploads in progress finish; no new one starts
        raise
    finally:
        signals.copied.set()
        signals.wake_all()
        for thread in uploading:
            thread.join()
    if failures:
        raise failures[0]
    return stopped


def _sent_back(stages: Stages, camera_serial: str, deadline: float) -> bool:
    """Once every clip left to an upload to verify is verified (or the deadline passed),
    whether one was found damaged and sent back to be read again (handoff.py)."""
    while time.monotonic() < deadline and stages.ledger.unverified_staged(camera_serial) > 0:
        stages.handoff.wait_for_change(min(POLL_SECONDS, deadline - time.monotonic()))
    return stages.handoff.sent_back(camera_serial) > 0


def _copy_all(
    stages: Stages,
    docking_id: int,
    uploader: Uploader,
    progress: ProgressSink | None,
    deadline: float,
    on_staged: Callable[[], None] | None = None,
) -> str | None:
    """Copy every clip of the docking; None when done, else why copying stopped short:
    staging stayed full with nothing to upload or purge, or the deadline passed."""
    ledger, staging = stages.ledger, stages.staging
    cancel = threading.Event()
    copier = stages.copier(current_owner("ingest-copier"), on_staged)
    total = len(ledger.clips(docking_id=docking_id))
    done = 0
    last_progress = time.monotonic()
    while True:
        # verifying clip N from disk overlaps reading clip N+1, as in the daemon
        if copier.copy_next(cancel, docking_id, verify_in_background=True):
            done += 1
            last_progress = time.monotonic()
            if progress:
                progress.update(done, total, "copying")
            continue
        if not staging.paused:
            return None
        if _make_room(ledger, staging, uploader):
            last_progress = time.monotonic()
        now = time.monotonic()
        if now - last_progress >= STALL_SECONDS or now >= deadline:
            return (
                f"staging full: the next clip needs {staging.shortfall_bytes()} B more and "
                f"nothing was copied, uploaded or purged for {now - last_progress:.0f} s "
                f"(free {staging.free_bytes()} B, reserve {staging.reserve_bytes} B); "
                "free space in staging or run the daemon, then ingest again"
            )


def _make_room(ledger: Ledger, staging: StagingArea, uploader: Uploader) -> bool:
    """Staging is full and no daemon runs: upload a staged clip, then drop as many staged
    copies central storage already holds as the waiting clip needs (retention gives way
    to space, and only that far). Whether any room was made."""
    if not uploader.upload_next():
        time.sleep(POLL_SECONDS)
    return staging.make_room(ledger, utc_now()) > 0


def _upload_all(
    ledger: Ledger,
    uploader: Uploader,
    clip_ids: list[int],
    deadline: float,
    progress: ProgressSink | None,
    signals: _Signals,
    wake: threading.Event,
) -> None:
    """Upload the folder's clips as they are staged, until none is left to wait for.

    The folder's clips are read only when none could be claimed and copying is over:
    until then more is to come anyway. Reading them all after every upload made a
    folder of n clips cost n² rows (2,000 small clips took 4.5 minutes)."""
    wanted = set(clip_ids)
    while time.monotonic() < deadline and not signals.abandoned.is_set():
        wake.clear()  # before looking, so a clip staged from now on is not missed
        copying_over = signals.copied.is_set()
        if _upload_one_of(uploader, ledger, wanted):
            signals.wake_all()
            if progress:
                progress.update(
                    len(wanted) - ledger.pending_among(wanted), len(wanted), "uploading"
                )
            continue
        if copying_over:
            pending = [w for w in ledger.clips(ids=wanted) if w.state in PENDING_STATES]
            if not pending or _stuck_for_good(pending):
                return
        with signals.handoff.waiting():  # a clip staged now is read at once (handoff.py)
            wake.wait(POLL_SECONDS)


def _upload_one_of(uploader: Uploader, ledger: Ledger, wanted: set[int]) -> bool:
    """Upload a due clip of this folder (other cameras' clips are the daemon's)."""
    work = ledger.claim_for_upload(uploader.owner, only=wanted)
    if work is None:
        return False
    uploader.upload(work)
    return True


def _stuck_for_good(pending: list[ClipWork]) -> bool:
    """Only clips that cannot move without a camera (not docked any more) are left."""
    return all(w.state is ClipState.DISCOVERED for w in pending)


def _wait_for(
    ledger: Ledger,
    clip_ids: list[int],
    target: ClipState,
    deadline: float,
    progress: ProgressSink | None,
) -> None:
    wanted = set(clip_ids)
    while time.monotonic() < deadline:
        states = [w.state for w in ledger.clips(ids=wanted)]
        finished = sum(s in (target, ClipState.CLEARED, ClipState.QUARANTINED) for s in states)
        if progress:
            progress.update(finished, len(wanted), "waiting for the daemon")
        if finished == len(wanted):
            return
        time.sleep(POLL_SECONDS)


def _summarise(
    ledger: Ledger, clip_ids: list[int], report: IngestReport, wait: bool
) -> IngestReport:
    wanted = set(clip_ids)
    clips = ledger.clips(ids=wanted)
    for work in clips:
        report.states[str(work.state)] = report.states.get(str(work.state), 0) + 1
        good = (
            (ClipState.UPLOADED, ClipState.CLEARED)
            if wait
            else (ClipState.STAGED, ClipState.UPLOADING, ClipState.UPLOADED, ClipState.CLEARED)
        )
        if report.handed_over and not wait:
            continue
        if work.state not in good:
            report.problems.append(
                f"clip {work.id} ({work.source_path}) is {work.state}: "
                f"{work.last_error or 'no error recorded'}"
            )
    return report
