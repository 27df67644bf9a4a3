"""bwc-dock resync: every repair path, through the real command on a real dock.

Real parts: the SQLite ledger file, staging and the central-storage folder on disk, the
``bwc-dock`` console script in subprocesses, and a live ``bwc-dock run`` daemon.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from tests.dock import Dock, central_objects, make_camera, sha256_of, wait_until
from tests.realparts import need_command, need_root


def ledger_rows(dock: Dock) -> list[str]:
    """Every row of every table, as SQL text: equal lists mean an unchanged ledger."""
    with sqlite3.connect(dock.ledger_path) as connection:
        return list(connection.iterdump())


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``."""
    return {
        str(path.relative_to(root)): sha256_of(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def resync(dock: Dock, *arguments: str, expect: int = 0) -> dict[str, Any]:
    result = dock.cli("resync", "--json", *arguments, check=False)
    assert result.returncode == expect, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def mark_purged(dock: Dock, clip_id: int) -> None:
    """What retention does: the staged copy deleted, the ledger told (by the daemon's code
    path in production; here the same two effects, so a test needs no 72-hour wait)."""
    [clip] = [c for c in dock.clips() if c["id"] == clip_id]
    folder = dock.staging_dir / "clips" / f"{clip_id:08d}"
    for staged in folder.iterdir():
        staged.unlink()
    folder.rmdir()
    with sqlite3.connect(dock.ledger_path) as connection:
        connection.execute(
            "UPDATE clips SET staged_purged_at = '2026-01-01 00:00:00' WHERE id = ?", (clip_id,)
        )
    assert clip["state"] == "uploaded"


def offload(dock: Dock, folder: Path, serial: str, *, wait: bool = True) -> list[dict[str, Any]]:
    arguments = ["ingest", str(folder), "--camera-serial", serial]
    dock.cli(*arguments, *(["--wait"] if wait else []))
    return dock.clips("--camera", serial)


def test_dry_run_prints_the_plan_and_changes_nothing(dock: Dock) -> None:
    """--dry-run lists every repair it would make; ledger rows, staging and NAS stay as is."""
    camera = dock.watch_dir / "X1"
    make_camera(camera, [3000, 4000, 5000], sidecars=False)
    clips = offload(dock, camera, "X1")
    (dock.nas / clips[0]["remote_key"]).unlink()
    stray = dock.staging_dir / "clips" / "99999999" / "unknown.bin"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"nobody knows me")
    (camera / "DCIM" / "100BWC" / "NEW.MP4").write_bytes(b"recorded after the offload")
    rows, staging, nas = ledger_rows(dock), tree(dock.staging_dir), tree(dock.nas)

    plan = resync(dock, "--dry-run")

    kinds = Counter(action["kind"] for action in plan["actions"])
    assert kinds == {"central_copy_bad": 1, "unknown_staged_file": 1, "new_on_camera": 1}
    assert plan["dry_run"] is True and plan["ok"] is True
    assert ledger_rows(dock) == rows
    assert tree(dock.staging_dir) == staging
    assert tree(dock.nas) == nas


def test_missing_central_object_is_uploaded_again_from_staging(dock: Dock) -> None:
    """A clip whose central copy vanished is re-queued and, with no daemon, re-uploaded."""
    camera = dock.root / "card"
    expected = make_camera(camera, [2000, 3000], sidecars=True)
    clips = offload(dock, camera, "X1")
    victim = dock.nas / clips[1]["remote_key"]
    victim.unlink()

    report = resync(dock)

    assert [a["clip_id"] for a in report["actions"] if a["kind"] == "central_copy_bad"] == [
        clips[1]["id"]
    ]
    assert report["uploaded"] == 1
    assert sha256_of(victim) == clips[1]["sha256"]
    assert sorted(central_objects(dock.nas).values()) == sorted(expected.values())
    assert _sums_hashes(dock)  # the docking's anchor is there too
    assert {c["state"] for c in dock.clips()} == {"uploaded"}
    assert resync(dock)["actions"] == []  # repaired for good
    assert dock.cli("audit", "verify").returncode == 0


def _sums_hashes(dock: Dock) -> list[str]:
    return [sha256_of(path) for path in dock.nas.rglob("SHA256SUMS*")]


def test_purged_clip_is_read_again_from_a_docked_camera(dock: Dock) -> None:
    """Central copy gone and staging purged: the camera, still docked, is read again."""
    camera = dock.watch_dir / "X1"
    make_camera(camera, [2500, 3500], sidecars=False)
    clips = offload(dock, camera, "X1")
    mark_purged(dock, clips[0]["id"])
    (dock.nas / clips[0]["remote_key"]).unlink()

    report = resync(dock)

    assert report["copied"] == 1 and report["uploaded"] == 1
    [action] = [a for a in report["actions"] if a["kind"] == "central_copy_bad"]
    assert "docked camera" in action["action"]
    assert sha256_of(dock.nas / clips[0]["remote_key"]) == clips[0]["sha256"]
    assert dock.clips()[0]["state"] == "uploaded"


def test_clip_with_no_copy_left_anywhere_is_reported_loudly(dock: Dock) -> None:
    """Central copy gone, staging purged, camera not docked: exit 1 naming the clip."""
    camera = dock.root / "card"
    make_camera(camera, [1500, 2500], sidecars=False)
    clips = offload(dock, camera, "X1")
    mark_purged(dock, clips[0]["id"])
    (dock.nas / clips[0]["remote_key"]).unlink()

    report = resync(dock, expect=1)
    [problem] = report["unrepairable"]
    assert problem["clip_id"] == clips[0]["id"]
    assert "not docked" in problem["problem"]

    human = dock.cli("resync", check=False)
    assert human.returncode == 1
    assert f"CANNOT REPAIR clip {clips[0]['id']}" in human.stderr


def test_lost_staged_copy_is_adopted_and_unknown_files_are_quarantined(dock: Dock) -> None:
    """A staged file in the wrong place whose hash the ledger knows goes back to its clip;
    a file nobody knows moves to staging/quarantine with its bytes intact."""
    camera = dock.root / "card"
    make_camera(camera, [2200, 3300], sidecars=False)
    clips = offload(dock, camera, "X1")
    first = clips[0]
    staged = dock.staging_dir / "clips" / f"{first['id']:08d}"
    saved = dock.root / "saved.bin"
    saved.write_bytes((staged / Path(first["source_path"]).name).read_bytes())
    mark_purged(dock, first["id"])
    lost = dock.staging_dir / "clips" / "restored" / "copy.bin"
    lost.parent.mkdir(parents=True)
    os.replace(saved, lost)
    unknown = dock.staging_dir / "clips" / "restored" / "mystery.bin"
    unknown.write_bytes(b"mystery bytes")
    (dock.nas / first["remote_key"]).unlink()

    report = resync(dock)

    kinds = Counter(action["kind"] for action in report["actions"])
    assert kinds["lost_staged_copy"] == 1 and kinds["unknown_staged_file"] == 1
    assert report["ok"] and report["uploaded"] == 1
    assert sha256_of(dock.nas / first["remote_key"]) == first["sha256"]
    assert not lost.exists() and not unknown.exists()
    quarantined = dock.staging_dir / "quarantine" / "clips" / "restored" / "mystery.bin"
    assert quarantined.read_bytes() == b"mystery bytes"
    assert dock.cli("verify").returncode == 0  # the adopted copy is where the ledger says


def test_damaged_staged_copy_is_read_again_from_the_docked_camera(dock: Dock) -> None:
    """A staged clip whose staged copy no longer hashes right is copied again from the camera."""
    camera = dock.watch_dir / "X1"
    make_camera(camera, [4000], sidecars=False)
    [clip] = offload(dock, camera, "X1", wait=False)
    assert clip["state"] == "staged"
    staged = next((dock.staging_dir / "clips" / f"{clip['id']:08d}").glob("*.MP4"))
    staged.write_bytes(b"bit rot")

    report = resync(dock)

    [action] = [a for a in report["actions"] if a["kind"] == "staged_copy_bad"]
    assert action["clip_id"] == clip["id"]
    [after] = dock.clips()
    assert after["state"] == "uploaded" and after["sha256"] == clip["sha256"]
    assert sha256_of(dock.nas / after["remote_key"]) == clip["sha256"]


def squat_on_the_key(dock: Dock) -> tuple[dict[str, Any], Path, Path]:
    """A clip quarantined because other bytes sit under its content key: (the clip, the
    squatted key's path, where resync keeps the other bytes)."""
    camera = dock.root / "card"
    clip_path = camera / "DCIM" / "100BWC" / "A.MP4"
    clip_path.parent.mkdir(parents=True)
    clip_path.write_bytes(b"the evidence")
    os.utime(clip_path, (1_700_000_000, 1_700_000_000))  # recorded 2023-11-14 UTC
    [clip] = offload(dock, camera, "X1", wait=False)
    key = f"X1/2023/11/14/A.{hashlib.sha256(b'the evidence').hexdigest()[:16]}.MP4"
    squatter = dock.nas / key
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"not the evidence")
    aside = dock.nas / "_conflicts" / f"{key}.{hashlib.sha256(b'not the evidence').hexdigest()}"
    ingest = dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait", check=False)
    assert ingest.returncode == 1
    [quarantined] = dock.clips()
    assert quarantined["state"] == "quarantined"
    assert "tampering or corruption" in quarantined["last_error"]
    assert hashlib.sha256(b"not the evidence").hexdigest() in quarantined["last_error"]
    return clip, squatter, aside


def test_quarantined_clip_keeps_the_other_bytes_aside_and_never_removes_them(
    dock: Dock,
) -> None:
    """Other bytes under the clip's key quarantine it; resync copies them to _conflicts/
    (audited) and leaves them under the key (they may be another dock's): exit 1."""
    clip, squatter, aside = squat_on_the_key(dock)

    report = resync(dock, expect=1)

    [problem] = report["unrepairable"]
    assert "is left as it is" in problem["problem"]
    assert dock.clips()[0]["state"] == "quarantined"
    assert squatter.read_bytes() == b"not the evidence"
    assert aside.read_bytes() == b"not the evidence"
    events = _audit_events(dock, clip["id"])
    assert "object.conflict_kept" in events
    assert "central.wrong_object_removed" not in events
    [kept] = _audit_details(dock, clip["id"], "object.conflict_kept")
    assert kept == {
        "key": str(squatter.relative_to(dock.nas)),
        "their_sha256": hashlib.sha256(b"not the evidence").hexdigest(),
        "expected": clip["sha256"],
        "aside_key": str(aside.relative_to(dock.nas)),
    }
    assert dock.cli("audit", "verify").returncode == 0


def test_a_store_that_refuses_to_remove_the_other_bytes_leaves_the_clip_unrepairable(
    dock: Dock,
) -> None:
    """Where the store will not delete (immutable, as under Object Lock), resync keeps the
    other bytes aside, removes nothing and reports the clip as unrepairable (exit 1)."""
    need_root()
    chattr = need_command("chattr")
    clip, squatter, aside = squat_on_the_key(dock)
    subprocess.run([chattr, "+i", str(squatter)], check=True)
    try:
        report = resync(dock, expect=1)
    finally:
        subprocess.run([chattr, "-i", str(squatter)], check=True)

    [problem] = report["unrepairable"]
    assert problem["clip_id"] == clip["id"]
    assert "tampering or corruption" in problem["problem"]
    assert "is left as it is" in problem["problem"]
    assert squatter.read_bytes() == b"not the evidence"
    assert aside.read_bytes() == b"not the evidence"
    assert dock.clips()[0]["state"] == "quarantined"
    assert "central.wrong_object_removed" not in _audit_events(dock, clip["id"])


def test_a_wrong_object_under_an_uploaded_clips_key_is_kept_aside_not_deleted(
    dock: Dock,
) -> None:
    """Central bytes flipped under an uploaded clip's key: resync keeps them under
    _conflicts/<key>.<their sha256> and leaves them under the key (exit 1)."""
    camera = dock.root / "card"
    make_camera(camera, [3000, 4000], sidecars=False)
    clips = offload(dock, camera, "X1")
    flipped = dock.nas / clips[0]["remote_key"]
    data = bytearray(flipped.read_bytes())
    data[100] ^= 0xFF
    flipped.write_bytes(bytes(data))
    their_sha256 = hashlib.sha256(data).hexdigest()

    report = resync(dock, expect=1)

    assert not report["ok"] and report["uploaded"] == 0
    assert flipped.read_bytes() == bytes(data)  # never removed
    kept = dock.nas / "_conflicts" / f"{clips[0]['remote_key']}.{their_sha256}"
    assert kept.read_bytes() == bytes(data)
    [requeue] = [e for e in report["plan"] if e["repair"] == "requeue"]
    [planned] = requeue["keep_aside_first"]
    assert planned["aside_key"] == f"_conflicts/{clips[0]['remote_key']}.{their_sha256}"


def _audit_details(dock: Dock, clip_id: int, event: str) -> list[dict[str, Any]]:
    with sqlite3.connect(dock.ledger_path) as connection:
        return [
            json.loads(row[0])
            for row in connection.execute(
                "SELECT details FROM audit_log WHERE clip_id = ? AND event = ? ORDER BY id",
                (clip_id, event),
            )
        ]


def _audit_events(dock: Dock, clip_id: int) -> list[str]:
    with sqlite3.connect(dock.ledger_path) as connection:
        return [
            row[0]
            for row in connection.execute(
                "SELECT event FROM audit_log WHERE clip_id = ? ORDER BY id", (clip_id,)
            )
        ]


def test_new_clips_on_a_docked_camera_are_found_and_offloaded(dock: Dock) -> None:
    """A clip the ledger lacks on a docked camera is recorded, copied and uploaded."""
    camera = dock.watch_dir / "X1"
    make_camera(camera, [1000], sidecars=False)
    offload(dock, camera, "X1")
    late = camera / "DCIM" / "100BWC" / "LATE.MP4"
    late.write_bytes(b"found by resync")

    report = resync(dock)

    assert [a["kind"] for a in report["actions"]] == ["new_on_camera"]
    [row] = [c for c in dock.clips() if c["source_path"] == "DCIM/100BWC/LATE.MP4"]
    assert row["state"] == "uploaded"
    assert sha256_of(dock.nas / row["remote_key"]) == sha256_of(late)


def test_leftovers_of_interrupted_uploads_are_removed(dock: Dock) -> None:
    """With nothing uploading, this dock's .part files in central storage are removed."""
    camera = dock.root / "card"
    make_camera(camera, [1000], sidecars=False)
    offload(dock, camera, "X1")
    leftover = dock.nas / "X1" / "half.MP4.0123456789abcdef.dock-test.part"
    leftover.write_bytes(b"half an upload")
    other_dock = dock.nas / "X1" / "half.MP4.0123456789abcdef.dock-other.part"
    other_dock.write_bytes(b"another dock's upload in progress")

    report = resync(dock)

    assert [a["kind"] for a in report["actions"]] == ["partial_uploads"]
    assert not leftover.exists()
    assert other_dock.exists()


def test_resync_beside_a_live_daemon_uploads_no_clip_twice(dock: Dock) -> None:
    """With the daemon running, resync only re-queues; each clip is uploaded once per need."""
    daemon = dock.start_daemon()
    try:
        camera = dock.watch_dir / "X1"
        make_camera(camera, [200_000] * 30, sidecars=False)
        wait_until(lambda: len(dock.clips()) == 30, 60, "daemon discovers the camera")
        during = resync(dock)  # while the daemon copies and uploads
        assert during["daemon_alive"] is True
        assert during["copied"] == 0 and during["uploaded"] == 0
        wait_until(lambda: {c["state"] for c in dock.clips()} == {"uploaded"}, 120, "all uploaded")
        damaged = dock.clips()[:3]
        for clip in damaged:
            (dock.nas / clip["remote_key"]).unlink()
        after = resync(dock)
        assert after["uploaded"] == 0
        assert sorted(a["clip_id"] for a in after["actions"] if a["clip_id"]) == [
            c["id"] for c in damaged
        ]
        # verify --remote passes as soon as the clips are staged again (a staged clip has
        # no central copy to check), so wait for them to be uploaded first
        wait_until(
            lambda: {c["state"] for c in dock.clips()} == {"uploaded"}
            and dock.cli("verify", "--remote", check=False).returncode == 0,
            120,
            "the daemon re-uploads what resync re-queued",
        )
    finally:
        assert dock.stop_daemon(daemon) == 0
    uploads = Counter(
        event["clip"] for event in dock.log_events() if event.get("event") == "upload.done"
    )
    repaired = {clip["id"] for clip in damaged}
    assert {clip_id: count for clip_id, count in uploads.items() if clip_id in repaired} == {
        clip_id: 2 for clip_id in repaired
    }
    assert {clip_id: count for clip_id, count in uploads.items() if clip_id not in repaired} == {
        clip["id"]: 1 for clip in dock.clips() if clip["id"] not in repaired
    }
    with sqlite3.connect(dock.ledger_path) as connection:
        uploaded_events = Counter(
            row[0]
            for row in connection.execute(
                "SELECT clip_id FROM audit_log WHERE event = 'clip.uploaded'"
            )
        )
    assert all(uploaded_events[c["id"]] == (2 if c["id"] in repaired else 1) for c in dock.clips())


def test_json_lists_the_plan_as_repair_values_and_their_outcomes(dock: Dock) -> None:
    """--json lists each repair by kind: planned in a dry run, done in a real one."""
    camera = dock.root / "card"
    make_camera(camera, [2000, 3000], sidecars=False)
    clips = offload(dock, camera, "X1")
    (dock.nas / clips[0]["remote_key"]).unlink()
    stray = dock.staging_dir / "clips" / "99999999" / "unknown.bin"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"nobody knows me")
    expected = ["quarantine_file", "requeue", "clean_partials", "redo_work"]

    planned = resync(dock, "--dry-run")["plan"]
    done = resync(dock)["plan"]

    assert [entry["repair"] for entry in planned] == expected
    assert {entry["outcome"] for entry in planned} == {"planned"}
    [requeue] = [entry for entry in planned if entry["repair"] == "requeue"]
    assert requeue["clip_id"] == clips[0]["id"] and requeue["target"] == "staged"
    assert [entry["repair"] for entry in done] == expected
    assert {entry["outcome"] for entry in done} == {"done"}
    assert not stray.exists()
