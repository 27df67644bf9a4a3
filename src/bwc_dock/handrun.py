"""Hand-run work (``ingest``): the same stage code, ledger and leases as the daemon.

With a daemon alive, ``ingest`` records the docking and hands the copying over; with
none, it runs the daemon's worker loops itself (scheduler.py): it copies, and with
``--wait`` uploads until the folder is done. It never writes to the folder.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from bwc_dock.config import Config
from bwc_dock.errors import UsageError
from bwc_dock.found import DockedVolume
from bwc_dock.ledger import ClipState, Ledger
from bwc_dock.ledger.leases import current_owner, heartbeat_alive
from bwc_dock.scanner import ScanResult
from bwc_dock.scanning import folder_profile, scan_into_ledger
from bwc_dock.scheduler import ProgressSink, Scheduler
from bwc_dock.storage import open_backend
from bwc_dock.wiring import Stages

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.5


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
    owner = current_owner("ingest")
    docking_id = ledger.record_docking(volume, owner)
    report = IngestReport(docking_id, handed_over=handing_over)
    new_ids, found = scan_into_ledger(ledger, config, docking_id, volume)
    report.new, report.refused = len(new_ids), len(found.refused)
    clip_ids = _clips_of_folder(ledger, camera_serial, found)
    report.clips = len(clip_ids)
    deadline = time.monotonic() + timeout_seconds
    if handing_over:
        # ownerless (the daemon's to adopt) only now that every clip is in the ledger:
        # adopted mid-scan, it looked done with nothing listed and was ended
        ledger.hand_over_docking(docking_id, owner)
        log.info("ingest.handed_over", docking=docking_id, clips=report.clips)
        if wait:
            _wait_for(ledger, clip_ids, ClipState.UPLOADED, deadline, progress)
    else:
        stopped = _run_stages(
            config, ledger, volume, docking_id, clip_ids, wait, deadline, progress
        )
        if stopped is not None:
            log.error("ingest.stopped", docking=docking_id, reason=stopped)
            report.problems.append(stopped)
    return _summarise(ledger, clip_ids, report, wait)


def _run_stages(
    config: Config,
    ledger: Ledger,
    volume: DockedVolume,
    docking_id: int,
    clip_ids: list[int],
    wait: bool,
    deadline: float,
    progress: ProgressSink | None,
) -> str | None:
    """No daemon runs: the daemon's worker loops (scheduler.py) over this folder, with
    as many uploading threads as the daemon has upload workers. Why copying stopped
    short, or None."""
    backend = open_backend(config)
    try:
        stages = Stages(config, ledger, backend)
        uploaders = [
            stages.uploader(current_owner(f"ingest-uploader-{number}"))
            for number in range(1, config.dock.upload_workers + 1)
        ]
        scheduler = Scheduler(
            stages, threading.Event(), threading.Event(), idle_seconds=POLL_SECONDS,
            deadline=deadline,
        )
        if wait:  # stop when this folder is done
            return scheduler.offload(
                docking_id, volume.camera_serial, clip_ids, uploaders, progress
            )
        stopped = scheduler.copy_all(docking_id, uploaders[0], progress)
        ledger.end_docking(docking_id, "ingest copied")
        return stopped
    finally:
        backend.close()


def _clips_of_folder(ledger: Ledger, camera_serial: str, found: ScanResult) -> list[int]:
    """Every clip of this camera whose file is in the folder now (new or seen before)."""
    return ledger.present_clip_ids(camera_serial, found.clips)


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
