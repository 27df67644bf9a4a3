"""Offloading a camera folder end to end through the real command line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from contextlib import closing

from tests.dock import Dock, central_objects, make_camera, sha256_of, wait_until
from tests.treesnapshot import NO_DIFFERENCES, differences, tree_snapshot

MIB = 1024 * 1024
# 50 clips: one of 200 MiB, a few mid-sized, the rest small; every clip with sidecars
MIXED_SIZES = [200 * MIB, 64 * MIB, 33 * MIB + 7, 10 * MIB, 4 * MIB + 1, 0] + [
    (n * 97_531) % (3 * MIB) + 1 for n in range(44)
]


def test_ingest_wait_uploads_every_clip_with_its_first_read_hash(dock: Dock) -> None:
    """ingest --wait stores every clip and sidecar centrally, hashes equal to the camera's."""
    camera = dock.root / "card"
    expected = make_camera(camera, MIXED_SIZES)
    before = tree_snapshot(camera)

    result = dock.cli("ingest", str(camera), "--camera-serial", "X81234567", "--wait")

    assert "50 clips (50 new)" in result.stdout
    clips = dock.clips()
    assert len(clips) == 50
    by_path = {clip["source_path"]: clip for clip in clips}
    for path, sha256 in expected.items():
        if path.endswith(".MP4"):
            assert by_path[path]["state"] == "uploaded"
            assert by_path[path]["sha256"] == sha256
        else:
            sidecar_owner = next(c for c in clips if any(s["source_path"] == path
                                                          for s in c["sidecars"]))
            assert any(s["sha256"] == sha256 for s in sidecar_owner["sidecars"])
    stored = central_objects(dock.nas)
    assert sorted(stored.values()) == sorted(expected.values())
    for clip in clips:
        assert stored[clip["remote_key"]] == clip["sha256"]
        manifest = json.loads((dock.nas / dock.manifest_key(clip)).read_text())
        assert manifest["sha256"] == clip["sha256"]
        assert manifest["original_path"] == clip["source_path"]
        assert manifest["camera"] == "X81234567"
    # the camera folder was only read: every name, type, mode, size, mtime and hash as it
    # was, nothing added, nothing removed (access times may change)
    assert differences(before, tree_snapshot(camera)) == NO_DIFFERENCES
    assert not list(dock.nas.rglob("*.part"))
    assert dock.cli("audit", "verify").returncode == 0


def test_keys_follow_the_template_with_recording_date_and_sanitised_names(dock: Dock) -> None:
    """Remote keys are {camera}/{recorded:%Y/%m/%d}/{stem}.{sha16}{ext}, sidecars' too."""
    camera = dock.root / "card"
    clip = camera / "DCIM" / "100BWC" / "odd name;$(x).mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"video")
    os.utime(clip, (1_700_000_000, 1_700_000_000))  # 2023-11-14 UTC
    clip.with_suffix(".GPS").write_bytes(b"track")  # a sidecar: its own name and hash

    dock.cli("ingest", str(camera), "--camera-serial", "CAM-7", "--wait")

    [row] = dock.clips()
    sha16 = hashlib.sha256(b"video").hexdigest()[:16]
    assert row["remote_key"] == f"CAM-7/2023/11/14/odd_name_x_.{sha16}.mp4"
    assert sha256_of(dock.nas / row["remote_key"]) == row["sha256"]
    [sidecar] = row["sidecars"]
    track16 = hashlib.sha256(b"track").hexdigest()[:16]
    assert sidecar["remote_key"] == f"CAM-7/2023/11/14/odd_name_x_.{track16}.GPS"
    assert (dock.nas / sidecar["remote_key"]).read_bytes() == b"track"


def test_reingesting_the_same_folder_uploads_nothing_twice(dock: Dock) -> None:
    """A folder already offloaded is not offloaded again; a reused name with new content is."""
    camera = dock.root / "card"
    make_camera(camera, [1000, 2000], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    first = central_objects(dock.nas)

    again = dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    assert "2 clips (0 new)" in again.stdout
    assert central_objects(dock.nas) == first

    reused = next(camera.rglob("*.MP4"))
    reused.write_bytes(b"new content under an old name")
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    assert len(dock.clips()) == 3
    assert len(central_objects(dock.nas)) == 3


def test_same_content_from_the_same_camera_is_stored_once(dock: Dock) -> None:
    """A copy of a clip under another name is recorded but points at the first upload."""
    camera = dock.root / "card"
    (camera / "DCIM").mkdir(parents=True)
    (camera / "DCIM" / "A.MP4").write_bytes(b"same bytes" * 1000)
    (camera / "DCIM" / "A.GPS").write_bytes(b"first track")
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    (camera / "DCIM" / "B.MP4").write_bytes(b"same bytes" * 1000)
    (camera / "DCIM" / "B.GPS").write_bytes(b"second track")
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")

    first, second = dock.clips()
    assert second["state"] == "uploaded"
    assert second["remote_key"] == first["remote_key"]
    stored = central_objects(dock.nas)
    assert sorted(stored.values()) == sorted(
        sha256_of(camera / "DCIM" / name) for name in ("A.MP4", "A.GPS", "B.GPS"))
    assert (dock.nas / (dock.clips()[1]["sidecars"][0]["remote_key"])).read_bytes() == (
        b"second track")


def test_storage_unreachable_keeps_clips_staged_and_exits_1(dock: Dock) -> None:
    """With central storage gone, ingest --wait reports why and loses nothing."""
    unmounted = dock.root / "unmounted-nas"
    dock.write_config(storage={"path": str(unmounted)})
    camera = dock.root / "card"
    make_camera(camera, [5000], sidecars=False)

    result = dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait",
                      "--timeout", "3", check=False)

    assert result.returncode == 1, result.stderr
    assert not unmounted.exists()  # nothing was written where the NAS should be
    [row] = dock.clips()
    assert row["state"] == "staged"
    assert row["upload_attempts"] >= 1
    assert row["last_error"]
    assert "problem: clip 1" in result.stderr


def test_ingest_hands_over_to_a_running_daemon_and_waits(dock: Dock) -> None:
    """With the daemon alive, ingest --wait records the docking and the daemon does the work."""
    daemon = dock.start_daemon()
    try:
        wait_until(lambda: json.loads(dock.cli("status", "--json").stdout)["daemon_alive"],
                   timeout=30, message="daemon alive")
        camera = dock.root / "card"
        expected = make_camera(camera, [3000, 70000], sidecars=False)
        result = dock.cli("ingest", str(camera), "--camera-serial", "HAND1", "--wait", "--json")
    finally:
        assert dock.stop_daemon(daemon) == 0
    summary = json.loads(result.stdout)
    assert summary["handed_over"] is True
    assert summary["states"] == {"uploaded": 2}
    copied_by = {e.get("owner", "") for e in dock.log_events() if e.get("event") == "clip.staged"}
    assert copied_by and all("/copier-" in owner for owner in copied_by)  # the daemon's copiers
    assert sorted(central_objects(dock.nas).values()) == sorted(expected.values())


def test_a_folder_handed_over_is_adopted_only_once_its_scan_is_in_the_ledger(
    dock: Dock,
) -> None:
    """The daemon adopts an ingest's folder only once its clips are listed: adopted
    mid-scan (many entries), it was found done with nothing listed, ended, and --wait
    waited for clips nobody would copy."""
    daemon = dock.start_daemon()
    try:
        wait_until(lambda: json.loads(dock.cli("status", "--json").stdout)["daemon_alive"],
                   timeout=30, message="daemon alive")
        camera = dock.root / "card"
        expected = make_camera(camera, [1000] * 40, sidecars=False)
        junk = camera / "MISC"
        junk.mkdir()
        for number in range(150_000):  # a scan of seconds, many turns of the daemon's loop
            (junk / f"n{number:06d}.dat").touch()
        result = dock.cli("ingest", str(camera), "--camera-serial", "SLOW1", "--wait",
                          "--timeout", "60", "--json", check=False)
    finally:
        assert dock.stop_daemon(daemon) == 0
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["handed_over"] is True
    assert summary["states"] == {"uploaded": 40}
    assert sorted(central_objects(dock.nas).values()) == sorted(expected.values())


def test_status_json_reports_counts_cameras_and_liveness(dock: Dock) -> None:
    """status --json is one document with the keys scripts rely on."""
    camera = dock.root / "card"
    make_camera(camera, [10, 20], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "S1", "--wait")
    document = json.loads(dock.cli("status", "--json").stdout)
    assert document["clips"]["uploaded"] == 2
    assert document["daemon_alive"] is False
    assert document["storage_reachable"] is True
    assert document["oldest_pending_at"] is None
    assert document["cameras"] == []


def test_ingest_wait_is_not_held_up_by_other_cameras_staged_clips(dock: Dock) -> None:
    """ingest --wait uploads its own folder's clips even when other clips wait staged."""
    first, second = dock.root / "card-a", dock.root / "card-b"
    make_camera(first, [1000, 2000], sidecars=False, seed=1)
    make_camera(second, [3000], sidecars=False, seed=2)
    dock.cli("ingest", str(first), "--camera-serial", "A1")  # copies only: A1 stays staged
    result = dock.cli("ingest", str(second), "--camera-serial", "B2", "--wait",
                      "--timeout", "60", "--json")
    assert json.loads(result.stdout)["states"] == {"uploaded": 1}
    assert {c["camera_serial"]: c["state"] for c in dock.clips()} == {"A1": "staged",
                                                                      "B2": "uploaded"}


def test_a_refused_manifest_keeps_its_clip_from_counting_as_uploaded(dock: Dock) -> None:
    """Storage refuses a clip's custody record (a folder in its way): the clip stays staged
    and pending, ingest exits 1; with the way clear it is uploaded with its manifest."""
    # a fixed template, so the test knows the manifest's key without the product's help
    dock.write_config(storage={"key_template": "{camera}/{name}", "single_dock": True,
                               "permanent_error_backoff_seconds": 0.5})
    camera = dock.root / "card"
    (camera / "DCIM").mkdir(parents=True)
    (camera / "DCIM" / "A.MP4").write_bytes(b"evidence" * 1000)
    manifest = dock.nas / "R1" / "A.MP4.dock-test.clip-1.json"
    (manifest / "in-the-way").mkdir(parents=True)

    refused = dock.cli("ingest", str(camera), "--camera-serial", "R1", "--wait",
                       "--timeout", "5", check=False)

    assert refused.returncode == 1, refused.stdout + refused.stderr
    [clip] = dock.clips()
    assert clip["state"] == "staged"
    assert "A.MP4.dock-test.clip-1.json" in clip["last_error"]
    status = json.loads(dock.cli("status", "--json").stdout)
    assert status["clips"].get("uploaded", 0) == 0
    assert status["oldest_pending_at"] is not None
    assert manifest.is_dir()  # nothing of the refusal was overwritten

    shutil.rmtree(manifest)
    dock.cli("ingest", str(camera), "--camera-serial", "R1", "--wait", "--timeout", "60")
    [clip] = dock.clips()
    assert clip["state"] == "uploaded"
    assert json.loads(manifest.read_text())["sha256"] == clip["sha256"]


def test_ingest_wait_uploads_a_clip_before_the_last_one_is_copied(dock: Dock) -> None:
    """A hand-run ingest --wait overlaps the stages: a clip is uploaded while others copy."""
    camera = dock.root / "card"
    make_camera(camera, [4 * MIB] * 8, sidecars=False)

    dock.cli("ingest", str(camera), "--camera-serial", "X81234567", "--wait")

    with closing(sqlite3.connect(dock.ledger_path)) as connection:
        events = connection.execute(
            "SELECT event, clip_id FROM audit_log WHERE clip_id IS NOT NULL ORDER BY id"
        ).fetchall()
    order = [event for event, _clip in events]
    assert order.count("clip.uploaded") == 8
    last_staged = len(order) - 1 - order[::-1].index("clip.staged")
    assert order.index("clip.uploaded") < last_staged
