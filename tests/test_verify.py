"""bwc-dock verify: staged and central copies re-hashed against the ledger.

Real parts: the SQLite ledger, staging and the central-storage folder on disk, the
``bwc-dock`` console script, and GNU ``sha256sum -c`` for the per-docking anchors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from bwc_dock.config import load_config
from bwc_dock.custody import anchor_dockings
from bwc_dock.ledger import Ledger
from bwc_dock.storage import open_backend
from tests.dock import Dock, make_camera, sha256_of, wait_until


def verify(dock: Dock, *arguments: str, expect: int) -> dict[str, Any]:
    result = dock.cli("verify", "--json", *arguments, check=False)
    assert result.returncode == expect, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def offloaded(dock: Dock, sizes: list[int], *, sidecars: bool = True) -> list[dict[str, Any]]:
    camera = dock.root / "card"
    make_camera(camera, sizes, sidecars=sidecars)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    return dock.clips()


def test_intact_copies_verify_and_leave_an_audit_event_each(dock: Dock) -> None:
    """Every staged and central copy checks out: exit 0, one clip.verified event per clip."""
    clips = offloaded(dock, [1000, 2000, 3000])

    report = verify(dock, "--remote", expect=0)

    assert report["staged_checked"] == 3 and report["remote_checked"] == 3
    assert report["mismatches"] == []
    export = json.loads(dock.cli("audit", "export", "--format", "json").stdout)
    for clip in export["clips"]:
        [step] = [s for s in clip["steps"] if s["event"] == "clip.verified"]
        assert step["outcome"] == "ok (staging, central)"
    assert len(export["clips"]) == len(clips)


def test_deleted_and_corrupted_central_objects_are_found_and_repaired_by_resync(
    dock: Dock,
) -> None:
    """verify --remote names a deleted and a corrupted object; resync restores the deleted
    one from staging and leaves the corrupted one for a person; once that person removed
    it, resync restores it too and verify --remote passes."""
    clips = offloaded(dock, [5000, 6000, 7000])
    deleted, corrupted = dock.nas / clips[0]["remote_key"], dock.nas / clips[1]["remote_key"]
    deleted.unlink()
    content = bytearray(corrupted.read_bytes())
    content[100] ^= 0xFF  # same size, one byte flipped
    corrupted.write_bytes(bytes(content))

    assert verify(dock, expect=0)["mismatches"] == []  # staging is intact
    report = verify(dock, "--remote", expect=1)
    found = {(m["clip_id"], m["problem"]) for m in report["mismatches"]}
    assert found == {
        (clips[0]["id"], "missing"),
        (clips[1]["id"], "content differs from the ledger hash"),
    }
    [bad] = [m for m in report["mismatches"] if m["clip_id"] == clips[1]["id"]]
    assert bad["found"] == sha256_of(corrupted) and bad["expected"] == clips[1]["sha256"]
    human = dock.cli("verify", "--remote", check=False)
    assert human.returncode == 1 and human.stderr.count("MISMATCH") == 2

    assert dock.cli("resync", check=False).returncode == 1  # the other bytes stay
    assert sha256_of(deleted) == clips[0]["sha256"]
    assert corrupted.read_bytes() == bytes(content)
    corrupted.unlink()  # the person's decision, after reviewing the copy kept aside
    dock.cli("resync")

    assert verify(dock, "--remote", expect=0)["remote_checked"] == 3
    assert sha256_of(corrupted) == clips[1]["sha256"]


def test_damaged_staged_copy_and_sidecar_are_named(dock: Dock) -> None:
    """verify (staging only) names a damaged staged clip and a missing staged sidecar."""
    clips = offloaded(dock, [1000, 2000])
    with_sidecar = next(c for c in clips if c["sidecars"])
    folder = dock.staging_dir / "clips" / f"{with_sidecar['id']:08d}"
    video = next(folder.glob("*.MP4"))
    video.write_bytes(b"damaged")
    sidecar = next(p for p in folder.iterdir() if p.suffix != ".MP4")
    sidecar.unlink()

    report = verify(dock, expect=1)

    problems = {(m["where"], m["file"], m["problem"]) for m in report["mismatches"]}
    assert problems == {
        ("staging", video.name, "content differs from the ledger hash"),
        ("staging", sidecar.name, "missing"),
    }


def test_docking_sha256sums_pass_the_real_sha256sum_check(dock: Dock, tmp_path: Path) -> None:
    """The per-docking SHA256SUMS, downloaded with its objects, passes `sha256sum -c`;
    a flipped byte makes it fail."""
    sha256sum = shutil.which("sha256sum")
    assert sha256sum is not None, "coreutils sha256sum is part of every Debian"
    clips = offloaded(dock, [3000, 4000, 0])
    [sums] = list(dock.nas.rglob("SHA256SUMS*"))
    download = tmp_path / "download"
    shutil.copytree(sums.parent, download)  # what an investigator fetches: the folder

    checked = subprocess.run(
        [sha256sum, "--strict", "-c", sums.name],
        cwd=download,
        capture_output=True,
        text=True,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = {line.split("  ", 1)[1] for line in sums.read_text().splitlines()
              if not line.startswith("#")}  # the header says how times were read
    expected = {Path(c["remote_key"]).name for c in clips}
    expected |= {Path(s["remote_key"]).name for c in clips for s in c["sidecars"]}
    assert listed == expected
    assert checked.stdout.count(": OK") == len(expected)
    target = download / Path(clips[0]["remote_key"]).name
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    failed = subprocess.run(
        [sha256sum, "-c", sums.name], cwd=download, capture_output=True, text=True, check=False
    )
    assert failed.returncode == 1 and "FAILED" in failed.stdout


def test_on_seaweedfs_deleted_and_corrupted_objects_are_found_and_repaired(
    dock: Dock, seaweedfs: Any, s3_bucket: str
) -> None:
    """The same checks and repairs against a real S3 store (SeaweedFS on loopback), and
    the SHA256SUMS downloaded from it passes `sha256sum -c`."""
    dock.extra_environment.update(seaweedfs.environment())
    dock.write_config(
        storage={
            "backend": "s3",
            "endpoint_url": seaweedfs.endpoint_url,
            "allow_plaintext": True,
            "bucket": s3_bucket,
            "addressing_style": "path",
            "prefix": "bwc/",
            "retry_initial_seconds": 0.2,
            "retry_max_seconds": 2.0,
        }
    )
    clips = offloaded(dock, [5000, 6000, 7000])
    client = seaweedfs.client()
    client.delete_object(Bucket=s3_bucket, Key="bwc/" + clips[0]["remote_key"])
    # other bytes that claim the evidence's hash in their metadata: a claim never counts
    client.put_object(Bucket=s3_bucket, Key="bwc/" + clips[1]["remote_key"], Body=b"forged",
                      Metadata={"sha256": clips[1]["sha256"]})

    report = verify(dock, "--remote", expect=1)
    assert {(m["clip_id"], m["problem"]) for m in report["mismatches"]} == {
        (clips[0]["id"], "missing"),
        (clips[1]["id"], "content differs from the ledger hash"),
    }
    assert dock.cli("resync", check=False).returncode == 1  # the forged bytes stay
    client.delete_object(Bucket=s3_bucket, Key="bwc/" + clips[1]["remote_key"])  # a person
    dock.cli("resync")
    assert verify(dock, "--remote", expect=0)["remote_checked"] == 3
    forged_sha256 = hashlib.sha256(b"forged").hexdigest()
    kept = f"bwc/_conflicts/{clips[1]['remote_key']}.{forged_sha256}"
    assert client.get_object(Bucket=s3_bucket, Key=kept)["Body"].read() == b"forged"
    assert dock.cli("audit", "verify", "--remote").returncode == 0

    download = dock.root / "download"
    download.mkdir()
    [sums_key] = [k for k in seaweedfs.object_keys(s3_bucket, "bwc/") if "/SHA256SUMS." in k]
    folder = sums_key.rsplit("/", 1)[0] + "/"
    for key in seaweedfs.object_keys(s3_bucket, folder):
        body = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        (download / key.removeprefix(folder)).write_bytes(body)
    checked = subprocess.run(
        ["sha256sum", "--strict", "-c", sums_key.removeprefix(folder)],
        cwd=download,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_sha256sums_the_store_refused_is_written_by_the_daemon_at_start(dock: Dock) -> None:
    """The store refuses a docking's SHA256SUMS as its last clip lands (here: a folder in
    the way). The clips are safe; the ledger knows the list is missing, and the next
    daemon start writes it, once: a later start finds nothing to do."""
    camera = dock.root / "card"
    make_camera(camera, [3000, 4000], sidecars=False)
    for path in camera.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))  # recorded 2023-11-14 UTC
    sums = dock.nas / "X1/2023/11/14/SHA256SUMS.dock-test.docking-000001"
    (sums / "in-the-way").mkdir(parents=True)

    ingest = dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    assert "custody.sums_failed" in ingest.stderr
    assert {clip["state"] for clip in dock.clips()} == {"uploaded"}
    shutil.rmtree(sums)

    for expected_written in (1, 0):
        daemon = dock.start_daemon()
        try:
            wait_until(lambda: any(e["event"] == "daemon.recovered" for e in dock.log_events()),
                       timeout=60, message="the daemon recovered")
        finally:
            assert dock.stop_daemon(daemon) == 0
        [recovered] = [e for e in dock.log_events() if e["event"] == "daemon.recovered"]
        assert recovered["sums_written"] == expected_written
        (dock.root / "daemon.log").unlink()

    listed = {line.split("  ", 1)[1] for line in sums.read_text().splitlines()
              if not line.startswith("#")}  # the header says how times were read
    assert listed == {Path(clip["remote_key"]).name for clip in dock.clips()}
    checked = subprocess.run(["sha256sum", "--strict", "-c", sums.name], cwd=sums.parent,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dockings_left_unanchored_by_an_upgrade_are_anchored_within_a_time_budget(
    dock: Dock,
) -> None:
    """After the 0002 upgrade every old docking counts as unanchored: the catch-up writes
    their lists, but never past its time budget (the daemon's watchdog waits on it)."""
    for serial in ("X1", "X2"):
        card = dock.root / serial
        make_camera(card, [1000], sidecars=False)
        dock.cli("ingest", str(card), "--camera-serial", serial, "--wait")
    with sqlite3.connect(dock.state_dir / "ledger.sqlite3") as connection:
        # as the upgrades leave them: 0002 unanchored, 0003 flagged for a look
        connection.execute("UPDATE dockings SET sums_written_at = NULL, sums_due = 1")
    for sums in dock.nas.rglob("SHA256SUMS*"):
        sums.unlink()
    config = load_config(dock.config_path)
    ledger = Ledger.open(config, "test")
    backend = open_backend(config)
    try:
        assert len(ledger.dockings_to_anchor()) == 2
        assert anchor_dockings(ledger, backend, budget_seconds=0) == 0
        assert anchor_dockings(ledger, backend) == 2
        assert ledger.dockings_to_anchor() == []
    finally:
        ledger.close()
    assert len(list(dock.nas.rglob("SHA256SUMS*"))) == 2
