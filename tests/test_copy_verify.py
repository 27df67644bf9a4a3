"""The staged copy is verified by re-reading it from disk; damage is caught and recopied.

Fault injection by an explicit map: the copier's disk re-read is wrapped so that, on the
listed calls, one byte of the staged file on disk is flipped just before it is re-read
(as a failing disk or a bad RAM page would). Everything else is real: files, ledger.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bwc_dock import copier as copier_module
from bwc_dock.config import parse_config
from bwc_dock.copier import Copier
from bwc_dock.found import DockedVolume
from bwc_dock.hashing import hash_file_from_disk
from bwc_dock.ledger import ClipState, Ledger
from bwc_dock.ledger.leases import current_owner
from bwc_dock.scanning import scan_into_ledger
from bwc_dock.staging import StagingArea
from tests.dock import flip_byte, sha256_of, write_random


def _open_files_under(folder: Path) -> list[str]:
    """Files under ``folder`` this process still holds open (from /proc/self/fd)."""
    opened = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # the descriptor of the directory listing itself, closed meanwhile
        if target.startswith(f"{folder}/"):
            opened.append(target)
    return opened


def _corrupting(calls_to_corrupt: set[int]) -> Callable[[Path], str]:
    real = hash_file_from_disk
    calls = {"count": 0}

    def reread(path: Path) -> str:
        calls["count"] += 1
        if calls["count"] in calls_to_corrupt:
            flip_byte(path)
        return real(path)

    return reread


@pytest.fixture
def ledger_and_copier(tmp_path: Path) -> Iterator[tuple[Ledger, Copier, Path, Path]]:
    config = parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state")},
                           "storage": {"path": str(tmp_path / "nas")}})
    camera = tmp_path / "camera"
    write_random(camera / "DCIM" / "CLIP.MP4", 9 * 1024 * 1024 + 3, random.Random(1))
    ledger = Ledger.open(config, "test")
    volume = DockedVolume("ingest", str(camera), camera, "CAM1")
    docking = ledger.record_docking(volume, current_owner("test"))
    scan_into_ledger(ledger, config, docking, volume)
    copier = Copier(ledger, StagingArea(config.staging_dir, 0), current_owner("copier"))
    yield ledger, copier, camera / "DCIM" / "CLIP.MP4", config.staging_dir
    ledger.close()


def test_staged_copy_damaged_once_is_caught_and_copied_again(
    ledger_and_copier: tuple[Ledger, Copier, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flipped byte on disk after the copy is found by the re-read; the second copy holds."""
    ledger, copier, source, staging = ledger_and_copier
    monkeypatch.setattr(copier_module, "hash_file_from_disk", _corrupting({1}))
    with capture_logs() as logs:
        assert copier.copy_next(threading.Event())
    [clip] = ledger.clips()
    assert clip.state is ClipState.STAGED
    assert clip.sha256 == sha256_of(source)
    assert clip.staged_path is not None
    assert sha256_of(staging / clip.staged_path / clip.name) == clip.sha256
    assert [e["attempt"] for e in logs if e["event"] == "copy.verify_mismatch"] == [1]


def test_staged_copy_damaged_twice_is_quarantined(
    ledger_and_copier: tuple[Ledger, Copier, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two failed verifications quarantine the clip; it stays on the camera."""
    ledger, copier, source, _staging = ledger_and_copier
    monkeypatch.setattr(copier_module, "hash_file_from_disk", _corrupting({1, 2}))
    assert copier.copy_next(threading.Event())
    [clip] = ledger.clips()
    assert clip.state is ClipState.QUARANTINED
    assert "did not verify" in (clip.last_error or "")
    assert source.exists()


def test_undock_during_copy_leaves_clip_discovered_without_leftovers(
    ledger_and_copier: tuple[Ledger, Copier, Path, Path],
) -> None:
    """A cancelled copy (camera gone) puts the clip back, with no .part in staging."""
    ledger, copier, _source, staging = ledger_and_copier
    cancel = threading.Event()
    cancel.set()
    with capture_logs() as logs:
        assert copier.copy_next(cancel)
    [clip] = ledger.clips()
    assert clip.state is ClipState.DISCOVERED
    assert not list(staging.rglob("*.part"))
    assert [e["event"] for e in logs if e["event"].startswith("copy.")] == ["copy.interrupted"]


def test_camera_returning_different_bytes_twice_is_quarantined(
    ledger_and_copier: tuple[Ledger, Copier, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a re-read of the camera gives other bytes than the first read, neither is trusted."""
    ledger, copier, source, staging = ledger_and_copier
    real = hash_file_from_disk

    def reread(path: Path) -> str:
        flip_byte(path)  # the staged copy fails its check ...
        flip_byte(source)  # ... and the camera's file reads differently next time
        return real(path)

    monkeypatch.setattr(copier_module, "hash_file_from_disk", reread)
    assert copier.copy_next(threading.Event())
    [clip] = ledger.clips()
    assert clip.state is ClipState.QUARANTINED
    assert "different bytes on two reads" in (clip.last_error or "")
    assert not list(staging.rglob("*.part"))
    assert _open_files_under(staging) == []  # the second copy was closed, not only removed


@pytest.mark.parametrize("damaged_rereads", [set(), {1}, {1, 2}])
def test_verify_in_background_puts_clip_where_it_belongs(
    ledger_and_copier: tuple[Ledger, Copier, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    damaged_rereads: set[int],
) -> None:
    """Verified in a thread of its own (as the daemon runs it): staged, recopied or
    quarantined as in the foreground, and no temporary file is left open or behind."""
    ledger, copier, source, staging = ledger_and_copier
    monkeypatch.setattr(copier_module, "hash_file_from_disk", _corrupting(damaged_rereads))
    assert copier.copy_next(threading.Event(), verify_in_background=True)
    assert not copier.copy_next(threading.Event(), verify_in_background=True)  # waits for it
    [clip] = ledger.clips()
    expected = ClipState.QUARANTINED if len(damaged_rereads) == 2 else ClipState.STAGED
    assert clip.state is expected
    assert not list(staging.rglob("*.part"))
    assert _open_files_under(staging) == []
    if expected is ClipState.STAGED:
        assert clip.staged_path is not None
        assert sha256_of(staging / clip.staged_path / "CLIP.MP4") == sha256_of(source)
