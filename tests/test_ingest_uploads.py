"""A hand-run ``ingest --wait`` (the scheduler's offload of one folder): as many upload
threads as the daemon has upload workers, and no re-reading of the whole folder per upload."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bwc_dock.config import parse_config
from bwc_dock.found import DockedVolume
from bwc_dock.ledger import ClipState, ClipWork, Ledger
from bwc_dock.ledger.leases import current_owner
from bwc_dock.scanning import scan_into_ledger
from bwc_dock.scheduler import Scheduler
from bwc_dock.storage import open_backend
from bwc_dock.storage.base import ProgressCallback
from bwc_dock.wiring import Stages
from tests.dock import central_objects, make_camera

MIB = 1024 * 1024
# Long enough for any machine to stage a second clip; only a broken build waits it out.
BARRIER_TIMEOUT_SECONDS = 120.0


def test_ingest_wait_uploads_two_clips_at_once(tmp_path: Path) -> None:
    """With two upload workers, two clips are in flight to central storage at the same
    time: each uploader's first progress report waits at a barrier for the other's, which
    only a second upload running beside the first can reach. The real copier, ledger and
    folder backend; the progress callback is the uploader's own bandwidth hook."""
    camera = tmp_path / "card"
    expected = make_camera(camera, [2 * MIB] * 6, sidecars=False)
    config = parse_config(
        {
            "dock": {
                "state_dir": str(tmp_path / "state"),
                "upload_workers": 2,
                # no staging reserve (product: 1 GiB): the test disk is shared
                "staging_reserve_mb": 0,
            },
            "storage": {"path": str(tmp_path / "nas")},
        }
    )
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas" / ".bwc-dock-store").touch()  # the share's marker file
    ledger = Ledger.open(config, "test")
    backend = open_backend(config)
    volume = DockedVolume("ingest", str(camera), camera, "CAM1")
    docking = ledger.record_docking(volume, current_owner("test"))
    new_ids, _found = scan_into_ledger(ledger, config, docking, volume)
    both_uploading = threading.Barrier(2, timeout=BARRIER_TIMEOUT_SECONDS)
    met: list[str] = []

    def wait_for_the_other(owner: str) -> ProgressCallback:
        def on_progress(_sent: int) -> None:
            if owner not in met:
                met.append(owner)
                both_uploading.wait()  # BrokenBarrierError when no second upload comes

        return on_progress

    try:
        stages = Stages(config, ledger, backend)
        uploaders = [
            stages.uploader(current_owner(f"uploader-{n}"), wait_for_the_other(f"uploader-{n}"))
            for n in (1, 2)
        ]
        stopped = _folder_scheduler(stages, 4 * BARRIER_TIMEOUT_SECONDS).offload(
            docking, volume.camera_serial, new_ids, uploaders
        )
        clips = ledger.clips(ids=set(new_ids))
    finally:
        backend.close()
        ledger.close()

    assert stopped is None
    assert not both_uploading.broken
    assert sorted(met) == ["uploader-1", "uploader-2"]
    assert [c.state for c in clips] == [ClipState.UPLOADED] * 6
    assert sorted(central_objects(tmp_path / "nas").values()) == sorted(expected.values())


def _folder_scheduler(stages: Stages, seconds: float) -> Scheduler:
    """The scheduler ``ingest --wait`` runs (its poll interval, a deadline)."""
    return Scheduler(stages, threading.Event(), threading.Event(), idle_seconds=0.5,
                     deadline=time.monotonic() + seconds)


class _CountingLedger(Ledger):
    """The real ledger, counting how often a set of clips is read whole."""

    reads_by_id = 0

    def clips(self, *arguments: Any, **filters: Any) -> list[ClipWork]:
        if filters.get("ids") is not None:
            self.reads_by_id += 1
        return super().clips(*arguments, **filters)


def test_ingest_wait_does_not_read_the_whole_folder_per_upload(tmp_path: Path) -> None:
    """Uploading a folder of n clips reads the folder's clips only when nothing is left to
    claim once copying is over, not after every upload: that made n clips cost n² rows
    (2,000 small clips took 4.5 minutes, now under one). With 60 clips the old way read
    them at least 60 times; the bound leaves room for one idle poll per thread every
    POLL_SECONDS during a tail of several seconds on a slow machine."""
    camera = tmp_path / "card"
    expected = make_camera(camera, [4096] * 60, sidecars=False)
    config = parse_config({
        "dock": {"state_dir": str(tmp_path / "state"), "upload_workers": 2,
                 # no staging reserve (product: 1 GiB): the test disk is shared
                 "staging_reserve_mb": 0},
        "storage": {"path": str(tmp_path / "nas")},
    })
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas" / ".bwc-dock-store").touch()  # the share's marker file
    ledger = _CountingLedger.open(config, "test")
    assert isinstance(ledger, _CountingLedger)
    backend = open_backend(config)
    volume = DockedVolume("ingest", str(camera), camera, "CAM1")
    docking = ledger.record_docking(volume, current_owner("test"))
    new_ids, _found = scan_into_ledger(ledger, config, docking, volume)
    try:
        stages = Stages(config, ledger, backend)
        uploaders = [stages.uploader(current_owner(f"uploader-{n}")) for n in (1, 2)]
        stopped = _folder_scheduler(stages, 600).offload(
            docking, volume.camera_serial, new_ids, uploaders
        )
        reads = ledger.reads_by_id
        clips = ledger.clips(ids=set(new_ids))
    finally:
        backend.close()
        ledger.close()

    assert stopped is None
    assert [c.state for c in clips] == [ClipState.UPLOADED] * 60
    assert sorted(central_objects(tmp_path / "nas").values()) == sorted(expected.values())
    assert 1 <= reads < 30
