"""A camera made to stall the dock: 200,000 entries, thousands of folders, shared stems.

The volumes are real directories. A FAT image cannot hold this on its own terms (a FAT
directory ends at 65,535 entries, and fusefat lists a large one far slower than a real
card), and what is measured here is the scanner's and the daemon's work, not the
filesystem driver's: a watch folder goes through the same scan as a mounted camera.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from bwc_dock.config import CameraProfile
from bwc_dock.scanner import ScanLimits, scan_volume
from tests.dock import Dock, central_objects, make_camera, wait_until

CLIPS = 2_000
ENTRIES_OVER_THE_LIMIT = 200_010  # the default limit is 200,000 entries
# Deadlines below only stop a hung test; none of them measures speed.
DEADLINE_SECONDS = 300.0


def _touch_all(folder: Path, names: Iterable[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).touch()


def _crowded_camera(camera: Path) -> None:
    """2,000 empty clips with a sidecar each, then junk sidecars up to 200,010 entries,
    all in one folder (the two folders above it count as entries too)."""
    junk = ENTRIES_OVER_THE_LIMIT - 2 - 2 * CLIPS
    _touch_all(camera / "DCIM" / "100BWC", (
        *(f"C{number:05d}.MP4" for number in range(CLIPS)),
        *(f"C{number:05d}.JPG" for number in range(CLIPS)),
        *(f"J{number:06d}.JPG" for number in range(junk)),
    ))


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A test-owned NOTIFY_SOCKET, as systemd would offer it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(0.5)
    yield listener
    listener.close()


def _next_datagram(listener: socket.socket, wanted: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if wanted in listener.recv(65536).decode():
                return
        except TimeoutError:
            continue
    raise AssertionError(f"no {wanted} within {DEADLINE_SECONDS} s")


def _status(dock: Dock) -> dict[str, object]:
    document: dict[str, object] = json.loads(dock.cli("status", "--json").stdout)
    return document


def test_crowded_camera_is_scanned_to_its_limit_while_the_daemon_answers(
    dock: Dock, notify_socket: socket.socket
) -> None:
    """A 200,010-entry camera is scanned to the entry limit in the background while the
    daemon answers `status` (its main loop writes the heartbeat) and pings the watchdog."""
    dock.write_config()
    dock.extra_environment.update({"NOTIFY_SOCKET": notify_socket.getsockname(),
                                   "WATCHDOG_USEC": "1000000"})
    camera = dock.root / "camera"
    _crowded_camera(camera)
    daemon = dock.start_daemon()
    try:
        _next_datagram(notify_socket, "READY=1")
        camera.rename(dock.watch_dir / "CROWDED1")
        seen: list[dict[str, object]] = []

        def scanning() -> bool:
            seen.append(_status(dock))
            return "scanning" in str(seen[-1]["daemon_status"])

        wait_until(scanning, DEADLINE_SECONDS, "a status saying a scan runs")
        assert all(document["daemon_alive"] for document in seen), seen
        _next_datagram(notify_socket, "WATCHDOG=1")  # pinged after the scan was seen running
        wait_until(lambda: any(e.get("event") == "dock.scanned" for e in dock.log_events()),
                   DEADLINE_SECONDS, "the scan's end")
        assert _status(dock)["daemon_alive"] is True
    finally:
        notify_socket.close()  # read no more: a full socket queue would block the daemon's send
        assert dock.stop_daemon(daemon) == 0
    events = dock.log_events()
    [first_scan, *_] = [e for e in events if e.get("event") == "dock.scanned"]
    assert (first_scan["clips"], first_scan["refused"]) == (2000, 1)
    assert {e["reason"] for e in events if e.get("event") == "scan.refused"} == {
        "entry budget exhausted"}


def test_sidecars_go_with_the_clip_of_their_own_folder(tmp_path: Path) -> None:
    """Same stems in two folders: each clip takes only its own folder's sidecars."""
    profile = CameraProfile(name="folder", serial_source="folder")
    _touch_all(tmp_path / "DCIM" / "100BWC", ["A.MP4", "A.JPG", "a.gps", "B.MP4"])
    _touch_all(tmp_path / "DCIM" / "101BWC", ["A.MP4", "A.LOG", "B.JPG"])
    result = scan_volume(tmp_path, profile, ScanLimits(max_file_size=1 << 20))
    found = {clip.video.source_path: sorted(s.source_path for s in clip.sidecars)
             for clip in result.clips}
    assert found == {
        "DCIM/100BWC/A.MP4": ["DCIM/100BWC/A.JPG", "DCIM/100BWC/a.gps"],
        "DCIM/100BWC/B.MP4": [],
        "DCIM/101BWC/A.MP4": ["DCIM/101BWC/A.LOG"],
    }


# Run in a child process whose descriptor limit is 64: a walk that held one descriptor
# per folder still to be listed would fail to open most of the 1,000 folders.
WIDE_TREE_CHILD = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from bwc_dock.scanning import DEFAULT_FOLDER_PROFILE
    from bwc_dock.scanner import ScanLimits, scan_volume
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    result = scan_volume(Path(sys.argv[1]), DEFAULT_FOLDER_PROFILE, ScanLimits(1 << 20))
    print(len(result.clips), len(result.refused))
""")


def test_a_thousand_folders_are_walked_with_few_descriptors(tmp_path: Path) -> None:
    """1,000 sibling folders, each with a clip, are all walked under a 64-descriptor limit."""
    for number in range(1000):
        _touch_all(tmp_path / "DCIM" / f"{number:04d}BWC", [f"C{number:04d}.MP4"])
    finished = subprocess.run(
        [sys.executable, "-c", WIDE_TREE_CHILD, str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.split() == ["1000", "0"]


def test_a_camera_past_the_entry_limit_is_refused_loudly_and_loses_nothing(dock: Dock) -> None:
    """A listing cut short at max_scan_entries (8 here, so the test stays small): the
    scan says so (scan.refused "entry budget exhausted", the docking's refused count),
    every clip already offloaded stays offloaded, once, and none is reported vanished
    from the camera, since what an incomplete listing lacks is not proven gone."""
    camera = dock.root / "card"
    expected = make_camera(camera, [1000, 2000, 3000], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    # then the camera fills with junk, past the dock's (lowered) limit
    _touch_all(camera / "DCIM" / "100BWC", (f"J{number:03d}.TXT" for number in range(20)))
    dock.write_config(dock={"max_scan_entries": 8})

    again = dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait", "--json",
                     check=False)

    assert again.returncode == 0  # a warning, not a failure: what was listed is offloaded
    assert json.loads(again.stdout)["refused_entries"] == 1
    assert "scan.refused                   path=DCIM/100BWC reason='entry budget exhausted'" \
        in again.stderr
    assert {c["source_path"]: (c["state"], c["sha256"]) for c in dock.clips()} == {
        path: ("uploaded", sha256) for path, sha256 in expected.items()}
    stored = [sha256 for sha256 in central_objects(dock.nas).values()
              if sha256 in expected.values()]
    assert sorted(stored) == sorted(expected.values())  # each clip once
    with sqlite3.connect(dock.ledger_path) as connection:
        assert connection.execute("SELECT count(*) FROM audit_log WHERE event = ?",
                                  ("clip.vanished_on_camera",)).fetchone() == (0,)
        assert connection.execute("SELECT refused_entries FROM dockings ORDER BY id"
                                  ).fetchall() == [(0,), (1,)]


def _alarm_events(dock: Dock, event: str) -> list[dict[str, object]]:
    return [e for e in dock.log_events()
            if e.get("event") == event and e.get("alarm") == "camera_scan_incomplete"]


def _metric_line(dock: Dock) -> str:
    text = (dock.root / "bwc_dock.prom").read_text()
    return next(line for line in text.splitlines()
                if 'alarm="camera_scan_incomplete"' in line and not line.startswith("#"))


def test_a_camera_scan_stopped_at_its_budget_is_an_alarm_until_read_whole_or_gone(
    dock: Dock,
) -> None:
    """A docked camera whose scan stops at max_scan_entries raises camera_scan_incomplete
    (log, status, metrics); a later scan read whole clears it, a hostile link refused
    alone raises none, and the camera leaving the dock clears it again."""
    dock.write_config(dock={"max_scan_entries": 8},
                      service={"metrics_textfile": str(dock.root / "bwc_dock.prom")})
    camera = dock.root / "card"
    make_camera(camera, [1000, 2000, 3000], sidecars=False)
    junk = [camera / "DCIM" / "100BWC" / f"J{number:03d}.TXT" for number in range(20)]
    _touch_all(camera / "DCIM" / "100BWC", (path.name for path in junk))
    daemon = dock.start_daemon()
    try:
        docked = dock.watch_dir / "FULL1"
        camera.rename(docked)
        wait_until(lambda: len(_alarm_events(dock, "alarm.raised")) == 1, DEADLINE_SECONDS,
                   "camera_scan_incomplete raised")
        wait_until(lambda: "ALARM: camera FULL1 scan incomplete"
                   in str(_status(dock)["daemon_status"]), DEADLINE_SECONDS,
                   "the alarm in `bwc-dock status --json`")
        assert "ALARM: camera FULL1 scan incomplete" in dock.cli("status").stdout
        wait_until(lambda: _metric_line(dock).endswith(" 1"), DEADLINE_SECONDS,
                   "the alarm in the metrics")

        # the junk goes, a hostile link comes: the next rescan reads the camera whole
        for path in junk:
            (docked / path.relative_to(camera)).unlink()
        (docked / "DCIM" / "100BWC" / "LINK.MP4").symlink_to("/etc/passwd")
        wait_until(lambda: len(_alarm_events(dock, "alarm.cleared")) == 1, DEADLINE_SECONDS,
                   "camera_scan_incomplete cleared by a whole scan")
        wait_until(lambda: "ALARM" not in str(_status(dock)["daemon_status"]),
                   DEADLINE_SECONDS, "the alarm gone from `bwc-dock status --json`")

        # full again, then taken out of the dock
        _touch_all(docked / "DCIM" / "100BWC", (path.name for path in junk))
        wait_until(lambda: len(_alarm_events(dock, "alarm.raised")) == 2, DEADLINE_SECONDS,
                   "camera_scan_incomplete raised again")
        docked.rename(dock.root / "taken-out")
        wait_until(lambda: len(_alarm_events(dock, "alarm.cleared")) == 2, DEADLINE_SECONDS,
                   "camera_scan_incomplete cleared by the undocking")
    finally:
        assert dock.stop_daemon(daemon) == 0
    first, second = _alarm_events(dock, "alarm.raised")
    assert (first["severity"], first["camera"]) == ("error", "FULL1")
    assert str(first["detail"]).startswith(
        "camera FULL1 (docking 1) was not read whole: its scan stopped (entry budget exhausted)")
    assert second["camera"] == "FULL1"
    refusals = {(e["path"], e["reason"]) for e in dock.log_events()
                if e.get("event") == "scan.refused"}
    assert refusals == {("DCIM/100BWC", "entry budget exhausted"),
                        ("DCIM/100BWC/LINK.MP4", "symlink")}
    assert sorted(c["source_path"] for c in dock.clips()) == [
        "DCIM/100BWC/20261124_000001_0001.MP4", "DCIM/100BWC/20261124_000002_0002.MP4",
        "DCIM/100BWC/20261124_000003_0003.MP4"]


def test_resync_names_a_docked_camera_it_could_not_read_whole_and_exits_1(dock: Dock) -> None:
    """resync's scan of a docked camera stops at max_scan_entries: the report names the
    camera as unrepairable and resync exits 1; what it listed is offloaded."""
    dock.write_config(dock={"max_scan_entries": 8})
    camera = dock.watch_dir / "FULL2"
    make_camera(camera, [1000, 2000, 3000], sidecars=False)
    _touch_all(camera / "DCIM" / "100BWC", (f"J{number:03d}.TXT" for number in range(20)))

    report = dock.cli("resync", check=False)

    assert report.returncode == 1, report.stderr[-2000:]
    assert ("CANNOT REPAIR camera FULL2 was not read whole: its scan stopped (entry budget "
            "exhausted); files past the cut stay on it, not offloaded") in report.stderr
    # which names fill the budget is the directory's order; whatever was listed is offloaded
    assert {c["state"] for c in dock.clips()} == {"uploaded"}
