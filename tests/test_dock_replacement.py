"""A dock PC dies mid-life and is replaced as the README's "Backup and replacing a dock
PC" says: the configuration is restored from its backup, the ledger and staging are
lost with the PC, and the new PC, given a new dock id (or, as the README also
describes, the same one), docks the cameras again.

Real parts: two docks' state folders, their SQLite ledgers and staging on disk, one
central-storage folder they share, ``bwc-dock run`` daemons, and a real SIGKILL. The
camera is a watch folder (the same scan and copier as a mounted camera); "storage
stopped" is the share's marker file gone, which is how a NAS that is not mounted looks.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from tests.dock import Dock, central_objects, make_camera, wait_until

SIZES = [3000, 4000, 5000, 6000]
SERIAL = "CAM1"  # a watch folder's name is its camera's serial
MARKER = ".bwc-dock-store"


def _states(dock: Dock) -> dict[str, str]:
    return {clip["source_path"]: clip["state"] for clip in dock.clips()}


def _life_of_dock_a(dock_a: Dock, card: Path, later: dict[str, Path]) -> None:
    """Dock A offloads the first clips, then storage stops and the camera gets two more:
    A reads them into staging, cannot upload them, and is killed with SIGKILL."""
    daemon = dock_a.start_daemon()
    try:
        card.rename(dock_a.watch_dir / SERIAL)
        wait_until(lambda: set(_states(dock_a).values()) == {"uploaded"}
                   and len(_states(dock_a)) == 2, timeout=120, message="A's first uploads")
        (dock_a.nas / MARKER).unlink()  # the NAS stops being there
        for path, holding in later.items():
            holding.rename(dock_a.watch_dir / SERIAL / path)
        wait_until(lambda: sorted(_states(dock_a).values()) == [
            "staged", "staged", "uploaded", "uploaded"] and all(
            clip["last_error"] for clip in dock_a.clips() if clip["state"] == "staged"),
            timeout=120, message="A's later clips staged, their uploads refused")
    finally:
        daemon.send_signal(signal.SIGKILL)
        assert daemon.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.parametrize("new_id", ["dock-a2", "dock-a"], ids=["new-id", "same-id"])
def test_a_dead_dock_replaced_mid_life_loses_and_doubles_nothing(
    tmp_path: Path, new_id: str
) -> None:
    """Dock A dies with clips uploaded and clips only staged; a new PC with A's restored
    configuration (new or same dock id) docks the camera: every clip is stored once with
    its first-read hash, each has a custody record of the new dock, and audit verify
    --remote says what the README says it says."""
    dock_a = Dock(tmp_path / "a")
    dock_a.write_config(dock={"id": "dock-a"})
    card = tmp_path / "card"
    expected = make_camera(card, SIZES, sidecars=False)
    later_paths = sorted(expected)[2:]
    later = {path: tmp_path / f"later-{number}" for number, path in enumerate(later_paths)}
    for path, holding in later.items():
        (card / path).rename(holding)  # rename keeps the clip's bytes and mtime

    _life_of_dock_a(dock_a, card, later)

    # the PC is dead: its ledger and staging are gone; its configuration is restored
    # from the backup onto the new PC, which gets the dock id the README says
    shutil.rmtree(dock_a.state_dir)
    (dock_a.nas / MARKER).touch()  # the share mounted again
    dock_b = Dock(tmp_path / "b")
    dock_b.write_config(dock={"id": new_id}, storage={"path": str(dock_a.nas)})
    daemon = dock_b.start_daemon()
    try:
        (dock_a.watch_dir / SERIAL).rename(dock_b.watch_dir / SERIAL)  # docked again
        wait_until(lambda: _states(dock_b) == dict.fromkeys(expected, "uploaded"),
                   timeout=120, message="every clip uploaded by the new PC")
    finally:
        assert dock_b.stop_daemon(daemon) == 0

    stored = central_objects(dock_a.nas)
    clip_objects = sorted(sha256 for sha256 in stored.values() if sha256 in expected.values())
    assert clip_objects == sorted(expected.values())  # each clip exactly once
    assert not list(dock_a.nas.rglob("*.part"))
    for clip in dock_b.clips():
        assert clip["sha256"] == expected[clip["source_path"]]  # the first read's hash
        assert stored[clip["remote_key"]] == clip["sha256"]
        record = json.loads((dock_a.nas / dock_b.manifest_key(clip)).read_text())
        assert record["sha256"] == clip["sha256"]
    # the dead dock's custody records of what it uploaded stay, and agree (A numbered
    # its clips 1 and 2; the keys are content-addressed, the same for both docks)
    for clip_id, clip in enumerate(sorted(dock_b.clips(), key=lambda c: c["source_path"])[:2],
                                   start=1):
        key = f"{clip['remote_key']}.dock-a.clip-{clip_id}.json"
        assert json.loads((dock_a.nas / key).read_text())["sha256"] == clip["sha256"]
    assert dock_b.cli("audit", "verify").returncode == 0

    remote = dock_b.cli("audit", "verify", "--remote", check=False)
    if new_id != "dock-a":
        assert remote.returncode == 0, remote.stdout + remote.stderr
    else:  # the README: the old PC's anchors carry this id, the fresh ledger cannot
        # explain them, and the check says so (that is why it recommends a new id)
        assert remote.returncode == 1
        assert "the local ledger was changed after the fact" in remote.stderr
