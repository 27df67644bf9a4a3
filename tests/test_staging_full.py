"""Staging smaller than the camera: copying pauses, uploads free space, nothing fails."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dock import Dock, central_objects, make_camera, wait_until
from tests.realparts import need_command, need_root

MIB = 1024 * 1024


@pytest.fixture
def small_staging(tmp_path: Path) -> Iterator[Path]:
    """A real 40 MiB tmpfs as the staging filesystem."""
    need_root()
    need_command("mount")
    mount_point = tmp_path / "small-staging"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "bwc-test-staging",
                    str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_copying_pauses_when_staging_is_full_and_resumes(dock: Dock, small_staging: Path) -> None:
    """A camera holding 3x the staging space is offloaded completely, pausing on the way."""
    # the default retention keeps staged copies 72 h; space pressure must override it
    dock.write_config(dock={"staging_dir": str(small_staging), "staging_reserve_mb": 4})
    camera = dock.root / "camera"
    expected = make_camera(camera, [10 * MIB + n for n in range(12)], sidecars=False)
    daemon = dock.start_daemon()
    try:
        camera.rename(dock.watch_dir / "X1")
        wait_until(lambda: len(dock.clips()) == 12
                   and all(c["state"] == "uploaded" for c in dock.clips()),
                   timeout=240, message="all clips uploaded through a small staging area")
    finally:
        assert dock.stop_daemon(daemon) == 0
    assert sorted(central_objects(dock.nas).values()) == sorted(expected.values())
    events = [e["event"] for e in dock.log_events()]
    assert "copy.paused" in events
    assert "copy.resumed" in events
    assert "clip.quarantined" not in events
    assert not any(e.get("level") == "error" for e in dock.log_events())


def test_hand_run_ingest_without_a_daemon_gets_through_a_small_staging(
    dock: Dock, small_staging: Path
) -> None:
    """ingest --wait with no daemon uploads and frees staging itself while copying waits."""
    dock.write_config(dock={"staging_dir": str(small_staging), "staging_reserve_mb": 4})
    camera = dock.root / "card"
    expected = make_camera(camera, [10 * MIB + n for n in range(8)], sidecars=False)
    result = dock.cli("ingest", str(camera), "--camera-serial", "HAND1", "--wait",
                      "--timeout", "300")
    assert "8 uploaded" in result.stdout
    assert sorted(central_objects(dock.nas).values()) == sorted(expected.values())
