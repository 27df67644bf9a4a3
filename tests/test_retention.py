"""Retention classes and legal holds against the real SeaweedFS of the suite (Object Lock)."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from bwc_dock.alarms import AlarmBoard, AlarmKind, Observation
from bwc_dock.config import AlarmsConfig, parse_config
from bwc_dock.errors import ConfigError
from bwc_dock.retention import class_for_call_types, retain_until
from tests.dock import Dock, make_camera, wait_until

if TYPE_CHECKING:
    from tests.seaweedfs import SeaweedServer

pytest_plugins = ("tests.seaweedfs",)

RECORDED = datetime(2026, 11, 24, 8, 15, 0, tzinfo=UTC)
CLASSES: list[dict[str, Any]] = [
    {"name": "standard", "days": 30, "call_types": ["TRAFFIC STOP"], "default": True},
    {"name": "arrest", "days": 730, "call_types": ["ARREST"]},
    {"name": "homicide", "days": "indefinite", "call_types": ["HOMICIDE"]},
]


def _use_locked_s3(dock: Dock, server: SeaweedServer, bucket: str) -> None:
    dock.extra_environment.update(server.environment())
    dock.write_config(
        storage={"backend": "s3", "endpoint_url": server.endpoint_url, "bucket": bucket,
                 "allow_plaintext": True,  # the test server listens on loopback only
                 "addressing_style": "path", "prefix": "bwc/",
                 "object_lock_mode": "GOVERNANCE"},
        retention=CLASSES,
    )


def _offload_one_clip(dock: Dock, server: SeaweedServer, bucket: str) -> dict[str, Any]:
    """One clip (with a sidecar) recorded at RECORDED, ingested to an Object Lock bucket."""
    _use_locked_s3(dock, server, bucket)
    card = dock.root / "card"
    make_camera(card, [2000])
    for path in card.rglob("*"):
        if path.is_file():
            os.utime(path, (RECORDED.timestamp(), RECORDED.timestamp()))
    dock.cli("ingest", str(card), "--camera-serial", "LOCKCAM", "--wait")
    [clip] = dock.clips()
    assert clip["recorded_at"] == "2026-11-24T08:15:00+00:00"
    return clip


def _object_keys(dock: Dock, clip: dict[str, Any]) -> list[str]:
    sidecars = [sidecar["remote_key"] for sidecar in clip["sidecars"]]
    return ["bwc/" + key for key in [clip["remote_key"], *sidecars, dock.manifest_key(clip)]]


def _retained_until(server: SeaweedServer, bucket: str, key: str) -> list[datetime]:
    """RetainUntilDate of every version of ``key``, in UTC."""
    client = server.client()
    versions = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    return [
        client.get_object_retention(Bucket=bucket, Key=key, VersionId=version["VersionId"])[
            "Retention"]["RetainUntilDate"].astimezone(UTC)
        for version in versions if version["Key"] == key
    ]


def _log_events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_retention_counts_from_the_recording_and_only_grows(
    dock: Dock, seaweedfs: SeaweedServer
) -> None:
    """Uploaded under the default class (30 days from the recording), classified `arrest`
    (730 days from the recording, not from the upload); a shorter class is refused."""
    bucket = seaweedfs.create_bucket(object_lock=True)
    clip = _offload_one_clip(dock, seaweedfs, bucket)
    keys = _object_keys(dock, clip)
    for key in keys:
        assert _retained_until(seaweedfs, bucket, key) == [
            datetime(2026, 12, 24, 8, 15, 0, tzinfo=UTC)]

    # a later version of the sidecar, retained longer by someone else, is never shortened
    seaweedfs.client().put_object(
        Bucket=bucket, Key=keys[1], Body=b"another version", ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime(2030, 1, 1, tzinfo=UTC))

    classified = dock.cli("--log-format", "json", "clips", "classify", clip["remote_key"],
                          "arrest")
    for key in (keys[0], *keys[2:]):
        assert _retained_until(seaweedfs, bucket, key) == [
            datetime(2028, 11, 23, 8, 15, 0, tzinfo=UTC)]
    assert _retained_until(seaweedfs, bucket, keys[1]) == [
        datetime(2030, 1, 1, tzinfo=UTC), datetime(2028, 11, 23, 8, 15, 0, tzinfo=UTC)]
    [kept] = [e for e in _log_events(classified.stderr)
              if e["event"] == "retention.shorten_refused"]
    assert (kept["key"], kept["retain_until"]) == (keys[1], "2030-01-01T00:00:00+00:00")

    refused = dock.cli("--log-format", "json", "clips", "classify", clip["remote_key"],
                       "standard", check=False)
    assert refused.returncode == 1
    assert "only grows" in refused.stderr
    events = _log_events(refused.stderr)
    assert [e["event"] for e in events if e["event"] == "retention.shorten_refused"] == [
        "retention.shorten_refused"]
    for key in (keys[0], *keys[2:]):
        assert _retained_until(seaweedfs, bucket, key) == [
            datetime(2028, 11, 23, 8, 15, 0, tzinfo=UTC)]
    audit = json.loads(dock.cli("audit", "export", "--format", "json").stdout)
    text = json.dumps(audit)
    assert "clip.classified" in text and "retention.shorten_refused" in text


def _config(**sections: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"storage": {"backend": "s3", "bucket": "evidence",
                                            "object_lock_mode": "COMPLIANCE"}}
    document.update(sections)
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_config(), "retention: storage.object_lock_mode needs a [[retention]] class"),
        (_config(retention=[{"name": "a", "days": 1}, {"name": "b", "days": 2}]),
         "retention: mark one class `default = true`"),
        (_config(retention=[{"name": "a", "days": 1, "default": True},
                            {"name": "b", "days": 2, "default": True}]),
         "retention: only one class may be default"),
        (_config(retention=[{"name": "a", "days": 0}]), "retention.0.days: must be a number"),
        (_config(retention=[{"name": "a", "days": "forever"}]), "retention.0.days"),
    ],
)
def test_retention_classes_are_validated_naming_the_key(
    document: dict[str, Any], message: str
) -> None:
    """A misconfigured [[retention]] is a configuration error that names its key."""
    with pytest.raises(ConfigError) as raised:
        parse_config(document)
    assert message in str(raised.value)


def test_the_single_class_is_the_default_and_indefinite_is_a_century() -> None:
    """One class needs no `default = true`; "indefinite" keeps a clip 36,525 days."""
    config = parse_config(_config(retention=[{"name": "homicide", "days": "indefinite"}]))
    default = config.default_retention
    assert default is not None and default.name == "homicide"
    # 36,525 days: 2100 is no leap year, so a day past the hundredth anniversary
    assert retain_until(RECORDED, default) == datetime(2126, 11, 25, 8, 15, 0, tzinfo=UTC)


def _legal_holds(server: SeaweedServer, bucket: str, key: str) -> list[str]:
    """LegalHold status of every version of ``key`` ("none": never had one)."""
    client = server.client()
    versions = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    return [_legal_hold(client, bucket, key, version["VersionId"])
            for version in versions if version["Key"] == key]


def _legal_hold(client: Any, bucket: str, key: str, version_id: str) -> str:
    try:
        answer = client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=version_id)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "NoSuchObjectLegalHold"
        return "none"
    return str(answer["LegalHold"]["Status"])


def test_hold_puts_every_version_under_legal_hold_until_its_case_ends(
    dock: Dock, seaweedfs: SeaweedServer
) -> None:
    """`hold add` holds every version of the clip, sidecar and custody record; a versioned
    delete (even bypassing governance) is refused; removal keeps what another case holds."""
    bucket = seaweedfs.create_bucket(object_lock=True)
    clip = _offload_one_clip(dock, seaweedfs, bucket)
    keys = _object_keys(dock, clip)
    client = seaweedfs.client()
    client.put_object(Bucket=bucket, Key=keys[0], Body=b"a second version, not by bwc-dock")

    missing = dock.cli("hold", "add", "CASE-2026-001", "--key", clip["remote_key"],
                       "--key", "LOCKCAM/no/such.MP4", check=False)
    assert missing.returncode == 2
    assert "nothing stored under LOCKCAM/no/such.MP4" in missing.stderr
    assert _legal_holds(seaweedfs, bucket, keys[0]) == ["none", "none"]  # all or nothing
    dock.cli("hold", "add", "CASE-2026-001", "--key", clip["remote_key"])
    assert _legal_holds(seaweedfs, bucket, keys[0]) == ["ON", "ON"]
    for key in keys[1:]:
        assert _legal_holds(seaweedfs, bucket, key) == ["ON"]
    first = client.list_object_versions(Bucket=bucket, Prefix=keys[0])["Versions"][0]
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=keys[0], VersionId=first["VersionId"],
                             BypassGovernanceRetention=True)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"

    dock.cli("hold", "add", "CASE-2026-002", "--key", clip["remote_key"])
    client.put_object(Bucket=bucket, Key="bwc/_holds/CASE-2026-001/junk.json", Body=b"{nope")
    dock.cli("hold", "remove", "CASE-2026-001", "--reason", "charges dropped")
    assert _legal_holds(seaweedfs, bucket, keys[0]) == ["ON", "ON"]  # case 002 holds it
    listed = json.loads(dock.cli("hold", "list", "--json").stdout)
    assert [(h["case"], h["state"]) for h in listed["holds"]] == [
        ("CASE-2026-001", "removed"), ("CASE-2026-002", "active")]
    assert listed["holds"][1]["keys"] == sorted(key.removeprefix("bwc/") for key in keys)
    assert listed["holds"][0]["records"][-1]["reason"] == "charges dropped"
    assert listed["invalid"] == [{"key": "_holds/CASE-2026-001/junk.json",
                                  "reason": "malformed: not JSON (JSONDecodeError)"}]
    # a hold record is retained for the default class's 30 days from its making
    [record] = seaweedfs.object_keys(bucket, "bwc/_holds/CASE-2026-002/")
    [until] = _retained_until(seaweedfs, bucket, record)
    made = datetime.fromisoformat(listed["holds"][1]["records"][0]["at"])
    assert timedelta(days=30) <= until - made < timedelta(days=30, seconds=1)

    dock.cli("hold", "remove", "CASE-2026-002", "--reason", "case closed")
    for key in keys:
        assert set(_legal_holds(seaweedfs, bucket, key)) == {"OFF"}
    assert _audit_events(dock, "hold.") == [
        ("hold.added", "CASE-2026-001"), ("hold.added", "CASE-2026-002"),
        ("hold.removed", "CASE-2026-001"), ("hold.removed", "CASE-2026-002")]
    assert dock.cli("audit", "verify").returncode == 0


def _audit_events(dock: Dock, prefix: str) -> list[tuple[str, str]]:
    """(event, case) of the ledger's audit rows whose event starts with ``prefix``."""
    with sqlite3.connect(dock.ledger_path) as ledger:
        rows = ledger.execute("SELECT event, details FROM audit_log WHERE event LIKE ? "
                              "ORDER BY id", (prefix + "%",)).fetchall()
    return [(event, json.loads(details)["case"]) for event, details in rows]


def test_hold_classify_and_probe_refuse_a_folder_backend(dock: Dock) -> None:
    """A NAS folder cannot enforce retention: hold, classify and probe exit 2 saying what is
    needed, and config check warns about the retention classes configured."""
    dock.write_config(retention=CLASSES)
    for command in (("hold", "add", "CASE-1", "--key", "cam/clip.mp4"), ("hold", "list"),
                    ("clips", "classify", "cam/clip.mp4", "arrest"), ("storage", "probe")):
        result = dock.cli(*command, check=False)
        assert result.returncode == 2
        assert "a NAS folder cannot enforce retention" in result.stderr
        assert "Object Lock" in result.stderr
    checked = dock.cli("config", "check")
    assert "warning: retention: 3 class(es) configured, but a NAS folder" in checked.stderr


def test_hold_by_event_is_refused_with_what_to_use_instead(dock: Dock) -> None:
    """`hold add --event` exits 2 naming --key (CAD matching is not in this version)."""
    dock.write_config()
    result = dock.cli("hold", "add", "CASE-1", "--event", "E1", check=False)
    assert result.returncode == 2
    assert "--key KEY" in result.stderr


def test_probe_finds_this_seaweedfs_enforcing_object_lock(
    dock: Dock, seaweedfs: SeaweedServer
) -> None:
    """On an Object Lock bucket of this SeaweedFS every attempt on the canary is refused."""
    bucket = seaweedfs.create_bucket(object_lock=True)
    _use_locked_s3(dock, seaweedfs, bucket)
    report = json.loads(dock.cli("storage", "probe", "--json").stdout)
    assert report["enforced"] is True
    assert [(c["name"], c["passed"]) for c in report["checks"]] == [
        ("lock_recorded", True), ("delete_refused", True),
        ("delete_with_bypass_refused", True), ("overwrite_kept_version", True)]
    canary = "bwc/" + report["canary"]
    versions = seaweedfs.client().list_object_versions(Bucket=bucket, Prefix=canary)["Versions"]
    assert len(versions) == 2  # the canary and the overwrite attempt beside it
    [original] = [version for version in versions if not version["IsLatest"]]
    hold = seaweedfs.client().get_object_legal_hold(
        Bucket=bucket, Key=canary, VersionId=original["VersionId"])
    assert hold["LegalHold"]["Status"] == "OFF"  # lifted: only its one-day retention stays


def test_a_store_that_does_not_lock_fails_the_probe_and_raises_the_alarm(
    dock: Dock, seaweedfs: SeaweedServer
) -> None:
    """A bucket without Object Lock: `storage probe` exits 2 naming what failed, and the
    daemon, configured for Object Lock, raises storage_lock_unenforced at start."""
    bucket = seaweedfs.create_bucket(object_lock=False)
    _use_locked_s3(dock, seaweedfs, bucket)
    result = dock.cli("storage", "probe", check=False)
    assert result.returncode == 2
    assert "does not enforce Object Lock (canary_written)" in result.stderr

    daemon = dock.start_daemon()
    try:
        wait_until(lambda: any(e.get("alarm") == "storage_lock_unenforced"
                               for e in dock.log_events()), 60, "lock alarm raised")
    finally:
        assert dock.stop_daemon(daemon) == 0
    [raised] = [e for e in dock.log_events() if e.get("alarm") == "storage_lock_unenforced"]
    assert raised["event"] == "alarm.raised" and raised["severity"] == "error"
    assert "canary_written" in raised["detail"]


def test_the_lock_alarm_follows_the_probe_verdict() -> None:
    """Observation.lock_unenforced raises storage_lock_unenforced, an error, with the
    probe's words; an empty verdict raises nothing."""
    board = AlarmBoard(AlarmsConfig())
    quiet = Observation(now=RECORDED, oldest_pending_at=None, staging_free_bytes=1,
                        staging_reserve_bytes=0)
    assert board.observe(quiet) == []
    [raised] = board.observe(replace(quiet, lock_unenforced="delete_refused: deleted"))
    assert (raised.alarm.kind, raised.alarm.severity, raised.raised) == (
        AlarmKind.STORAGE_LOCK_UNENFORCED, "error", True)
    assert raised.alarm.detail.endswith("a locked version (delete_refused: deleted)")


def test_the_longest_class_named_by_a_call_type_wins() -> None:
    """Call types pick classes (case ignored), the longest wins, none picks the default."""
    config = parse_config(_config(retention=CLASSES))
    picked = [
        class_for_call_types(config, call_types)
        for call_types in (["arrest", "Traffic Stop"], ["HOMICIDE", "ARREST"], ["NOISE"], [])
    ]
    assert [kind.name if kind else None for kind in picked] == [
        "arrest", "homicide", "standard", "standard"]
