"""The whole pipeline against a real SeaweedFS S3 server on loopback."""

from __future__ import annotations

import hashlib
import json
import signal

from tests.dock import Dock, make_camera, wait_until
from tests.seaweedfs import SeaweedServer

MIB = 1024 * 1024


def _use_s3(
    target: Dock, server: SeaweedServer, bucket: str, **sections: dict[str, object],
) -> None:
    target.extra_environment.update(server.environment())
    # Not the product's values, and why: plain HTTP to the local SeaweedFS (no TLS on
    # a loopback test server); 5 MB multipart parts and threshold (S3's smallest; the
    # product's are 16 and 64 MB) so small clips go multipart; retries after
    # 0.2 s up to 2 s (product 2 s up to 600 s) so an outage heals within a test.
    storage = {
        "backend": "s3", "endpoint_url": server.endpoint_url, "bucket": bucket,
        "allow_plaintext": True,
        "addressing_style": "path", "prefix": "bwc/", "multipart_threshold_mb": 5,
        "multipart_part_mb": 5, "retry_initial_seconds": 0.2, "retry_max_seconds": 2.0,
    }
    storage.update(sections.pop("storage", {}))
    target.write_config(storage=storage, **sections)


def _object_sha256(server: SeaweedServer, bucket: str, key: str) -> str:
    body = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


def test_ingest_to_s3_stores_every_clip_with_its_hash_and_manifest(
    dock: Dock, seaweedfs: SeaweedServer, s3_bucket: str
) -> None:
    """Every object's bytes hash to the ledger's SHA-256, with a manifest beside it. The
    clips sent by parts went with the digests their read off the camera took."""
    _use_s3(dock, seaweedfs, s3_bucket)
    camera = dock.root / "card"
    expected = make_camera(camera, [0, 1000, 6 * MIB + 5, 12 * MIB])
    ingested = dock.cli("--log-format", "json", "ingest", str(camera), "--camera-serial",
                        "S3CAM", "--wait")
    verified = [json.loads(line) for line in ingested.stderr.splitlines()
                if '"s3.put.verified"' in line]
    by_parts = {e["size"]: e["hashed_here"] for e in verified if e["size"] >= 5 * MIB}
    assert by_parts == {6 * MIB + 5: False, 12 * MIB: False}

    clips = dock.clips()
    assert {c["state"] for c in clips} == {"uploaded"}
    for clip in clips:
        key = "bwc/" + clip["remote_key"]
        assert _object_sha256(seaweedfs, s3_bucket, key) == clip["sha256"]
        head = seaweedfs.client().head_object(Bucket=s3_bucket, Key=key)
        assert head["Metadata"]["sha256"] == clip["sha256"]
        manifest = json.loads(seaweedfs.client().get_object(
            Bucket=s3_bucket, Key="bwc/" + dock.manifest_key(clip))["Body"].read())
        assert manifest["sha256"] == clip["sha256"]
        for sidecar in clip["sidecars"]:
            assert _object_sha256(seaweedfs, s3_bucket, "bwc/" + sidecar["remote_key"]) == (
                sidecar["sha256"])
    keys = seaweedfs.object_keys(s3_bucket, "bwc/")
    objects = [k for k in keys if not k.endswith(".json") and "/SHA256SUMS." not in k]
    assert len(objects) == len(expected)


def test_kill9_mid_multipart_resumes_the_same_upload(
    dock: Dock, seaweedfs: SeaweedServer, s3_bucket: str
) -> None:
    """SIGKILL during a multipart upload; the restarted daemon resumes the same upload id."""
    _use_s3(dock, seaweedfs, s3_bucket, storage={"multipart_concurrency": 1},
            dock={"upload_workers": 1})
    with dock.config_path.open("a") as config:  # slow enough to be killed mid-upload
        config.write("[[storage.bandwidth]]\nstart = 00:00:00\nend = 00:00:00\n"
                     "limit_mb_per_s = 8\n")
    camera = dock.root / "camera"
    make_camera(camera, [60 * MIB], sidecars=False)
    camera.rename(dock.watch_dir / "S3KILL")
    daemon = dock.start_daemon()
    try:
        wait_until(lambda: any(e.get("event") == "clip.uploading" for e in dock.log_events())
                   and _parts_done(dock) >= 2, timeout=120, message="two parts uploaded")
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    begun = [e for e in dock.log_events() if e.get("event") == "s3.multipart.begin"]
    assert len(begun) == 1
    daemon = dock.start_daemon()
    try:
        wait_until(lambda: dock.clips()[0]["state"] == "uploaded", timeout=180,
                   message="upload finished after the restart")
    finally:
        assert dock.stop_daemon(daemon) == 0
    events = dock.log_events()
    resumed = [e for e in events if e.get("event") == "s3.multipart.resume"]
    assert resumed and resumed[0]["upload_id"] == begun[0]["upload_id"]
    assert len([e for e in events if e.get("event") == "s3.multipart.begin"]) == 1
    [clip] = dock.clips()
    assert _object_sha256(seaweedfs, s3_bucket, "bwc/" + clip["remote_key"]) == clip["sha256"]


def _parts_done(dock: Dock) -> int:
    import sqlite3

    try:
        with sqlite3.connect(dock.ledger_path, timeout=30) as connection:
            count: int = connection.execute("SELECT count(*) FROM multipart_parts").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # no ledger or no schema yet
    return count


def test_store_offline_then_back_loses_and_duplicates_nothing(
    dock: Dock, seaweedfs_private: SeaweedServer
) -> None:
    """With the store down, clips wait staged (attempts counted); when it returns, each
    clip is stored exactly once."""
    bucket = seaweedfs_private.create_bucket()
    _use_s3(dock, seaweedfs_private, bucket)
    seaweedfs_private.stop()
    camera = dock.root / "camera"
    make_camera(camera, [1000, 7 * MIB], sidecars=False)
    daemon = dock.start_daemon()
    try:
        camera.rename(dock.watch_dir / "OFFLINE1")
        wait_until(lambda: len(dock.clips()) == 2 and all(
            c["state"] == "staged" and c["upload_attempts"] >= 1 for c in dock.clips()),
            timeout=120, message="clips staged with failed attempts while offline")
        seaweedfs_private.start()
        wait_until(lambda: all(c["state"] == "uploaded" for c in dock.clips()), timeout=180,
                   message="uploaded once the store is back")
    finally:
        assert dock.stop_daemon(daemon) == 0
    keys = [k for k in seaweedfs_private.object_keys(bucket, "bwc/")
            if not k.endswith(".json") and "/SHA256SUMS." not in k]
    assert sorted(keys) == sorted("bwc/" + c["remote_key"] for c in dock.clips())
    for clip in dock.clips():
        assert _object_sha256(seaweedfs_private, bucket, "bwc/" + clip["remote_key"]) == (
            clip["sha256"])


def test_wrong_credentials_are_reported_once_and_recovered(
    dock: Dock, seaweedfs: SeaweedServer, s3_bucket: str
) -> None:
    """Refused credentials: one loud error, clips stay staged; fixed credentials upload."""
    # a refused store is tried again after 1 s, not the product's 15 minutes: the test
    # fixes the credentials and watches the next try succeed
    _use_s3(dock, seaweedfs, s3_bucket,
            storage={"permanent_error_backoff_seconds": 1.0})
    dock.extra_environment["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    camera = dock.root / "camera"
    make_camera(camera, [1000, 2000, 3000], sidecars=False)
    daemon = dock.start_daemon()
    try:
        camera.rename(dock.watch_dir / "CREDS1")
        wait_until(lambda: len(dock.clips()) == 3 and all(
            c["upload_attempts"] >= 2 for c in dock.clips()), timeout=120,
            message="several refused attempts")
    finally:
        assert dock.stop_daemon(daemon) == 0
    refused = [e for e in dock.log_events() if e.get("event") == "storage.refused"]
    assert len(refused) == 1
    assert refused[0]["level"] == "error"
    assert "wrong-secret" not in (dock.root / "daemon.log").read_text()
    assert {c["state"] for c in dock.clips()} == {"staged"}
    dock.extra_environment.update(seaweedfs.environment())
    daemon = dock.start_daemon()
    try:
        wait_until(lambda: all(c["state"] == "uploaded" for c in dock.clips()), timeout=120,
                   message="uploaded with the right credentials")
    finally:
        assert dock.stop_daemon(daemon) == 0
