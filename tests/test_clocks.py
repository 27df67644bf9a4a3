"""The clocks behind every recorded time: the camera's offset read at docking and used to
correct its clips, the dock PC's own synchronisation, and the alarms about both.

Real parts: `bwc-dock ingest` into a real SQLite ledger and folder NAS, a real clock
command (sh and date) run unprivileged, a real clock file on the camera folder, the
kernel's adjtimex(2). One seam: the unsynchronised dock clock is handed to
`scan_into_ledger` as a kernel reply (state TIME_ERROR, STA_UNSYNC set) through its
`dock_clock` parameter, since this machine's clock cannot be unsynchronised on demand.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bwc_dock.alarms import AlarmBoard, Observation, StorageState
from bwc_dock.clocks import (
    DockClock,
    KernelClockState,
    dock_clock_from,
    dock_clock_from_services,
    kernel_clock_state,
)
from bwc_dock.config import AlarmsConfig, parse_config
from bwc_dock.fleet import status_document
from bwc_dock.found import DockedVolume
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.leases import current_owner
from bwc_dock.metrics import MetricsSnapshot, render
from bwc_dock.scanning import scan_into_ledger, set_clock_after_offload
from bwc_dock.service import DaemonStatus
from tests.dock import Dock, sha256_of

NAME_PATTERN = r"(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2})_(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})"
# the dock's time plus 93 s, to the nanosecond; prints nothing (and fails) as root
PLUS_93_SECONDS = ["/bin/sh", "-c",
                   '[ "$(id -u)" != 0 ] && date -u -d "+93 seconds" +%Y-%m-%dT%H:%M:%S.%N+00:00']
CAMERA_UTC = datetime(2026, 11, 25, 1, 15, 0, tzinfo=UTC)  # 20:15 in New York on 24 Nov


def _profile(**clock: Any) -> dict[str, Any]:
    return {"name": "ny", "serial_source": "folder", "clock": "local",
            "timezone": "America/New_York", "recorded_pattern": NAME_PATTERN, **clock}


def _card(root: Path, extra: dict[str, bytes] | None = None) -> Path:
    card = root / "cards" / "NY1"
    (card / "DCIM").mkdir(parents=True)
    (card / "DCIM" / "20261124_201500.MP4").write_bytes(b"evening clip" * 100)
    for name, content in (extra or {}).items():
        (card / name).write_bytes(content)
    return card


def _audit_details(dock: Dock, event: str) -> list[dict[str, Any]]:
    with sqlite3.connect(dock.ledger_path) as connection:
        rows = connection.execute(
            "SELECT details FROM audit_log WHERE event = ? ORDER BY id", (event,)).fetchall()
    return [json.loads(row[0]) for row in rows]


def test_a_camera_93_seconds_ahead_has_its_clips_corrected(dock: Dock) -> None:
    """A clock command reporting +93 s: the docking records the offset from "command",
    the clip's UTC time is the camera's reading less that offset, and says it is
    corrected in clips --json and its custody record."""
    dock.write_config(camera=[_profile(clock_command=PLUS_93_SECONDS)])
    card = _card(dock.root)
    dock.cli("ingest", str(card), "--camera-serial", "NY1", "--wait")
    [clip] = dock.clips("--camera", "NY1")
    offset = clip["camera_clock_offset_seconds"]
    assert round(offset) == 93
    assert clip["recorded_at_corrected"] is True
    recorded = datetime.fromisoformat(clip["recorded_at"])
    assert (CAMERA_UTC - recorded).total_seconds() == offset
    assert recorded.replace(microsecond=0) in (datetime(2026, 11, 25, 1, 13, 27, tzinfo=UTC),
                                               datetime(2026, 11, 25, 1, 13, 26, tzinfo=UTC))
    assert clip["camera_time"] == "2026-11-24T20:15:00 America/New_York"
    sha16 = sha256_of(card / "DCIM" / "20261124_201500.MP4")[:16]
    assert clip["remote_key"] == f"NY1/2026/11/25/20261124_201500.{sha16}.MP4"
    [clocks] = _audit_details(dock, "docking.clocks")
    assert clocks["camera_clock_source"] == "command"
    assert clocks["camera_clock_offset_seconds"] == offset
    assert clocks["camera_clock_problem"] is None
    assert clocks["camera_clock_reading"].startswith("20")  # the camera's own text
    record = json.loads((dock.nas / dock.manifest_key(clip)).read_text())
    assert record["recorded_at"] == clip["recorded_at"]
    assert record["recorded_at_corrected"] is True
    assert record["docking_clocks"]["camera_clock_offset_seconds"] == offset
    assert record["docking_clocks"]["camera_clock_source"] == "command"
    folder = dock.nas / "NY1" / "2026" / "11" / "25"
    sums = (folder / "SHA256SUMS.dock-test.docking-000001").read_text()
    header = sums.splitlines()[:2]
    assert header[0] == (
        f"# recorded times: UTC, corrected by the camera's clock offset of {offset:+.3f} s")
    assert header[1].startswith("# dock clock at docking: ")  # this machine's own state
    sums_name = "SHA256SUMS.dock-test.docking-000001"
    checked = subprocess.run(["sha256sum", "--strict", "-c", sums_name], cwd=folder,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    dock.cli("audit", "verify", "--remote")
    [camera] = json.loads(dock.cli("cameras", "--json").stdout)
    assert camera["clock_offset_seconds"] == offset
    assert "+93 s" in dock.cli("cameras").stdout


def test_a_linked_clock_file_leaves_the_offset_unknown(dock: Dock) -> None:
    """A clock file that is a symlink is not followed: the offset is unknown (null, not
    0), the clip is uncorrected, and the audit row says why."""
    dock.write_config(camera=[_profile(clock_file="TIME.TXT")])
    card = _card(dock.root)
    (dock.root / "elsewhere.txt").write_text("2026-11-24T20:16:33\n")
    (card / "TIME.TXT").symlink_to(dock.root / "elsewhere.txt")
    dock.cli("ingest", str(card), "--camera-serial", "NY1", "--wait")
    [clip] = dock.clips("--camera", "NY1")
    assert clip["camera_clock_offset_seconds"] is None
    assert clip["recorded_at_corrected"] is False
    assert clip["recorded_at"] == "2026-11-25T01:15:00+00:00"
    [clocks] = _audit_details(dock, "docking.clocks")
    assert clocks["camera_clock_source"] == "file"
    assert clocks["camera_clock_offset_seconds"] is None
    assert "Too many levels of symbolic links" in clocks["camera_clock_problem"]


def test_the_kernel_answers_adjtimex_without_privilege() -> None:
    """adjtimex(2) read-only returns a clock state and error bounds on this machine."""
    state = kernel_clock_state()
    assert state is not None
    assert state.state in range(6) and state.maxerror_us >= 0


def test_an_unsynchronised_dock_clock_is_recorded_and_raises_its_alarm(tmp_path: Path) -> None:
    """A kernel reply of TIME_ERROR with STA_UNSYNC: the docking records an unsynchronised
    dock clock with no error estimate, audited; the alarm and the drift alarm go up."""
    config = parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state")},
                           "storage": {"path": str(tmp_path / "nas")},
                           "camera": [_profile()]})
    ledger = Ledger.open(config, "test")
    card = _card(tmp_path)
    volume = DockedVolume("ingest", str(card), card, "NY1", profile_name="ny")
    docking_id = ledger.record_docking(volume, current_owner("test"))
    unsynchronised = KernelClockState(state=5, status=0x40, maxerror_us=16_000_000,
                                      esterror_us=16_000_000)
    scan_into_ledger(ledger, config, docking_id, volume,
                     dock_clock=lambda: dock_clock_from(unsynchronised))
    docking = ledger.docking(docking_id)
    assert docking is not None
    assert docking.clocks.document() == {
        "camera_clock_offset_seconds": None,
        "camera_clock_source": None,
        "dock_clock_synchronized": False,
        "dock_clock_error_seconds": None,
    }
    events = [entry.event for entry in ledger.audit_entries()]
    assert events.count("docking.clocks") == 1
    scan_into_ledger(ledger, config, docking_id, volume)  # a rescan does not measure again
    assert [entry.event for entry in ledger.audit_entries()].count("docking.clocks") == 1
    ledger.close()

    board = AlarmBoard(AlarmsConfig())
    observation = Observation(
        now=datetime(2026, 12, 5, tzinfo=UTC), oldest_pending_at=None,
        staging_free_bytes=2**40, staging_reserve_bytes=0,
        dock_clock_synchronized=False,
        camera_clock_offsets={"NY1": 93.0, "NY2": -12.0, "NY3": None},
        max_clock_offset_seconds=30.0,
    )
    raised = [(t.alarm.kind, t.alarm.camera, t.alarm.severity, t.alarm.detail)
              for t in board.observe(observation)]
    assert raised == [
        ("dock_clock_unsynchronized", None, "warning",
         "the dock PC's clock is not synchronised (no time server has set it); "
         "recorded times and fleet ages depend on it"),
        ("camera_clock_drift", "NY1", "warning",
         "camera NY1's clock was 93 s ahead of the dock's when it last docked (limit 30 s)"),
    ]
    assert board.summary() == ("ALARM: dock clock unsynchronised, camera NY1 clock off +93 s")


def test_a_synchronised_kernel_clock_gives_its_estimated_error() -> None:
    """TIME_OK without STA_UNSYNC: synchronised, with esterror as the error in seconds."""
    clock = dock_clock_from(KernelClockState(state=0, status=0x2001, maxerror_us=250_000,
                                             esterror_us=1_500))
    assert (clock.synchronized, clock.error_seconds, clock.source) == (True, 0.0015, "adjtimex")


def test_the_textfile_carries_the_clock_gauges() -> None:
    """The dock clock's state and each measured camera offset are gauges; unknown is absent."""
    text = render(MetricsSnapshot(
        dock_id="d1", clips_by_state={}, bytes_copied_total=0, bytes_uploaded_total=0,
        oldest_pending_seconds=None, cameras_docked=0, staging_free_bytes=0,
        storage_reachable=None, dock_clock_synchronized=False,
        camera_clock_offsets={"NY1": 93.25, "NY3": None},
    ))
    assert 'bwc_dock_dock_clock_synchronized{dock="d1"} 0\n' in text
    assert 'bwc_dock_camera_clock_offset_seconds{dock="d1",camera="NY1"} 93.25\n' in text
    assert "NY3" not in text


@pytest.fixture
def camera_clock_state() -> Iterator[Path]:
    """A file holding a pretend camera's clock offset, in a folder the unprivileged
    user its clock commands run as (nobody, under root) can write."""
    folder = Path(tempfile.mkdtemp(prefix="bwc-camera-clock-"))
    folder.chmod(0o777)
    state = folder / "offset"
    state.write_text("93\n")
    state.chmod(0o666)
    yield state
    shutil.rmtree(folder)


def test_setting_the_camera_clock_after_offload_is_audited(
    tmp_path: Path, camera_clock_state: Path
) -> None:
    """clock_set_command runs after the offload; the audit row holds the camera's clock
    read before (+93 s) and after (0 s) it, and no problem."""
    read = ["/bin/sh", "-c", 'date -u -d "+$(cat "$0") seconds" +%Y-%m-%dT%H:%M:%S.%N+00:00',
            str(camera_clock_state)]
    set_to_dock = ["/bin/sh", "-c", 'echo 0 > "$0"', str(camera_clock_state)]
    config = parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state")},
                           "storage": {"path": str(tmp_path / "nas")},
                           "camera": [_profile(clock_command=read,
                                               clock_set_command=set_to_dock)]})
    ledger = Ledger.open(config, "test")
    card = _card(tmp_path)
    volume = DockedVolume("ingest", str(card), card, "NY1", profile_name="ny")
    docking_id = ledger.record_docking(volume, current_owner("test"))
    set_clock_after_offload(ledger, config, docking_id, volume)
    [entry] = [e for e in ledger.audit_entries() if e.event == "camera.clock_set"]
    ledger.close()
    details = json.loads(entry.details)
    assert round(details["offset_before_seconds"]) == 93
    assert round(details["offset_after_seconds"]) == 0
    assert details["problem"] is None
    assert (entry.camera_serial, details["docking_id"]) == ("NY1", docking_id)
    assert camera_clock_state.read_text() == "0\n"


def test_under_the_seccomp_filter_timesyncds_own_record_is_read(tmp_path: Path) -> None:
    """Where adjtimex is refused: timesyncd's flag file means synchronised, its runtime
    folder without the flag means not yet, and no time service at all means unknown."""
    timesync = tmp_path / "timesync"
    no_chrony = str(tmp_path / "no-chronyc")  # a chronyc that is not there
    assert dock_clock_from_services(timesync, no_chrony) == DockClock(None, None, "none")
    timesync.mkdir()
    assert dock_clock_from_services(timesync, no_chrony) == DockClock(False, None, "timesyncd")
    (timesync / "synchronized").touch()
    assert dock_clock_from_services(timesync, no_chrony) == DockClock(True, None, "timesyncd")


def test_the_fleet_document_says_whether_the_docks_clock_was_synchronised() -> None:
    """A dock whose clock is unsynchronised publishes that beside its heartbeat, with
    both clock alarms as entries of its alarm list."""
    status = DaemonStatus(
        dock_id="dock-01", alarms_config=AlarmsConfig(), metrics_textfile=None,
        status_line="", clips_by_state={}, oldest_pending_at=None, staging_free_bytes=0,
        staging_reserve_bytes=0, storage=StorageState.OK, last_error=None, docked=(),
        unmountable=(), error_counts={}, byte_totals=None, dock_clock_synchronized=False,
    )
    board = AlarmBoard(AlarmsConfig())
    board.observe(Observation(
        now=datetime(2026, 12, 5, tzinfo=UTC), oldest_pending_at=None,
        staging_free_bytes=2**40, staging_reserve_bytes=0, dock_clock_synchronized=False,
        camera_clock_offsets={"NY1": -45.0}, max_clock_offset_seconds=30.0,
    ))
    document = status_document(status, board.active, now=datetime(2026, 12, 5, tzinfo=UTC),
                               interval_seconds=60)
    assert document["dock_clock_synchronized"] is False
    assert [(a["kind"], a["subject"], a["detail"]) for a in document["alarms"]] == [
        ("dock_clock_unsynchronized", None,
         "the dock PC's clock is not synchronised (no time server has set it); "
         "recorded times and fleet ages depend on it"),
        ("camera_clock_drift", "NY1",
         "camera NY1's clock was 45 s behind the dock's when it last docked (limit 30 s)"),
    ]
