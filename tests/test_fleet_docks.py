"""Many docks, one evidence store: two real daemons share a central store.

Real parts: two ``bwc-dock run`` daemons (subprocesses) with their own dock ids, state
folders and SQLite ledgers, watch-folder cameras moved in and out with renames, and one
central store shared by both: a folder, or a real SeaweedFS on loopback. The daemons run
for the whole module (one pair per store); each test uses cameras of its own serials.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.dock import Dock, central_objects, make_camera, wait_until
from tests.seaweedfs import SeaweedServer

OFFLOAD_SECONDS = 120
SIZES = [3000, 5000, 7000]


class CentralStore(Protocol):
    """The shared store as the test sees it, around the product's back."""

    def configure(self, dock: Dock, dock_id: str) -> None: ...

    def objects(self, serial: str) -> dict[str, str]:
        """{key: sha256 of its bytes} of a camera's clip and sidecar objects."""
        ...

    def read(self, key: str) -> bytes | None: ...

    def write(self, key: str, data: bytes) -> None:
        """Put other bytes under a key, as someone with write access could."""
        ...

    def delete(self, key: str) -> None:
        """Remove a key, as a person reviewing a conflict may decide to."""
        ...


@dataclass
class FolderStore:
    root: Path

    def configure(self, dock: Dock, dock_id: str) -> None:
        self.root.mkdir(exist_ok=True)
        (self.root / ".bwc-dock-store").touch()  # the share's marker file
        dock.write_config(dock={"id": dock_id}, storage={"path": str(self.root)})

    def objects(self, serial: str) -> dict[str, str]:
        return {
            key: sha256
            for key, sha256 in central_objects(self.root).items()
            if key.startswith(f"{serial}/")
        }

    def read(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def write(self, key: str, data: bytes) -> None:
        (self.root / key).write_bytes(data)

    def delete(self, key: str) -> None:
        (self.root / key).unlink()


@dataclass
class S3Store:
    server: SeaweedServer
    bucket: str
    prefix: str = "bwc/"

    def configure(self, dock: Dock, dock_id: str) -> None:
        dock.extra_environment.update(self.server.environment())
        dock.write_config(
            dock={"id": dock_id},
            storage={
                "backend": "s3",
                "endpoint_url": self.server.endpoint_url,
                "allow_plaintext": True,
                "bucket": self.bucket,
                "addressing_style": "path",
                "prefix": self.prefix,
                "retry_initial_seconds": 0.2,
                "retry_max_seconds": 2.0,
            },
        )

    def objects(self, serial: str) -> dict[str, str]:
        found = {}
        for full_key in self.server.object_keys(self.bucket, f"{self.prefix}{serial}/"):
            name = full_key.rsplit("/", 1)[-1]
            if name.endswith(".json") or name.startswith("SHA256SUMS"):
                continue
            data = self.read(full_key.removeprefix(self.prefix))
            assert data is not None
            found[full_key.removeprefix(self.prefix)] = hashlib.sha256(data).hexdigest()
        return found

    def read(self, key: str) -> bytes | None:
        client = self.server.client()
        try:
            body: bytes = client.get_object(Bucket=self.bucket, Key=self.prefix + key)[
                "Body"
            ].read()
        except client.exceptions.NoSuchKey:
            return None
        return body

    def write(self, key: str, data: bytes) -> None:
        self.server.client().put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def delete(self, key: str) -> None:
        self.server.client().delete_object(Bucket=self.bucket, Key=self.prefix + key)


@dataclass
class Fleet:
    a: Dock
    b: Dock
    store: CentralStore
    cameras: Path  # where camera folders wait while undocked

    def new_camera(self, serial: str, seed: int) -> tuple[Path, dict[str, str]]:
        """A camera folder with a few clips and sidecars; {path on camera: sha256}."""
        folder = self.cameras / serial
        return folder, make_camera(folder, SIZES, seed=seed)

    def dock_at(self, dock: Dock, camera: Path) -> Path:
        """Dock the camera: a rename into the dock's watch folder."""
        docked = dock.watch_dir / camera.name
        camera.rename(docked)
        return docked

    def undock(self, docked: Path) -> Path:
        home = self.cameras / docked.name
        docked.rename(home)
        return home


@pytest.fixture(scope="module", params=["folder", "s3"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """Dock A and dock B, each its own daemon, ledger and dock id, sharing one store."""
    root = tmp_path_factory.mktemp(f"fleet-{request.param}")
    store: CentralStore
    if request.param == "s3":
        server: SeaweedServer = request.getfixturevalue("seaweedfs")
        store = S3Store(server, server.create_bucket())
    else:
        store = FolderStore(root / "central")
    a, b = Dock(root / "a"), Dock(root / "b")
    store.configure(a, "dock-a")
    store.configure(b, "dock-b")
    (root / "cameras").mkdir()
    daemons = [(dock, dock.start_daemon()) for dock in (a, b)]
    try:
        yield Fleet(a, b, store, root / "cameras")
    finally:
        exits = [dock.stop_daemon(process) for dock, process in daemons]
    assert exits == [0, 0]


def offloaded(dock: Dock, serial: str, count: int) -> list[dict[str, Any]]:
    """Wait until the dock's ledger has ``count`` clips of the camera, none still pending."""
    settled = {"uploaded", "quarantined"}

    def done() -> bool:
        clips = dock.clips("--camera", serial)
        return len(clips) == count and all(c["state"] in settled for c in clips)

    wait_until(done, OFFLOAD_SECONDS, f"{serial}: {count} clips offloaded at {dock.root.name}")
    return dock.clips("--camera", serial)


def clip_hashes(expected: dict[str, str]) -> dict[str, str]:
    return {path: sha256 for path, sha256 in expected.items() if path.endswith(".MP4")}


def manifest(fleet: Fleet, dock: Dock, clip: dict[str, Any]) -> dict[str, Any]:
    content = fleet.store.read(dock.manifest_key(clip))
    assert content is not None, f"no manifest of clip {clip['id']} from {dock.root.name}"
    document: dict[str, Any] = json.loads(content)
    return document


def test_a_camera_cleared_at_one_dock_and_docked_at_another_is_stored_whole(
    fleet: Fleet,
) -> None:
    """Float between stations: cleared at A, recording restarts its file numbers, docked at
    B: nothing quarantined, every clip once in storage, each with its dock's manifest."""
    camera, first = fleet.new_camera("FLOAT01", seed=11)
    docked = fleet.dock_at(fleet.a, camera)
    at_a = offloaded(fleet.a, "FLOAT01", len(clip_hashes(first)))
    camera = fleet.undock(docked)
    shutil.rmtree(camera)  # cleared at A: the next recordings reuse the same file names
    camera, second = fleet.new_camera("FLOAT01", seed=12)
    assert set(second) == set(first) and set(second.values()).isdisjoint(first.values())

    fleet.dock_at(fleet.b, camera)
    at_b = offloaded(fleet.b, "FLOAT01", len(clip_hashes(second)))

    assert {c["state"] for c in at_a + at_b} == {"uploaded"}
    stored = fleet.store.objects("FLOAT01")
    assert sorted(stored.values()) == sorted([*first.values(), *second.values()])
    for dock, clips in ((fleet.a, at_a), (fleet.b, at_b)):
        for clip in clips:
            assert stored[clip["remote_key"]] == clip["sha256"]
            record = manifest(fleet, dock, clip)
            assert record["dock"] == dock.settings["dock"]["id"]
            assert record["sha256"] == clip["sha256"]
    if isinstance(fleet.store, FolderStore):
        _sha256sum_checks(fleet.store.root / "FLOAT01")


def _sha256sum_checks(folder: Path) -> None:
    """Every per-docking SHA256SUMS list under ``folder`` passes `sha256sum --strict -c`."""
    lists = sorted(folder.rglob("SHA256SUMS.*"))
    assert {path.name.split(".")[1] for path in lists} == {"dock-a", "dock-b"}
    for path in lists:
        checked = subprocess.run(["sha256sum", "--strict", "-c", path.name], cwd=path.parent,
                                 capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_uncleared_camera_docked_again_elsewhere_uploads_nothing_twice(
    fleet: Fleet,
) -> None:
    """Not cleared at A, docked at B: zero new clip objects; B leaves its own manifests
    beside them and A's stay as they were."""
    camera, expected = fleet.new_camera("AGAIN01", seed=21)
    docked = fleet.dock_at(fleet.a, camera)
    at_a = offloaded(fleet.a, "AGAIN01", len(clip_hashes(expected)))
    before = fleet.store.objects("AGAIN01")
    manifests_of_a = {clip["id"]: fleet.store.read(fleet.a.manifest_key(clip)) for clip in at_a}
    camera = fleet.undock(docked)

    fleet.dock_at(fleet.b, camera)
    at_b = offloaded(fleet.b, "AGAIN01", len(clip_hashes(expected)))

    assert {c["state"] for c in at_a + at_b} == {"uploaded"}
    assert fleet.store.objects("AGAIN01") == before
    assert sorted(c["remote_key"] for c in at_b) == sorted(c["remote_key"] for c in at_a)
    for clip in at_b:
        record = manifest(fleet, fleet.b, clip)
        assert record["dock"] == "dock-b" and record["sha256"] == clip["sha256"]
    assert {c["id"]: fleet.store.read(fleet.a.manifest_key(c)) for c in at_a} == manifests_of_a


def test_the_same_camera_at_both_docks_at_once_is_stored_once(fleet: Fleet) -> None:
    """The same card offloaded at A and B at the same time: both succeed, one object per
    clip and sidecar, one manifest from each dock."""
    camera, expected = fleet.new_camera("TWICE01", seed=31)
    twin = fleet.cameras / "twin" / "TWICE01"
    shutil.copytree(camera, twin)  # copy2: the same bytes, names and times

    fleet.dock_at(fleet.a, camera)
    fleet.dock_at(fleet.b, twin)
    at_a = offloaded(fleet.a, "TWICE01", len(clip_hashes(expected)))
    at_b = offloaded(fleet.b, "TWICE01", len(clip_hashes(expected)))

    assert {c["state"] for c in at_a + at_b} == {"uploaded"}
    stored = fleet.store.objects("TWICE01")
    assert sorted(stored.values()) == sorted(expected.values())
    for dock, clips in ((fleet.a, at_a), (fleet.b, at_b)):
        for clip in clips:
            assert manifest(fleet, dock, clip)["sha256"] == clip["sha256"]


def test_a_flipped_byte_under_a_content_key_is_a_conflict_kept_by_resync(fleet: Fleet) -> None:
    """A central object altered after A stored it: B, offloading the same card, reports an
    integrity conflict and overwrites nothing; resync at B keeps the altered bytes under
    _conflicts/<key>.<their sha256> and leaves them; once a person removed them, resync
    puts the evidence back."""
    camera, expected = fleet.new_camera("FLIP01", seed=41)
    docked = fleet.dock_at(fleet.a, camera)
    at_a = offloaded(fleet.a, "FLIP01", len(clip_hashes(expected)))
    victim = at_a[0]
    original = fleet.store.read(victim["remote_key"])
    assert original is not None
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    fleet.store.write(victim["remote_key"], bytes(flipped))
    flipped_sha256 = hashlib.sha256(flipped).hexdigest()
    camera = fleet.undock(docked)

    fleet.dock_at(fleet.b, camera)
    at_b = offloaded(fleet.b, "FLIP01", len(clip_hashes(expected)))

    [conflicted] = [c for c in at_b if c["state"] == "quarantined"]
    assert conflicted["sha256"] == victim["sha256"]
    assert [c["state"] for c in at_b].count("uploaded") == len(at_b) - 1
    error = conflicted["last_error"]
    assert "tampering or corruption" in error
    assert victim["remote_key"] in error
    assert flipped_sha256 in error and victim["sha256"] in error
    assert fleet.store.read(victim["remote_key"]) == bytes(flipped)  # never overwritten

    kept_only = fleet.b.cli("resync", "--camera", "FLIP01", "--json", check=False)
    assert kept_only.returncode == 1, kept_only.stdout
    assert fleet.store.read(victim["remote_key"]) == bytes(flipped)  # never removed
    fleet.store.delete(victim["remote_key"])  # a person's decision, after review
    report = json.loads(fleet.b.cli("resync", "--camera", "FLIP01", "--json").stdout)
    assert report["ok"], report
    wait_until(
        lambda: fleet.store.read(victim["remote_key"]) == original,
        OFFLOAD_SECONDS,
        "B's daemon uploads the evidence again",
    )
    kept = fleet.store.read(f"_conflicts/{victim['remote_key']}.{flipped_sha256}")
    assert kept == bytes(flipped)
    wait_until(
        lambda: {c["state"] for c in fleet.b.clips("--camera", "FLIP01")} == {"uploaded"},
        OFFLOAD_SECONDS,
        "the clip released at B",
    )
    assert fleet.a.cli("verify", "--remote", "--camera", "FLIP01", check=False).returncode == 0


# -- custody records: written once, never over another ------------------------------------


def planted_record(dock: Dock, sha256: str, **fields: Any) -> tuple[Path, dict[str, Any]]:
    """A card with one clip, and a custody record put in advance under the key of its
    offload (clip 1 of this dock, content-addressed key): (the record's path, its content)."""
    camera = dock.root / "card"
    (camera / "DCIM").mkdir(parents=True)
    (camera / "DCIM" / "A.MP4").write_bytes(b"evidence")
    os.utime(camera / "DCIM" / "A.MP4", (1_700_000_000, 1_700_000_000))  # 2023-11-14 UTC
    key = f"R1/2023/11/14/A.{hashlib.sha256(b'evidence').hexdigest()[:16]}.MP4"
    record = {"schema": "bwc-dock/manifest/1", "dock": "dock-test", "clip_id": 1,
              "sha256": sha256, "times": {"uploaded_at": "2026-11-30T09:00:00+00:00"},
              **fields}
    path = dock.nas / f"{key}.dock-test.clip-1.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return path, record


def test_a_record_of_the_same_offload_left_by_a_cut_short_attempt_is_kept(dock: Dock) -> None:
    """The record of this very offload (same dock, clip id and hash), written before a crash
    kept the ledger from knowing, counts: the clip is uploaded, the record not rewritten."""
    path, record = planted_record(dock, hashlib.sha256(b"evidence").hexdigest())

    dock.cli("ingest", str(dock.root / "card"), "--camera-serial", "R1", "--wait")

    [clip] = dock.clips()
    assert clip["state"] == "uploaded"
    assert json.loads(path.read_text()) == record


def test_another_record_under_an_offloads_manifest_key_is_a_loud_conflict(dock: Dock) -> None:
    """A record naming other content under this offload's manifest key is never overwritten:
    the clip is quarantined with a conflict naming the key; ingest exits 1."""
    path, record = planted_record(dock, "0" * 64)

    result = dock.cli("ingest", str(dock.root / "card"), "--camera-serial", "R1", "--wait",
                      check=False)

    assert result.returncode == 1
    [clip] = dock.clips()
    assert clip["state"] == "quarantined"
    assert str(path.relative_to(dock.nas)) in clip["last_error"]
    assert "tampering or corruption" in clip["last_error"]
    assert json.loads(path.read_text()) == record
