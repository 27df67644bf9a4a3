"""A camera file with an impossible timestamp refuses only itself, never the whole scan.

Real parts: files on the test's own folder (tmpfs or ext4 both keep 64-bit times), the
scanner and a real SQLite ledger through `bwc-dock ingest`.
"""

from __future__ import annotations

import os
from pathlib import Path

from bwc_dock.config import CameraProfile
from bwc_dock.scanner import ScanLimits, scan_volume
from tests.dock import Dock

YEAR_10000_NS = 253_402_300_800 * 10**9  # 10000-01-01T00:00:00Z
YEAR_2300_NS = 10_413_792_000 * 10**9  # past what a signed 64-bit count of ns holds


def _camera(root: Path) -> Path:
    clips = root / "DCIM" / "100BWC"
    clips.mkdir(parents=True)
    for name in ("GOOD0001.MP4", "FUTURE01.MP4", "FUTURE02.MP4"):
        (clips / name).write_bytes(name.encode() * 100)
    os.utime(clips / "FUTURE01.MP4", ns=(YEAR_10000_NS, YEAR_10000_NS))
    os.utime(clips / "FUTURE02.MP4", ns=(YEAR_2300_NS, YEAR_2300_NS))
    return clips


def test_out_of_range_mtime_is_refused_alone(tmp_path: Path) -> None:
    """Files dated past 2262 are refused with a reason; the good clip is still found."""
    _camera(tmp_path)
    result = scan_volume(tmp_path, CameraProfile(name="test"), ScanLimits(max_file_size=2**40))
    assert [clip.video.source_path for clip in result.clips] == ["DCIM/100BWC/GOOD0001.MP4"]
    assert sorted((r.source_path, r.reason) for r in result.refused) == [
        ("DCIM/100BWC/FUTURE01.MP4", "modification time out of range"),
        ("DCIM/100BWC/FUTURE02.MP4", "modification time out of range"),
    ]


def test_ingest_offloads_the_rest_of_a_camera_with_an_impossible_date(dock: Dock) -> None:
    """`ingest --wait` stores the good clip and exits 0, counting the refusals."""
    _camera(dock.root / "card")
    result = dock.cli("ingest", str(dock.root / "card"), "--camera-serial", "X1", "--wait")
    assert result.returncode == 0
    clips = dock.clips("--camera", "X1")
    assert [(c["source_path"], c["state"]) for c in clips] == [
        ("DCIM/100BWC/GOOD0001.MP4", "uploaded")
    ]


def test_a_name_time_at_the_calendars_edge_in_a_zone_falls_back_to_the_mtime(
    tmp_path: Path,
) -> None:
    """31 Dec 9999 23:00 in New York is past year 9999 in UTC: the clip is still found,
    dated by its mtime read in the zone, instead of failing the camera's scan."""
    clips = tmp_path / "DCIM"
    clips.mkdir()
    (clips / "99991231_230000.MP4").write_bytes(b"edge" * 100)
    mtime_ns = 1_795_000_000 * 10**9  # a camera wall clock of 2026-11-18 11:06:40
    os.utime(clips / "99991231_230000.MP4", ns=(mtime_ns, mtime_ns))
    profile = CameraProfile(
        name="ny", clock="local", timezone="America/New_York",
        recorded_pattern=r"(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2})_(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})",
    )
    [clip] = scan_volume(tmp_path, profile, ScanLimits(max_file_size=2**40)).clips
    assert clip.recorded_at.isoformat() == "2026-11-18T16:06:40+00:00"
    assert clip.camera_time is not None
    assert (clip.camera_time.reading, clip.camera_time.source) == (
        "2026-11-18T11:06:40 America/New_York", "mtime")
