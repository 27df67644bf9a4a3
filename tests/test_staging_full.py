"""Staging smaller than the camera: copying pauses, uploads free space, nothing fails."""

from __future__ import annotations

import sqlite3
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


GIB = 1024 * MIB


def inflated_camera(folder: Path) -> None:
    """A camera with one ordinary clip and one 200 GiB sparse file (under the size limit,
    as a hostile camera can claim): the file holds no blocks, its size is the attack."""
    make_camera(folder, [1 * MIB], sidecars=False, seed=7)
    big = folder / "DCIM" / "BIG.MP4"
    subprocess.run(["truncate", "-s", str(200 * GIB), str(big)], check=True)


def staged_files(staging: Path) -> set[str]:
    return {str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()}


def test_an_inflated_file_is_refused_alone_and_staging_is_not_emptied(
    dock: Dock, small_staging: Path
) -> None:
    """Daemon, watch folders: a 200 GiB sparse file is refused as hostile (copy.refused,
    never copy.paused), the camera's other clip is uploaded, the staged copies retention
    keeps stay, and the stalled offload raises an alarm."""
    need_command("truncate")
    dock.write_config(
        dock={"staging_dir": str(small_staging), "staging_reserve_mb": 4},
        alarms={"stalled_offload_minutes": 0.05},
    )
    first = dock.root / "first"
    make_camera(first, [1 * MIB, 1 * MIB + 1], sidecars=False)
    inflated = dock.root / "inflated"
    inflated_camera(inflated)
    daemon = dock.start_daemon()
    try:
        first.rename(dock.watch_dir / "K1")
        wait_until(lambda: [c["state"] for c in dock.clips("--camera", "K1")] == ["uploaded"] * 2,
                   timeout=120, message="the first camera uploaded")
        kept = staged_files(small_staging)
        inflated.rename(dock.watch_dir / "K2")
        wait_until(lambda: any("can never fit" in (c["last_error"] or "")
                               for c in dock.clips("--camera", "K2")),
                   timeout=120, message="the inflated file refused")
        wait_until(lambda: any(e.get("event") == "alarm.raised"
                               and e.get("alarm") == "stalled_offload"
                               and e.get("camera") == "K2" for e in dock.log_events()),
                   timeout=120, message="a stalled-offload alarm for the inflated camera")
        by_path = {c["source_path"]: c for c in dock.clips("--camera", "K2")}
    finally:
        assert dock.stop_daemon(daemon) == 0
    assert by_path["DCIM/BIG.MP4"]["state"] == "discovered"
    [ordinary] = [c for path, c in by_path.items() if path != "DCIM/BIG.MP4"]
    assert ordinary["state"] == "uploaded"
    assert kept and kept <= staged_files(small_staging)  # nothing retention keeps was purged
    events = [e["event"] for e in dock.log_events()]
    assert "copy.refused" in events
    assert "copy.paused" not in events


def test_hand_run_ingest_refuses_an_inflated_file_and_exits_1(
    dock: Dock, small_staging: Path
) -> None:
    """ingest --wait of a card holding a 200 GiB sparse file: the other clip is
    uploaded, the big one refused with the reason, exit 1, no hang."""
    need_command("truncate")
    dock.write_config(dock={"staging_dir": str(small_staging), "staging_reserve_mb": 4})
    inflated_camera(dock.root / "card")

    done = dock.cli("ingest", str(dock.root / "card"), "--camera-serial", "K3", "--wait",
                    "--timeout", "120", check=False)

    assert done.returncode == 1, done.stderr
    assert "DCIM/BIG.MP4" in done.stderr and "can never fit staging" in done.stderr
    assert "1 uploaded" in done.stdout


def test_paused_copy_purges_only_what_the_waiting_clip_needs(
    dock: Dock, small_staging: Path
) -> None:
    """Staging full of uploaded copies inside retention: to fit a 14 MiB clip the daemon
    purges the oldest uploaded copy only, not all of them."""
    dock.write_config(dock={"staging_dir": str(small_staging), "staging_reserve_mb": 4})
    first = dock.root / "first"
    make_camera(first, [8 * MIB, 8 * MIB + 1, 8 * MIB + 2], sidecars=False)
    second = dock.root / "second"
    make_camera(second, [14 * MIB], sidecars=False, seed=9)
    daemon = dock.start_daemon()
    try:
        first.rename(dock.watch_dir / "P1")
        wait_until(lambda: [c["state"] for c in dock.clips("--camera", "P1")] == ["uploaded"] * 3,
                   timeout=120, message="the first camera uploaded")
        second.rename(dock.watch_dir / "P2")
        wait_until(lambda: [c["state"] for c in dock.clips("--camera", "P2")] == ["uploaded"],
                   timeout=120, message="the 14 MiB clip uploaded after making room")
    finally:
        assert dock.stop_daemon(daemon) == 0
    with sqlite3.connect(dock.ledger_path) as connection:
        purged = [row[0] for row in connection.execute(
            "SELECT camera_serial FROM clips WHERE staged_purged_at IS NOT NULL")]
        oldest = connection.execute(
            "SELECT id FROM clips WHERE camera_serial = 'P1' ORDER BY uploaded_at LIMIT 1"
        ).fetchone()[0]
        purged_ids = [row[0] for row in connection.execute(
            "SELECT id FROM clips WHERE staged_purged_at IS NOT NULL")]
    assert purged == ["P1"] and purged_ids == [oldest]
    assert "copy.paused" in [e["event"] for e in dock.log_events()]


def test_hand_run_ingest_stops_with_a_reason_when_staging_stays_full(
    dock: Dock, small_staging: Path
) -> None:
    """Staging filled by something bwc-dock cannot purge: ingest stops at its deadline
    with exit 1 and says staging is full, instead of looping for ever."""
    dock.write_config(dock={"staging_dir": str(small_staging), "staging_reserve_mb": 4})
    (small_staging / "not-ours.bin").write_bytes(b"\0" * (30 * MIB))
    make_camera(dock.root / "card", [8 * MIB], sidecars=False)

    done = dock.cli("ingest", str(dock.root / "card"), "--camera-serial", "K4", "--wait",
                    "--timeout", "8", check=False, timeout=120)

    assert done.returncode == 1
    assert "staging full" in done.stderr


def test_a_clip_beyond_reach_of_purging_purges_nothing(
    dock: Dock, small_staging: Path
) -> None:
    """A 30 MiB sparse clip on a 40 MiB staging filesystem that other files fill by half:
    purging every retained copy would not make room, so none is purged (copying waits)."""
    need_command("truncate")
    staging = small_staging / "staging"
    (small_staging / "other-use.bin").write_bytes(b"\x01" * 20 * MIB)  # not bwc-dock's
    dock.write_config(dock={"staging_dir": str(staging), "staging_reserve_mb": 4})
    first = dock.root / "first"
    make_camera(first, [5 * MIB, 5 * MIB + 1], sidecars=False)
    second = dock.root / "second" / "DCIM"
    second.mkdir(parents=True)
    subprocess.run(["truncate", "-s", str(30 * MIB), str(second / "BIG.MP4")], check=True)
    daemon = dock.start_daemon()
    try:
        first.rename(dock.watch_dir / "R1")
        wait_until(lambda: [c["state"] for c in dock.clips("--camera", "R1")] == ["uploaded"] * 2,
                   timeout=120, message="the first camera uploaded")
        kept = staged_files(staging)
        second.parent.rename(dock.watch_dir / "R2")
        wait_until(lambda: any(e.get("event") == "staging.purge_declined"
                               for e in dock.log_events()),
                   timeout=120, message="the purge declined")
    finally:
        assert dock.stop_daemon(daemon) == 0
    assert len(kept) == 2
    assert kept <= staged_files(staging)  # nothing retention keeps was purged
    with sqlite3.connect(dock.ledger_path) as connection:
        assert connection.execute(
            "SELECT count(*) FROM clips WHERE staged_purged_at IS NOT NULL").fetchone() == (0,)
