"""kill -9 at random moments: after restarts every clip is stored exactly once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time

import pytest

from tests.dock import Dock, central_objects, make_camera, wait_until
from tests.realparts import REQUIRED

MIB = 1024 * 1024
DEFAULT_KILLS = 20
KILLS = int(os.environ.get("BWC_DOCK_TEST_KILLS", str(DEFAULT_KILLS)))


def _in_flight(dock: Dock) -> bool:
    """A clip is being copied or uploaded right now (read straight from the ledger)."""
    try:
        with sqlite3.connect(f"file:{dock.ledger_path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(
                "SELECT count(*) FROM clips WHERE state IN ('copying', 'uploading')"
            ).fetchone()[0] > 0
    except sqlite3.OperationalError:
        return False  # no ledger or schema yet


def _dock_camera(dock: Dock, number: int, rng: random.Random) -> dict[tuple[str, str], str]:
    """A new camera folder with a few clips, moved into the watch folder (docked);
    {(camera serial, path): sha256}."""
    folder = dock.root / f"camera-{number}"
    sizes = [rng.randrange(1, 16 * MIB) for _ in range(3)]
    serial = f"CAM{number:03d}"
    expected = make_camera(folder, sizes, seed=number)
    folder.rename(dock.watch_dir / serial)
    return {(serial, path): sha256 for path, sha256 in expected.items()}


@pytest.mark.slow
def test_kill9_during_offload_loses_and_duplicates_nothing(dock: Dock) -> None:
    """SIGKILL the daemon again and again while clips are in flight; in the end every clip
    is uploaded exactly once with its first-read hash, no leftovers, the chain intact."""
    # with no kill this test would show nothing: a smaller count is for a quick local run
    assert KILLS >= 1, f"BWC_DOCK_TEST_KILLS={KILLS}: at least one kill is needed"
    if REQUIRED:
        assert KILLS >= DEFAULT_KILLS, f"CI runs at least the default {DEFAULT_KILLS} kills"
    rng = random.Random(20261124)
    killed_by_sigkill = 0
    expected = _dock_camera(dock, 0, rng)
    for kill in range(KILLS):
        expected |= _dock_camera(dock, kill + 1, rng)  # fresh work for every life
        daemon = dock.start_daemon()
        try:
            # after its start-up recovery (stale leases of the last life are gone) ...
            wait_until(lambda n=kill: _count(dock, "daemon.started") > n, timeout=60,
                       message="daemon started", interval=0.05)
            # ... and while it really works on a clip
            wait_until(lambda: _in_flight(dock), timeout=60, message="a clip in flight",
                       interval=0.02)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            daemon.send_signal(signal.SIGKILL)
            # -SIGKILL: the kill landed on a live daemon (it had not exited by itself)
            killed_by_sigkill += daemon.wait(timeout=30) == -signal.SIGKILL

    daemon = dock.start_daemon()
    try:
        wait_until(lambda: len(dock.clips()) == 3 * (KILLS + 1)
                   and all(c["state"] == "uploaded" for c in dock.clips()), timeout=300,
                   message="every clip uploaded after the kills")
    finally:
        assert dock.stop_daemon(daemon) == 0

    clips = dock.clips()
    stored = central_objects(dock.nas)
    assert sorted(stored.values()) == sorted(expected.values())  # each object exactly once
    for clip in clips:
        assert stored[clip["remote_key"]] == clip["sha256"]
        assert clip["sha256"] == expected[(clip["camera_serial"], clip["source_path"])]
    assert not list(dock.nas.rglob("*.part"))
    assert not list(dock.staging_dir.rglob("*.part"))
    assert dock.cli("audit", "verify").returncode == 0
    # the kills really hit work in flight: each restart took clips back from dead workers
    recovered = [e for e in dock.log_events() if e.get("event") == "daemon.recovered"]
    assert len(recovered) == KILLS + 1
    taken_back = [e.get("returned_to_discovered", 0) + e.get("returned_to_staged", 0)
                  for e in recovered[1:]]
    assert sum(1 for count in taken_back if count) >= max(1, KILLS * 3 // 4), taken_back
    assert killed_by_sigkill == KILLS


def _count(dock: Dock, event: str) -> int:
    return sum(1 for e in dock.log_events() if e.get("event") == event)
