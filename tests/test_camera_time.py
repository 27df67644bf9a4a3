"""Camera time: clips named or stamped in a camera's local time are read in its zone,
daylight saving's skipped and repeated hours are flagged with the rule used, and the
recorded time reaches keys, custody records and `clips --json`.

Real parts: a camera folder ingested through `bwc-dock ingest` into a real SQLite ledger
and a folder NAS; FAT32 and exFAT images on loop devices mounted by the product's own
Mounter (fusefat and exfat-fuse here, the kernel's drivers on a dock).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bwc_dock.config import CameraProfile, parse_config
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.db import create_ledger_engine, migrate
from bwc_dock.mounting import Mounter
from bwc_dock.scanner import ScanLimits, scan_volume
from tests.dock import Dock, sha256_of
from tests.realparts import need_command, need_root

NAME_PATTERN = r"(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2})_(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})"
NEW_YORK = {"name": "ny", "serial_source": "folder", "clock": "local",
            "timezone": "America/New_York", "recorded_pattern": NAME_PATTERN}
FOLD0_FORWARD = "fold=0: read with the offset before clocks went forward (UTC-05:00)"
FOLD0_BACK = "fold=0: the first of the two, before clocks went back (UTC-04:00)"
# name on the camera (New York wall clock) -> (recorded_at UTC, flag, rule)
DST_2026 = {
    "20260308_013000.MP4": ("2026-03-08T06:30:00+00:00", None, None),
    "20260308_023000.MP4": ("2026-03-08T07:30:00+00:00", "nonexistent", FOLD0_FORWARD),
    "20260308_033000.MP4": ("2026-03-08T07:30:00+00:00", None, None),
    "20261101_013000.MP4": ("2026-11-01T05:30:00+00:00", "ambiguous", FOLD0_BACK),
    "20261101_023000.MP4": ("2026-11-01T07:30:00+00:00", None, None),
    "20261124_201500.MP4": ("2026-11-25T01:15:00+00:00", None, None),
}


def _camera_folder(root: Path) -> Path:
    folder = root / "NY1" / "DCIM"
    folder.mkdir(parents=True)
    for name in DST_2026:
        (folder / name).write_bytes(name.encode() * 50)
    return root / "NY1"


def test_new_york_names_across_both_changes_of_2026(dock: Dock) -> None:
    """File names in New York time become UTC; 02:30 on 8 March is flagged nonexistent
    and 01:30 on 1 November ambiguous, each with its rule, in clips --json and records."""
    dock.write_config(camera=[NEW_YORK])
    card = _camera_folder(dock.root / "cards")
    dock.cli("ingest", str(card), "--camera-serial", "NY1", "--wait")
    clips = {clip["source_path"]: clip for clip in dock.clips("--camera", "NY1")}
    assert sorted(clips) == [f"DCIM/{name}" for name in sorted(DST_2026)]
    for name, (recorded_at, flag, rule) in DST_2026.items():
        clip = clips[f"DCIM/{name}"]
        assert (clip["recorded_at"], clip["time_flag"], clip["time_flag_rule"]) == (
            recorded_at, flag, rule), name
        assert clip["recorded_at_corrected"] is False  # no clock offset was measured
        assert clip["camera_clock_offset_seconds"] is None
        assert clip["camera_time_source"] == "name"
        assert clip["time_basis"] == "profile"
    table = dock.cli("clips", "--camera", "NY1").stdout
    assert "2026-11-01 05:30:00 (uncorrected, ambiguous)" in table
    assert "2026-03-08 07:30:00 (uncorrected, nonexistent)" in table
    evening = clips["DCIM/20261124_201500.MP4"]
    assert evening["camera_time"] == "2026-11-24T20:15:00 America/New_York"
    sha16 = sha256_of(card / "DCIM" / "20261124_201500.MP4")[:16]
    # an evening clip lands in the next UTC day's folder, not the camera's local date
    assert evening["remote_key"] == f"NY1/2026/11/25/20261124_201500.{sha16}.MP4"
    ambiguous = clips["DCIM/20261101_013000.MP4"]
    record = json.loads((dock.nas / dock.manifest_key(ambiguous)).read_text())
    assert record["recorded_at"] == "2026-11-01T05:30:00+00:00"
    assert record["camera_time"] == "2026-11-01T01:30:00 America/New_York"
    assert (record["time_flag"], record["time_flag_rule"]) == ("ambiguous", FOLD0_BACK)
    assert record["recorded_at_corrected"] is False


@pytest.mark.parametrize(("camera", "message"), [
    ({"clock": "local", "timezone": "Mars/Olympus_Mons"}, "camera.0.timezone: unknown time zone"),
    ({"clock": "local"}, "camera.0.timezone: required with clock = \"local\""),
    ({"clock": "local", "timezone": "../../etc/passwd"}, "camera.0.timezone: not an IANA"),
])
def test_config_check_names_a_bad_camera_clock(
    dock: Dock, camera: dict[str, str], message: str
) -> None:
    """`config check` exits 2 naming the timezone key of a local clock it cannot use."""
    dock.write_config(camera=[{"name": "cam", **camera}])
    result = dock.cli("config", "check", check=False)
    assert result.returncode == 2
    assert message in result.stderr


# -- FAT32 and exFAT images with known timestamps ------------------------------------

# file -> the camera's wall clock stored in the FAT/exFAT entry (New York time)
STAMPED = {
    "A.MP4": datetime(2026, 11, 1, 1, 30, 0),
    "B.MP4": datetime(2026, 3, 8, 2, 30, 0),
    "C.MP4": datetime(2026, 11, 24, 20, 15, 0),
}
# read in America/New_York: (UTC, flag)
STAMPED_UTC = {
    "DCIM/A.MP4": ("2026-11-01T05:30:00+00:00", "ambiguous"),
    "DCIM/B.MP4": ("2026-03-08T07:30:00+00:00", "nonexistent"),
    "DCIM/C.MP4": ("2026-11-25T01:15:00+00:00", None),
}


def _as_raw(wall: datetime) -> float:
    """The epoch whose UTC fields are ``wall``: what a writer with TZ=UTC stores as is."""
    return wall.replace(tzinfo=UTC).timestamp()


def _vfat_image(path: Path, files: Path) -> None:
    subprocess.run(["mkfs.vfat", "-F", "32", "-C", str(path), "40960"], check=True,
                   capture_output=True)
    environment = dict(os.environ, TZ="UTC", MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mmd", "-i", str(path), "::/DCIM"], check=True, env=environment)
    for name in STAMPED:
        subprocess.run(["mcopy", "-m", "-i", str(path), str(files / name), f"::/DCIM/{name}"],
                       check=True, env=environment)


def _exfat_image(path: Path, files: Path, tmp_path: Path) -> None:
    with path.open("wb") as image:
        image.truncate(40 * 1024 * 1024)
    subprocess.run(["mkfs.exfat", str(path)], check=True, capture_output=True)
    writable = tmp_path / "exfat-rw"
    writable.mkdir()
    environment = dict(os.environ, TZ="UTC")
    subprocess.run(["mount", "-t", "exfat", "-o", "loop,rw", str(path), str(writable)],
                   check=True, env=environment, capture_output=True)
    try:
        (writable / "DCIM").mkdir()
        for name, wall in STAMPED.items():
            (writable / "DCIM" / name).write_bytes((files / name).read_bytes())
            os.utime(writable / "DCIM" / name, (_as_raw(wall), _as_raw(wall)))
    finally:
        subprocess.run(["umount", str(writable)], check=True)


@pytest.fixture
def stamped_files(tmp_path: Path) -> Path:
    files = tmp_path / "files"
    files.mkdir()
    for name, wall in STAMPED.items():
        (files / name).write_bytes(name.encode() * 100)
        os.utime(files / name, (_as_raw(wall), _as_raw(wall)))
    return files


@pytest.fixture
def loop_device() -> Iterator[list[str]]:
    attached: list[str] = []
    yield attached
    for device in attached:
        subprocess.run(["losetup", "-d", device], check=False)


# FAT32 here is served by fusefat, which reports every FAT date one month late (its
# own bug: the month is not made 0-based for mktime), so only exFAT is asserted on this
# rig; a dock's kernel vfat driver is mounted with tz=UTC, which hands over the same raw
# wall clock as exfat here.
@pytest.mark.realparts
@pytest.mark.parametrize("fs_type", ["exfat"])
def test_fat_timestamps_are_read_in_the_cameras_zone(
    tmp_path: Path, stamped_files: Path, loop_device: list[str], fs_type: str
) -> None:
    """A FAT32 and an exFAT camera whose entries hold New York wall-clock times, mounted
    by the product: the scan reads each time in the zone and flags the DST hours."""
    need_root()
    need_command("mkfs.vfat" if fs_type == "vfat" else "mkfs.exfat")
    need_command("mcopy")
    image = tmp_path / f"camera.{fs_type}"
    if fs_type == "vfat":
        _vfat_image(image, stamped_files)
    else:
        _exfat_image(image, stamped_files, tmp_path)
    device = subprocess.run(["losetup", "-f", "--show", "-r", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    loop_device.append(device)
    mounter = Mounter(tmp_path / "mounts")
    volume = mounter.mount(device, fs_type, "cam0")
    try:
        profile = CameraProfile(name="ny", clock="local", timezone="America/New_York")
        result = scan_volume(volume.mount_point, profile, ScanLimits(max_file_size=2**30))
    finally:
        mounter.unmount(volume)
    found = {
        clip.video.source_path: (clip.recorded_at.isoformat(),
                                 clip.camera_time.flag if clip.camera_time else "?")
        for clip in result.clips
    }
    assert found == STAMPED_UTC
    readings = sorted(c.camera_time.reading for c in result.clips if c.camera_time)
    assert readings == ["2026-03-08T02:30:00 America/New_York",
                        "2026-11-01T01:30:00 America/New_York",
                        "2026-11-24T20:15:00 America/New_York"]


def test_clips_from_before_the_upgrade_keep_their_time_and_key(tmp_path: Path) -> None:
    """A ledger at 0004 with an uploaded clip: after the upgrade its recorded time and key
    are unchanged and it is marked as read under the legacy rule (UTC, uncorrected)."""
    state = tmp_path / "state"
    state.mkdir()
    config = parse_config({"dock": {"id": "t", "state_dir": str(state)},
                           "storage": {"path": str(tmp_path / "nas")}})
    engine = create_ledger_engine(config.ledger_url)
    migrate(engine, "0004")
    engine.dispose()
    with sqlite3.connect(state / "ledger.sqlite3") as connection:
        connection.execute("INSERT INTO cameras (serial, first_seen_at) "
                           "VALUES ('OLD1', '2026-01-02 03:04:05.000000')")
        connection.execute(
            "INSERT INTO dockings (id, camera_serial, dock_id, source, device, volume_root,"
            " docked_at, refused_entries) VALUES (1, 'OLD1', 't', 'udev', '/dev/sdb1', '/m',"
            " '2026-11-24 20:30:00.000000', 0)")
        connection.execute(
            "INSERT INTO clips (camera_serial, docking_id, source_path_raw, source_path, name,"
            " size, mtime_ns, recorded_at, sha256, state, priority, copy_attempts,"
            " upload_attempts, remote_key, discovered_at, updated_at) VALUES ('OLD1', 1,"
            " X'4443494d2f412e4d5034', 'DCIM/A.MP4', 'A.MP4', 10, 1, "
            " '2026-11-24 20:15:00.000000', ?, 'uploaded', 0, 1, 1,"
            " 'OLD1/2026/11/24/A.0000000000000000.MP4', '2026-11-24 20:31:00.000000',"
            " '2026-11-24 20:31:00.000000')", ("0" * 64,))
    ledger = Ledger.open(config, "upgraded")
    [clip] = ledger.clips()
    ledger.close()
    assert clip.recorded_at == datetime(2026, 11, 24, 20, 15, tzinfo=UTC)
    assert clip.remote_key == "OLD1/2026/11/24/A.0000000000000000.MP4"
    assert clip.time.document() == {
        "recorded_at_corrected": False,
        "camera_clock_offset_seconds": None,
        "camera_time": None,
        "camera_time_source": None,
        "time_flag": None,
        "time_flag_rule": None,
        "time_basis": "legacy",
    }
