"""Pass 2 merged into the upload when an uploader waits (handoff.py).

Real parts throughout: the ledger, the staging area, the copier and uploader as the
daemon wires them, and the folder backend. "An uploader waits" is the uploader's own
``handoff.waiting()`` block, entered by the test thread around the copy, as the
daemon's idle uploader enters it; the damage is one flipped byte in the staged file.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bwc_dock.config import parse_config
from bwc_dock.found import DockedVolume
from bwc_dock.handoff import UploadHandoff
from bwc_dock.ledger import ClipState, ClipWork, Ledger
from bwc_dock.ledger.leases import current_owner
from bwc_dock.scanning import scan_into_ledger
from bwc_dock.scheduler import Scheduler
from bwc_dock.storage import open_backend
from bwc_dock.storage.base import StorageBackend
from bwc_dock.wiring import Stages
from tests.dock import Dock, central_objects, flip_byte, make_camera, wait_until

MIB = 1024 * 1024
CAMERA = "CAM1"


@dataclass
class _Rig:
    ledger: Ledger
    backend: StorageBackend
    stages: Stages
    volume: DockedVolume
    docking: int
    nas: Path
    expected: dict[str, str]  # {camera path: sha256}

    def copy_one(self, *, uploader_waits: bool) -> list[MutableMapping[str, Any]]:
        """Copy the next clip; the copier's copy.done log entries."""
        copier = self.stages.copier(current_owner("copier"))
        with capture_logs() as logs:
            if uploader_waits:
                with self.stages.handoff.waiting():
                    assert copier.copy_next(threading.Event(), self.docking)
            else:
                assert copier.copy_next(threading.Event(), self.docking)
        return [entry for entry in logs if entry["event"] == "copy.done"]

    def upload_one(self) -> None:
        assert self.stages.uploader(current_owner("uploader")).upload_next()

    def close(self) -> None:
        self.backend.close()
        self.ledger.close()

    def clip(self) -> ClipWork:
        (only,) = self.ledger.clips(docking_id=self.docking)
        return only

    def staged_file(self) -> Path:
        clip = self.clip()
        assert clip.staged_path is not None
        return self.stages.staging.root / clip.staged_path / clip.name


def _open_rig(tmp_path: Path, clip_size: int, upload_workers: int = 1) -> _Rig:
    """A camera folder of one clip, docked and scanned, beside a fresh dock."""
    camera = tmp_path / "camera"
    expected = make_camera(camera, [clip_size], sidecars=False)
    nas = tmp_path / "nas"
    nas.mkdir()
    (nas / ".bwc-dock-store").touch()  # the share's marker file
    config = parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state"),
                                    # no staging reserve (product: 1 GiB): the test disk is shared
                                    "staging_reserve_mb": 0, "upload_workers": upload_workers},
                           "storage": {"path": str(nas)}})
    ledger = Ledger.open(config, "test")
    backend = open_backend(config)
    volume = DockedVolume("ingest", str(camera), camera, CAMERA)
    docking = ledger.record_docking(volume, current_owner("test"))
    scan_into_ledger(ledger, config, docking, volume)
    stages = Stages(config, ledger, backend)
    return _Rig(ledger, backend, stages, volume, docking, nas, expected)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[_Rig]:
    opened = _open_rig(tmp_path, 3 * MIB + 5)
    try:
        yield opened
    finally:
        opened.close()


def test_a_clip_an_uploader_waits_for_is_verified_by_its_upload(rig: _Rig) -> None:
    (done,) = rig.copy_one(uploader_waits=True)
    assert done["verified_by"] == "upload"
    assert (rig.clip().state, rig.clip().staged_verified) == (ClipState.STAGED, False)
    assert rig.ledger.unverified_staged(CAMERA) == 1  # the camera is kept docked

    rig.upload_one()

    assert (rig.clip().state, rig.clip().staged_verified) == (ClipState.UPLOADED, True)
    assert rig.ledger.unverified_staged(CAMERA) == 0
    assert sorted(central_objects(rig.nas).values()) == sorted(rig.expected.values())


def test_with_no_uploader_waiting_the_copier_verifies_the_copy_itself(rig: _Rig) -> None:
    (done,) = rig.copy_one(uploader_waits=False)
    assert done["verified_by"] == "copier"
    assert rig.clip().staged_verified
    assert rig.ledger.unverified_staged(CAMERA) == 0


def test_a_damaged_handed_over_copy_is_read_off_the_camera_again(rig: _Rig) -> None:
    """The folder backend's read-back of the stored file does not match, the staged copy
    read back from disk does not either: since no pass 2 verified that copy, the clip
    goes back to the camera (the copier verifies the new copy itself), not to quarantine."""
    rig.copy_one(uploader_waits=True)
    flip_byte(rig.staged_file())

    with capture_logs() as logs:
        rig.upload_one()

    clip = rig.clip()
    assert clip.state is ClipState.DISCOVERED
    assert clip.copy_attempts == 1
    assert [e["action"] for e in logs if e["event"] == "upload.staged_copy_damaged"] == [
        "read off the camera again"
    ]
    assert rig.stages.handoff.sent_back(CAMERA) == 1  # ingest copies again on this
    assert central_objects(rig.nas) == {}  # nothing damaged was named in storage

    (done,) = rig.copy_one(uploader_waits=True)  # a clip found damaged once is not handed over
    assert done["verified_by"] == "copier"
    rig.upload_one()
    assert rig.clip().state is ClipState.UPLOADED
    assert rig.clip().sha256 == next(iter(rig.expected.values()))
    assert sorted(central_objects(rig.nas).values()) == sorted(rig.expected.values())


def test_the_same_damage_to_a_copy_pass_2_verified_is_quarantined(rig: _Rig) -> None:
    """The contrast: a staged copy the copier verified and then found damaged cannot be
    told from later decay of the staging disk, and is quarantined as before."""
    rig.copy_one(uploader_waits=False)
    flip_byte(rig.staged_file())
    rig.upload_one()
    assert rig.clip().state is ClipState.QUARANTINED


def test_after_a_restart_a_damaged_handed_over_copy_is_read_off_the_camera_again(
    tmp_path: Path,
) -> None:
    """The process that handed the clip over is gone (its ledger closed, its in-memory
    register with it); a new process over the same ledger finds the staged copy damaged
    and sends the clip back to be read off the camera again, as the old one would have,
    instead of quarantining it."""
    first = _open_rig(tmp_path, 3 * MIB + 5)
    first.copy_one(uploader_waits=True)
    first.close()
    later = _open_rig_again(tmp_path, first)
    try:
        assert (later.clip().state, later.clip().staged_verified) == (ClipState.STAGED, False)
        flip_byte(later.staged_file())

        later.upload_one()

        clip = later.clip()
        assert (clip.state, clip.copy_attempts, clip.staged_path) == (
            ClipState.DISCOVERED, 1, None)
        (done,) = later.copy_one(uploader_waits=True)  # read again from the camera folder
        assert done["verified_by"] == "copier"
        later.upload_one()
        assert later.clip().state is ClipState.UPLOADED
        assert sorted(central_objects(later.nas).values()) == sorted(later.expected.values())
    finally:
        later.close()


def _open_rig_again(tmp_path: Path, before: _Rig) -> _Rig:
    """A new process over the same state directory, camera and storage folder."""
    config = parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state"),
                                    # no staging reserve (product: 1 GiB): the test disk is shared
                                    "staging_reserve_mb": 0},
                           "storage": {"path": str(before.nas)}})
    ledger = Ledger.open(config, "test")
    backend = open_backend(config)
    stages = Stages(config, ledger, backend)
    return _Rig(ledger, backend, stages, before.volume, before.docking, before.nas,
                before.expected)


@pytest.mark.parametrize("damaged", [False, True], ids=["intact", "damaged"])
def test_a_handed_over_clip_whose_upload_fails_is_read_back_at_once(
    rig: _Rig, damaged: bool
) -> None:
    """Central storage is away (its folder is gone): the upload proves nothing, so the
    uploader reads the staged copy back from disk right then, while the camera is still
    docked, instead of leaving it unverified until a later attempt."""
    rig.copy_one(uploader_waits=True)
    if damaged:
        flip_byte(rig.staged_file())
    shutil.rmtree(rig.nas)

    rig.upload_one()

    clip = rig.clip()
    assert rig.ledger.unverified_staged(CAMERA) == 0
    if damaged:
        assert (clip.state, clip.copy_attempts, clip.upload_attempts) == (
            ClipState.DISCOVERED, 1, 0)
    else:
        assert (clip.state, clip.copy_attempts, clip.upload_attempts) == (
            ClipState.STAGED, 0, 1)
        assert clip.staged_verified  # the read-back proved it: a later damage is decay
        assert "not there" in (clip.last_error or "")


def test_a_clip_is_handed_over_only_while_an_uploader_is_free_for_it() -> None:
    """One waiting uploader takes one handed-over clip; once it took it, it is free again."""
    handoff = UploadHandoff()
    assert not handoff.hand_over(1)  # nobody waits
    with handoff.waiting():
        assert handoff.hand_over(1)
        assert not handoff.hand_over(2)  # the one waiting uploader is spoken for
        handoff.claimed(1)
        assert handoff.hand_over(3)
    handoff.note_sent_back(CAMERA)
    assert handoff.sent_back(CAMERA) == 1
    assert handoff.sent_back(CAMERA) == 0


def test_ingest_wait_reads_a_clip_again_when_its_handed_over_copy_was_damaged(
    tmp_path: Path,
) -> None:
    """``ingest --wait`` (the scheduler's offload of one folder): the staged copy of the
    only clip is damaged while its upload reads it (one byte near its end flipped from the
    uploader's first progress report, its bandwidth hook). Ingest copies the clip again
    from the folder, verifies that copy itself, and ends with the clip uploaded with its
    first-read hash."""
    rig = _open_rig(tmp_path, 24 * MIB, upload_workers=2)
    damaged: list[Path] = []

    def damage_once(_sent: int) -> None:
        if not damaged:
            damaged.append(rig.staged_file())
            flip_byte(damaged[0], -MIB)  # past what the send has read ahead by now

    try:
        uploaders = [
            rig.stages.uploader(current_owner(f"uploader-{n}"), damage_once) for n in (1, 2)
        ]
        with capture_logs() as logs:
            scheduler = Scheduler(rig.stages, threading.Event(), threading.Event(),
                                  idle_seconds=0.5, deadline=time.monotonic() + 600)
            stopped = scheduler.offload(rig.docking, CAMERA, [rig.clip().id], uploaders)
        clip = rig.clip()
    finally:
        rig.close()

    assert stopped is None
    assert damaged
    verified_by = [e["verified_by"] for e in logs if e["event"] == "copy.done"]
    assert verified_by == ["upload", "copier"]
    assert [e["event"] for e in logs if e["event"].startswith("upload.staged_copy")] == [
        "upload.staged_copy_damaged"
    ]
    assert (clip.state, clip.copy_attempts) == (ClipState.UPLOADED, 1)
    assert clip.sha256 == next(iter(rig.expected.values()))
    assert sorted(central_objects(rig.nas).values()) == sorted(rig.expected.values())


def _ledger_rows(dock: Dock, columns: str) -> list[tuple[Any, ...]]:
    """The clips' ``columns``, read straight from the ledger file (no row: no ledger yet)."""
    try:
        with sqlite3.connect(f"file:{dock.ledger_path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(f"SELECT {columns} FROM clips ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []  # no ledger or schema yet


def _handed_over_in_upload(dock: Dock) -> bool:
    """The clip is being uploaded with its staged copy left for that upload to verify."""
    return _ledger_rows(dock, "state, staged_verified") == [("uploading", 0)]


def test_kill9_of_the_daemon_then_a_damaged_handed_over_copy_is_read_again(dock: Dock) -> None:
    """A real daemon hands a docked camera's clip over to its waiting uploader and is
    killed (SIGKILL) while that upload crawls under a bandwidth limit; the staged copy is
    then damaged. The next daemon sends the clip back to the camera and copies it again,
    instead of quarantining it, and stores it under its first-read hash."""
    expected = make_camera(dock.root / "card", [8 * MIB], sidecars=False)
    dock.write_config(storage={"bandwidth": [
        {"start": "00:00:00", "end": "23:59:59", "limit_mb_per_s": 0.2}]})
    first = dock.start_daemon(dock.root / "first.log")
    try:
        (dock.root / "card").rename(dock.watch_dir / CAMERA)  # docked
        wait_until(lambda: _handed_over_in_upload(dock), timeout=120,
                   message="the clip handed over to its upload")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    ((staged_path, name),) = _ledger_rows(dock, "staged_path, name")
    flip_byte(dock.staging_dir / staged_path / name)
    dock.write_config()  # no bandwidth limit for the next life

    second = dock.start_daemon(dock.root / "second.log")
    try:
        wait_until(lambda: _ledger_rows(dock, "state") in ([("uploaded",)], [("quarantined",)]),
                   timeout=120, message="the clip uploaded or quarantined")
    finally:
        assert dock.stop_daemon(second) == 0
    events = dock.log_events(dock.root / "second.log")

    assert _ledger_rows(dock, "state, copy_attempts, sha256") == [
        ("uploaded", 1, next(iter(expected.values())))]
    assert [e["action"] for e in events if e["event"] == "upload.staged_copy_damaged"] == [
        "read off the camera again"]
    assert [e["verified_by"] for e in events if e["event"] == "copy.done"] == ["copier"]
    assert sorted(central_objects(dock.nas).values()) == sorted(expected.values())
