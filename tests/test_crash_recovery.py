"""kill -9 at random moments: after restarts every clip is stored exactly once."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.dock import Dock, central_objects, make_camera, wait_until

MIB = 1024 * 1024
KILLS = int(os.environ.get("BWC_DOCK_TEST_KILLS", "20"))


@pytest.mark.slow
def test_kill9_during_offload_loses_and_duplicates_nothing(dock: Dock) -> None:
    """SIGKILL the daemon again and again mid-offload; in the end all clips are uploaded once."""
    sizes = [random.Random(n).randrange(1, 24 * MIB) for n in range(40)] + [80 * MIB]
    camera = dock.root / "camera-X81234567"
    expected = make_camera(camera, sizes)
    camera.rename(dock.watch_dir / "X81234567")  # docking: the folder appears at once
    rng = random.Random(20261124)

    for kill in range(KILLS):
        daemon = dock.start_daemon()
        wait_until(lambda n=kill: _count(dock, "daemon.started") > n, timeout=30,
                   message="daemon started")
        time.sleep(rng.uniform(0.0, 0.6))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        clips = dock.clips()
        assert len(clips) == len(sizes)  # discovery is recorded before any copy starts
        pending_after_kills = sum(c["state"] != "uploaded" for c in clips)
    assert pending_after_kills > 0, "the data set is too small: the kills hit an idle daemon"

    daemon = dock.start_daemon()
    try:
        wait_until(lambda: all(c["state"] == "uploaded" for c in dock.clips())
                   and len(dock.clips()) == len(sizes), timeout=300,
                   message="every clip uploaded after the kills")
    finally:
        assert dock.stop_daemon(daemon) == 0

    clips = dock.clips()
    stored = central_objects(dock.nas)
    assert sorted(stored.values()) == sorted(expected.values())  # each object exactly once
    by_path = {clip["source_path"]: clip for clip in clips}
    for path, sha256 in expected.items():
        if path in by_path:
            assert by_path[path]["sha256"] == sha256
            assert stored[by_path[path]["remote_key"]] == sha256
    assert not list(dock.nas.rglob("*.part"))
    assert not list(dock.staging_dir.rglob("*.part"))
    assert dock.cli("audit", "verify").returncode == 0
    # the kills really hit work in flight: recovery took clips back from dead workers
    recovered = [e for e in dock.log_events() if e.get("event") == "daemon.recovered"]
    taken_back = sum(e.get("returned_to_discovered", 0) + e.get("returned_to_staged", 0)
                     for e in recovered)
    assert taken_back >= len(recovered) // 3, recovered


def _count(dock: Dock, event: str) -> int:
    return sum(1 for e in dock.log_events() if e.get("event") == event)
