"""The fleet view: each dock publishes a status document to central storage, at most once
per interval, without ever holding up offloading; ``bwc-dock fleet`` reads them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from structlog.testing import capture_logs

from bwc_dock.alarms import (
    Alarm,
    AlarmBoard,
    AlarmKind,
    DockedCamera,
    Observation,
    StorageState,
)
from bwc_dock.config import AlarmsConfig, Config, DockConfig, load_config, parse_config
from bwc_dock.errors import ConfigError
from bwc_dock.fleet import (
    SCHEMA,
    FleetPublisher,
    document_key,
    encode,
    fleet_backend,
    fleet_publisher,
    status_document,
)
from bwc_dock.fleet_keys import FleetSigner, SignatureState, key_path
from bwc_dock.fleet_view import judge, parse_document, read_fleet
from bwc_dock.service import DaemonStatus
from bwc_dock.storage.base import StoredObject
from bwc_dock.storage.filesystem import FileBackend
from tests.dock import Dock, make_camera, wait_until
from tests.realparts import need_root
from tests.seaweedfs import SeaweedServer

NOW = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
PREFIX = "_fleet/"


def daemon_status(dock_id: str = "dock-01") -> DaemonStatus:
    counts = {state: 0 for state in ("discovered", "copying", "staged", "uploading")}
    counts |= {"discovered": 2, "staged": 3, "uploaded": 40, "cleared": 0, "quarantined": 1}
    return DaemonStatus(
        dock_id=dock_id,
        alarms_config=AlarmsConfig(),
        metrics_textfile=None,
        status_line="1 cameras docked",
        clips_by_state=counts,
        oldest_pending_at=NOW - timedelta(hours=2),
        staging_free_bytes=7 * 1024**3,
        staging_reserve_bytes=1024**3,
        storage=StorageState.OK,
        last_error="secret-free but not for the fleet",
        docked=(DockedCamera("X81234567", 2, NOW - timedelta(minutes=1)),),
        unmountable=(),
        error_counts={},
        byte_totals=None,
    )


QUARANTINED = Alarm(AlarmKind.QUARANTINED, "error", "1 clip(s) failed", "1 quarantined")
STALLED = Alarm(AlarmKind.STALLED_OFFLOAD, "warning", "no progress", "stalled", camera="X81234567")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_status_document_holds_what_the_fleet_view_needs() -> None:
    """Schema, dock, version, heartbeat, counts, oldest pending, alarms, cameras, free space."""
    document = status_document(
        daemon_status(), [QUARANTINED, STALLED], now=NOW, interval_seconds=60
    )
    assert document["schema"] == SCHEMA
    assert document["dock"] == "dock-01"
    assert document["version"]
    assert document["heartbeat_at"] == "2026-11-30T13:00:00+00:00"
    assert document["clips"]["staged"] == 3
    assert document["oldest_pending_at"] == "2026-11-30T11:00:00+00:00"
    assert document["alarms"] == [
        {"kind": "quarantined", "subject": None, "severity": "error", "detail": "1 clip(s) failed"},
        {
            "kind": "stalled_offload",
            "subject": "X81234567",
            "severity": "warning",
            "detail": "no progress",
        },
    ]
    assert document["cameras"][0]["serial"] == "X81234567"
    assert document["staging_free_bytes"] == 7 * 1024**3
    assert "last_error" not in document  # error texts stay on the dock
    report = parse_document(document_key(PREFIX, "dock-01"), encode(document), PREFIX)
    assert report.problem is None and report.document is not None
    assert report.document.pending == 5


def test_publisher_writes_at_most_once_per_interval_and_replaces(tmp_path: Path) -> None:
    """Ticks every second publish once a minute; each publish replaces the last document."""
    backend = FileBackend(tmp_path, "dock-01")
    clock = Clock()
    publisher = FleetPublisher(backend, document_key(PREFIX, "dock-01"), 60, clock=clock)
    reads: list[int] = []

    def read_status() -> DaemonStatus:
        reads.append(1)
        return daemon_status()

    published: list[dict[str, object]] = []
    for second in range(150):
        clock.now = 1000.0 + second
        publisher.tick(read_status, [QUARANTINED])
        waiting = publisher._waiting  # what the thread would send next
        if waiting is not None:
            assert publisher.publish(encode(waiting))
            publisher._waiting = None
            stored = (tmp_path / "_fleet" / "dock-01.json").read_bytes()
            published.append(json.loads(stored))
    assert len(reads) == 3  # at 0, 60 and 120 s: the status is read only when due
    assert len(published) == 3 and publisher.published == 3
    assert [path.name for path in (tmp_path / "_fleet").iterdir()] == ["dock-01.json"]


def test_publishing_thread_sends_what_tick_hands_over(tmp_path: Path) -> None:
    """The thread publishes the document tick built; tick itself never writes."""
    backend = FileBackend(tmp_path, "dock-01")
    publisher = FleetPublisher(backend, document_key(PREFIX, "dock-01"), 60)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        publisher.tick(daemon_status, [])
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while publisher.published == 0 and datetime.now(UTC) < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    document = json.loads((tmp_path / "_fleet" / "dock-01.json").read_bytes())
    assert document["dock"] == "dock-01" and document["alarms"] == []


def test_refused_publish_is_logged_once_per_kind_and_retried(tmp_path: Path) -> None:
    """A fleet prefix the store refuses: one warning, False each time, recovered later."""
    from structlog.testing import capture_logs

    backend = FileBackend(tmp_path, "dock-01")
    (tmp_path / "_fleet").write_text("a file where the fleet folder should be")
    publisher = FleetPublisher(backend, document_key(PREFIX, "dock-01"), 60)
    data = encode(status_document(daemon_status(), [], now=NOW, interval_seconds=60))
    with capture_logs() as logs:
        assert not publisher.publish(data)
        assert not publisher.publish(data)
        assert not publisher.publish(data)
        (tmp_path / "_fleet").unlink()
        assert publisher.publish(data)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [entry["event"] for entry in warnings] == ["fleet.publish_failed"]
    assert warnings[0]["key"] == "_fleet/dock-01.json"
    assert any(entry["event"] == "fleet.publish_recovered" for entry in logs)


def test_malformed_and_foreign_documents_are_reported_not_fatal() -> None:
    """Not JSON, another schema, a bad field, a dock under someone else's key: each named."""
    key = document_key(PREFIX, "dock-01")
    good = status_document(daemon_status(), [], now=NOW, interval_seconds=60)
    cases = {
        b"\xff\xfe not json": "malformed: not JSON",
        b'{"hello": "world"}': "foreign",
        b"[1, 2]": "foreign",
        encode(good | {"heartbeat_at": "yesterday"}): "malformed: heartbeat_at",
        encode(good | {"dock": "dock-02"}): "document of dock 'dock-02'",
        b"[" * 100_000: "malformed: not JSON",
    }
    for data, problem in cases.items():
        report = parse_document(key, data, PREFIX)
        assert report.problem is not None and report.problem.startswith(problem), report


def test_judge_marks_old_heartbeats_stale_and_alarms_unhealthy() -> None:
    """Alive within the limit, stale beyond it; a dock with alarms is alive but not healthy."""
    documents = [
        status_document(
            daemon_status("a"), [], now=NOW - timedelta(seconds=30), interval_seconds=60
        ),
        status_document(
            daemon_status("b"), [], now=NOW - timedelta(minutes=6), interval_seconds=60
        ),
        status_document(daemon_status("c"), [QUARANTINED], now=NOW, interval_seconds=60),
        status_document(
            daemon_status("d"), [], now=NOW - timedelta(minutes=20), interval_seconds=600
        ),
    ]
    reports = [
        parse_document(document_key(PREFIX, str(d["dock"])), encode(d), PREFIX) for d in documents
    ]
    verdicts = judge(reports, NOW)
    assert [v.state for v in verdicts] == ["alive", "stale", "alive", "alive"]
    assert [v.healthy for v in verdicts] == [True, False, False, True]
    tight = judge(reports, NOW, stale_after=timedelta(seconds=10))
    assert [v.state for v in tight] == ["stale", "stale", "alive", "stale"]


def test_huge_numbers_and_impossible_times_are_reported_never_a_crash() -> None:
    """Infinity, a 400-digit count, a negative count and a year-1 time are each named as
    malformed; judging them raises nothing."""
    key = document_key(PREFIX, "dock-01")
    good = status_document(daemon_status(), [], now=NOW, interval_seconds=60)
    text = encode(good).decode()
    cases = {
        text.replace('"interval_seconds": 60', '"interval_seconds": 1e999'): "interval_seconds",
        text.replace('"staged": 3', '"staged": ' + "9" * 400): "clips.staged",
        text.replace('"staged": 3', '"staged": -3'): "clips.staged",
        encode(good | {"heartbeat_at": "0001-01-01T00:00:00+23:59"}).decode(): "heartbeat_at",
        encode(good | {"heartbeat_at": "9999-12-31T23:59:59-23:59"}).decode(): "heartbeat_at",
    }
    for data, field in cases.items():
        report = parse_document(key, data.encode(), PREFIX)
        assert report.problem is not None and report.problem.startswith(
            f"malformed: {field}"), report.problem
        [verdict] = judge([report], NOW)
        assert verdict.state == "malformed" and not verdict.healthy


def test_a_future_heartbeat_or_a_huge_interval_never_shows_a_dock_alive() -> None:
    """A heartbeat a day ahead makes the dock suspect; an interval of 10^300 s is judged
    by the one-day bound, so an hour-old heartbeat is still alive but flagged, and a
    three-day-old one is stale."""
    forged = status_document(daemon_status("b"), [], now=NOW + timedelta(days=1),
                             interval_seconds=60)
    huge = status_document(daemon_status("c"), [], now=NOW - timedelta(hours=1),
                           interval_seconds=1e300)
    dead = status_document(daemon_status("d"), [], now=NOW - timedelta(days=4),
                           interval_seconds=1e300)
    reports = [parse_document(document_key(PREFIX, str(d["dock"])), encode(d), PREFIX)
               for d in (forged, huge, dead)]
    verdicts = judge(reports, NOW)
    assert [v.state for v in verdicts] == ["suspect", "alive", "stale"]
    assert [v.healthy for v in verdicts] == [False, False, False]
    assert verdicts[0].suspicions == (
        "heartbeat 86400 s in the future (a wrong clock or a forgery)",)
    assert verdicts[1].suspicions == (
        "publish interval 1e+300 s is beyond the bound of 86400 s (judged by the bound)",)


def test_two_docks_forged_documents_are_shown_and_fail_the_fleet(tmp_path: Path) -> None:
    """On one shared store, dock-a is genuine; dock-b's document claims a heartbeat a day
    ahead, dock-c's a huge interval and an old heartbeat, dock-d's holds infinity:
    `bwc-dock fleet` exits 1, shows each for what it is, and says what it cannot prove."""
    dock_a, _dock_b = fleet_of_two(tmp_path)
    folder = tmp_path / "central" / "_fleet"
    folder.mkdir()
    now = datetime.now(UTC)
    documents = {
        "dock-a": status_document(daemon_status("dock-a"), [], now=now, interval_seconds=60),
        "dock-b": status_document(daemon_status("dock-b"), [], now=now + timedelta(days=1),
                                  interval_seconds=60),
        "dock-c": status_document(daemon_status("dock-c"), [], now=now - timedelta(days=3),
                                  interval_seconds=1e300),
    }
    for dock_id, document in documents.items():
        (folder / f"{dock_id}.json").write_bytes(encode(document))
    infinite = encode(documents["dock-a"] | {"dock": "dock-d"}).decode().replace(
        '"interval_seconds": 60', '"interval_seconds": 1e999')
    (folder / "dock-d.json").write_text(infinite)
    code, document = fleet(dock_a)
    assert code == 1 and document["healthy"] is False
    by_key = {entry["key"]: entry for entry in document["docks"]}
    assert [by_key[f"_fleet/{d}.json"]["state"] for d in ("dock-a", "dock-b", "dock-c", "dock-d")
            ] == ["alive", "suspect", "stale", "malformed"]
    assert by_key["_fleet/dock-a.json"]["suspicions"] == [
        "unsigned: cannot be verified (a dock older than signing, or a forgery)"]
    assert by_key["_fleet/dock-a.json"]["signature"] == "unsigned"
    assert "in the future" in by_key["_fleet/dock-b.json"]["suspicions"][0]
    assert "beyond the bound" in by_key["_fleet/dock-c.json"]["suspicions"][0]
    assert by_key["_fleet/dock-d.json"]["problem"].startswith("malformed: interval_seconds")
    assert "trust on first use" in document["proves"]
    dock_a.extra_environment["COLUMNS"] = "250"  # wide enough that no cell folds
    table = dock_a.cli("fleet", check=False, timeout=120)
    assert table.returncode == 1, table.stderr
    rows = {line.split()[1]: line for line in table.stdout.splitlines() if line[:1] == "│"}
    assert "alive" in rows["dock-a"]
    assert "suspect" in rows["dock-b"] and "in the future" in rows["dock-b"]
    assert "stale" in rows["dock-c"] and "beyond the bound" in rows["dock-c"]
    assert "malformed: interval_seconds" in rows["_fleet/dock-d.json"]
    assert "trust on first use" in table.stdout


# -- real daemons ---------------------------------------------------------------------

# a test cannot wait a minute per publish: the configuration's minimum, 1 s
FAST_PUBLISHING = {"interval_seconds": 1}
# a dock whose heartbeat is this old counts as stale in these tests (12 s, a dozen intervals)
STALE_AFTER_MINUTES = "0.2"
DEADLINE_SECONDS = 180


def fleet_of_two(tmp_path: Path, storage: dict[str, object] | None = None) -> list[Dock]:
    """Docks A and B with their own ledgers and dock ids, sharing one central store."""
    shared = tmp_path / "central"
    shared.mkdir()
    (shared / ".bwc-dock-store").touch()  # the share's marker file
    docks = []
    for name in ("dock-a", "dock-b"):
        dock = Dock(tmp_path / name)
        dock.write_config(dock={"id": name}, storage=storage or {"path": str(shared)},
                          fleet=FAST_PUBLISHING)
        docks.append(dock)
    return docks


def fleet(dock: Dock, *arguments: str) -> tuple[int, dict[str, Any]]:
    result = dock.cli("fleet", "--json", *arguments, check=False, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def states(document: dict[str, Any]) -> dict[str, str]:
    return {entry["dock"]: entry["state"] for entry in document["docks"]}


def offload_one_camera(dock: Dock, serial: str, seed: int) -> None:
    camera = dock.root / f"camera-{serial}"
    make_camera(camera, [200_000, 300_000], seed=seed)
    camera.rename(dock.watch_dir / serial)


def all_uploaded(dock: Dock, count: int) -> bool:
    clips = dock.clips()
    return len(clips) == count and all(clip["state"] == "uploaded" for clip in clips)


def check_fleet_marks_the_killed_dock_stale(docks: list[Dock]) -> None:
    dock_a, dock_b = docks
    daemons = [dock.start_daemon() for dock in docks]
    try:
        for number, dock in enumerate(docks):
            offload_one_camera(dock, f"CAM{number}", seed=number + 1)
        for dock in docks:
            wait_until(partial(all_uploaded, dock, 2), DEADLINE_SECONDS, "clips uploaded")

        # both publish; once each has published after its offload, both are alive, healthy
        def both_alive_and_done() -> bool:
            code, document = fleet(dock_a, "--stale-after", STALE_AFTER_MINUTES)
            entries = {entry["dock"]: entry for entry in document["docks"]}
            return (
                code == 0
                and states(document) == {"dock-a": "alive", "dock-b": "alive"}
                and all(entry["clips"].get("uploaded") == 2 for entry in entries.values())
            )

        wait_until(both_alive_and_done, DEADLINE_SECONDS, "both docks alive in `fleet`", 0.5)
        code, document = fleet(dock_b)  # any dock of the fleet sees the same
        assert code == 0 and document["healthy"] is True
        assert {entry["dock"]: entry["signature"] for entry in document["docks"]} == {
            "dock-a": "verified", "dock-b": "verified"}
        entry_b = next(entry for entry in document["docks"] if entry["dock"] == "dock-b")
        assert entry_b["pending"] == 0 and entry_b["alarms"] == []
        assert [camera["serial"] for camera in entry_b["cameras"]] == ["CAM1"]

        daemons[1].send_signal(signal.SIGKILL)
        assert daemons[1].wait(timeout=30) == -signal.SIGKILL
        killed_at = datetime.now(UTC)

        def b_stale_a_alive() -> bool:
            code, document = fleet(dock_a, "--stale-after", STALE_AFTER_MINUTES)
            return code == 1 and states(document) == {"dock-a": "alive", "dock-b": "stale"}

        wait_until(b_stale_a_alive, DEADLINE_SECONDS, "dock-b stale, dock-a alive", 0.5)
        _code, document = fleet(dock_a, "--stale-after", STALE_AFTER_MINUTES)
        entry_b = next(entry for entry in document["docks"] if entry["dock"] == "dock-b")
        assert datetime.fromisoformat(entry_b["heartbeat_at"]) <= killed_at
        table = dock_a.cli("fleet", "--stale-after", STALE_AFTER_MINUTES, check=False)
        assert table.returncode == 1
        rows = {line.split()[1]: line for line in table.stdout.splitlines() if "dock-" in line}
        assert "stale" in rows["dock-b"] and "alive" in rows["dock-a"]
        forge_dead_docks_heartbeat(dock_a, entry_b)
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(timeout=30)


def forge_dead_docks_heartbeat(dock_a: Dock, entry_b: dict[str, Any]) -> None:
    """Dock A's credentials and key write a fresh heartbeat for the dead dock B: signed
    with A's key, then unsigned; `fleet` shows B suspect, never alive and verified."""
    config = load_config(dock_a.config_path)
    forged = status_document(daemon_status("dock-b"), [], now=datetime.now(UTC),
                             interval_seconds=60)
    signer = FleetSigner(key_path(dock_a.state_dir), "dock-b", config.fleet.prefix)
    # dock A's S3 credentials, as its daemon has them (the folder store needs none)
    with patch.dict(os.environ, dock_a.extra_environment):
        backend = fleet_backend(config)
        try:
            for stored, signature in ((signer.signed(forged), "bad signature"),
                                      (encode(forged), "unsigned")):
                backend.put_bytes(entry_b["key"], stored, {}, replace=True)
                code, document = fleet(dock_a, "--stale-after", STALE_AFTER_MINUTES)
                entry = next(e for e in document["docks"] if e["dock"] == "dock-b")
                assert code == 1
                assert (entry["state"], entry["signature"]) == ("suspect", signature)
        finally:
            backend.close()
    table = dock_a.cli("fleet", "--stale-after", STALE_AFTER_MINUTES, check=False)
    rows = {line.split()[1]: line for line in table.stdout.splitlines() if "dock-" in line}
    assert "suspect" in rows["dock-b"] and "unsigned" in rows["dock-b"]
    assert "verified" in rows["dock-a"]


def test_a_second_key_for_a_dock_id_is_refused_and_its_documents_fail(tmp_path: Path) -> None:
    """The first key registered for a dock id stays; a dock with another key under that id
    logs fleet.key_conflict, replaces nothing, and its documents show 'bad signature'."""
    backend = FileBackend(tmp_path / "central", "dock-01")
    (tmp_path / "central").mkdir()
    first = FleetSigner(tmp_path / "first" / "key", "dock-01", PREFIX)
    second = FleetSigner(tmp_path / "second" / "key", "dock-01", PREFIX)
    first.register(backend)
    registered = (tmp_path / "central" / "_fleet" / "keys" / "dock-01.pub").read_text()
    with capture_logs() as logs:
        second.register(backend)
    assert [entry["event"] for entry in logs] == ["fleet.key_conflict"]
    [alarm] = AlarmBoard(AlarmsConfig()).observe(
        Observation(NOW, None, None, 0, fleet_key_conflict=second.conflict))
    assert (alarm.alarm.kind, alarm.raised) == (AlarmKind.FLEET_KEY_CONFLICT, True)
    assert alarm.alarm.detail.startswith("_fleet/keys/dock-01.pub holds another key")
    assert (tmp_path / "central" / "_fleet" / "keys" / "dock-01.pub").read_text() == registered
    document = status_document(daemon_status(), [], now=NOW, interval_seconds=60)
    key = document_key(PREFIX, "dock-01")
    for signer, signature in ((second, SignatureState.BAD), (first, SignatureState.VERIFIED)):
        backend.put_bytes(key, signer.signed(document), {}, replace=True)
        [report] = read_fleet(backend, PREFIX)
        assert (report.key, report.signature) == (key, signature)
    assert (tmp_path / "first" / "key").stat().st_mode & 0o777 == 0o600


def test_fleet_on_a_shared_folder_shows_both_docks_then_the_killed_one_stale(
    tmp_path: Path,
) -> None:
    """Two daemons on one NAS folder: `fleet` shows both alive; after kill -9 of one, that
    one is stale (its heartbeat stops) and `fleet` exits 1."""
    check_fleet_marks_the_killed_dock_stale(fleet_of_two(tmp_path))


def test_fleet_on_shared_seaweedfs_shows_both_docks_then_the_killed_one_stale(
    tmp_path: Path, seaweedfs: SeaweedServer, s3_bucket: str
) -> None:
    """The same two docks on one real S3 bucket (SeaweedFS)."""
    storage = {
        "backend": "s3",
        "endpoint_url": seaweedfs.endpoint_url,
        "allow_plaintext": True,
        "bucket": s3_bucket,
        "addressing_style": "path",
        "prefix": "bwc/",
        "retry_initial_seconds": 0.2,
        "retry_max_seconds": 2.0,
    }
    docks = fleet_of_two(tmp_path, storage)
    for dock in docks:
        dock.extra_environment.update(seaweedfs.environment())
    check_fleet_marks_the_killed_dock_stale(docks)
    keys = seaweedfs.object_keys(s3_bucket, "bwc/_fleet/")
    assert keys == ["bwc/_fleet/dock-a.json", "bwc/_fleet/dock-b.json",
                    "bwc/_fleet/keys/dock-a.pub", "bwc/_fleet/keys/dock-b.pub"]


@pytest.mark.realparts
def test_a_store_refusing_fleet_writes_does_not_hold_up_offloading(dock: Dock) -> None:
    """The fleet folder read-only: every clip still reaches `uploaded`, the refusal is
    logged once though retried each interval, and the document appears once writable."""
    need_root()  # a read-only bind mount of the fleet folder
    dock.write_config(logging={"level": "debug"}, fleet=FAST_PUBLISHING)
    fleet_folder = dock.nas / "_fleet"
    fleet_folder.mkdir()
    mount("--bind", str(fleet_folder), str(fleet_folder))
    try:
        mount("-o", "remount,bind,ro", str(fleet_folder))
        daemon = dock.start_daemon()
        try:
            offload_one_camera(dock, "REFUSED", seed=7)
            wait_until(lambda: all_uploaded(dock, 2), DEADLINE_SECONDS, "clips uploaded")

            def failures() -> list[dict[str, Any]]:
                return [e for e in dock.log_events() if e.get("event") == "fleet.publish_failed"]

            wait_until(lambda: len(failures()) >= 4, DEADLINE_SECONDS, "publish retried")
            warned = [e for e in failures() if e["level"] == "warning"]
            assert len(warned) == 1 and warned[0]["kind"] == "refused:permission"
            assert not (fleet_folder / "dock-test.json").exists()

            mount("-o", "remount,bind,rw", str(fleet_folder))
            wait_until(
                (fleet_folder / "dock-test.json").exists,
                DEADLINE_SECONDS,
                "document published once writable",
            )
            assert any(e.get("event") == "fleet.publish_recovered" for e in dock.log_events())
        finally:
            assert dock.stop_daemon(daemon) == 0
    finally:
        subprocess.run(["umount", str(fleet_folder)], check=False, timeout=30)
    assert dock.cli("fleet", "--json").returncode == 0


def mount(*arguments: str) -> None:
    subprocess.run(["mount", *arguments], check=True, timeout=30, capture_output=True)


def test_fleet_documents_on_an_object_lock_bucket_carry_no_retention(
    tmp_path: Path, seaweedfs: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Object Lock retention configured for evidence, a fleet document is replaced
    without retention (each version would otherwise be kept for years)."""
    for name, value in seaweedfs.environment().items():
        monkeypatch.setenv(name, value)
    bucket = seaweedfs.create_bucket(object_lock=True)
    storage = seaweedfs.storage_config(
        bucket, prefix="bwc/", object_lock_mode="GOVERNANCE", object_lock_days=1
    )
    config = Config(dock=DockConfig(id="dock-lock", state_dir=tmp_path), storage=storage)
    backend = fleet_backend(config)
    try:
        publisher = FleetPublisher(backend, document_key(config.fleet.prefix, "dock-lock"), 60)
        for minute in range(2):
            document = status_document(
                daemon_status("dock-lock"),
                [],
                now=NOW + timedelta(minutes=minute),
                interval_seconds=60,
            )
            assert publisher.publish(encode(document))
        reports = read_fleet(backend, config.fleet.prefix)
    finally:
        backend.close()
    assert [(r.key, r.problem) for r in reports] == [("_fleet/dock-lock.json", None)]
    assert reports[0].document is not None
    assert reports[0].document.heartbeat_at == NOW + timedelta(minutes=1)
    client = seaweedfs.client()
    versions = client.list_object_versions(Bucket=bucket, Prefix="bwc/_fleet/")["Versions"]
    assert len(versions) == 2  # versioned (Object Lock needs it): one per publish
    for version in versions:
        head = client.head_object(
            Bucket=bucket, Key="bwc/_fleet/dock-lock.json", VersionId=version["VersionId"]
        )
        assert "ObjectLockMode" not in head and "ObjectLockRetainUntilDate" not in head


def test_fleet_path_publishes_beside_the_evidence_share_not_on_it(tmp_path: Path) -> None:
    """`[fleet] path` (file backend) moves the documents off storage.path; `[fleet] bucket`
    with the file backend is a configuration error naming the key."""
    evidence, status_share = tmp_path / "evidence", tmp_path / "status"
    evidence.mkdir()
    status_share.mkdir()
    for share in (evidence, status_share):
        (share / ".bwc-dock-store").touch()  # each share's marker file
    config = parse_config(
        {
            "dock": {"id": "dock-01", "state_dir": str(tmp_path / "state")},
            "storage": {"path": str(evidence)},
            "fleet": {"path": str(status_share)},
        }
    )
    publisher = fleet_publisher(config)
    assert publisher is not None
    assert publisher.publish(
        encode(status_document(daemon_status(), [], now=NOW, interval_seconds=60))
    )
    assert (status_share / "_fleet" / "dock-01.json").is_file()
    assert [path.name for path in evidence.iterdir()] == [".bwc-dock-store"]
    with pytest.raises(ConfigError, match=r"fleet\.bucket: only with storage\.backend"):
        parse_config({"storage": {"path": str(evidence)}, "fleet": {"bucket": "status"}})
    disabled = parse_config({"storage": {"path": str(evidence)}, "fleet": {"enabled": False}})
    assert fleet_publisher(disabled) is None


class StallingBackend(FileBackend):
    """A real folder backend whose fleet write hangs until released (fault injection:
    a store that accepts the connection and never answers)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "dock-01")
        self.release = threading.Event()
        self.entered = threading.Event()

    def put_bytes(
        self, key: str, data: bytes, metadata: Mapping[str, str], *, replace: bool = False
    ) -> StoredObject:
        self.entered.set()
        self.release.wait(timeout=60)
        return super().put_bytes(key, data, metadata, replace=replace)


def test_a_hanging_store_never_holds_the_main_loop(tmp_path: Path) -> None:
    """While a publish hangs, tick returns at once, skips the due publishes and says so
    once; when the store answers, the next due publish goes out."""
    from structlog.testing import capture_logs

    backend = StallingBackend(tmp_path)
    clock = Clock()
    publisher = FleetPublisher(backend, document_key(PREFIX, "dock-01"), 60, clock=clock)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with capture_logs() as logs:
            publisher.tick(daemon_status, [])
            assert backend.entered.wait(timeout=30)
            for _minute in range(3):
                clock.now += 60
                started = time.monotonic()
                publisher.tick(daemon_status, [])
                assert time.monotonic() - started < 5  # no wait for the store
            slow = [e for e in logs if e["event"] == "fleet.publish_failed"]
            assert [e["log_level"] for e in slow] == ["warning", "debug", "debug"]
            assert slow[0]["kind"] == "slow"
            backend.release.set()
            wait_until(lambda: publisher.published == 1, 30, "the hung publish finished")
            clock.now += 60
            publisher.tick(daemon_status, [])
            wait_until(lambda: publisher.published == 2, 30, "the next publish")
    finally:
        backend.release.set()
        stop.set()
        thread.join(timeout=10)
    assert any(e["event"] == "fleet.publish_recovered" for e in logs)


def test_fleet_command_shows_hostile_text_as_text_and_foreign_objects_as_such(
    dock: Dock,
) -> None:
    """Markup and control characters in a document are printed literally and escaped; a
    foreign object and a non-JSON one are rows of their own; the exit code is 1."""
    folder = dock.nas / "_fleet"
    folder.mkdir()
    hostile = status_document(
        daemon_status("dock-x"), [], now=datetime.now(UTC), interval_seconds=60
    )
    hostile["alarms"] = [
        {"kind": "[bold red]boom[/]\x1b[2J", "subject": "cam\x07\n", "severity": "error"}
    ]
    (folder / "dock-x.json").write_bytes(encode(hostile))
    (folder / "broken.json").write_bytes(b"{not json")
    (folder / "notes.txt").write_text("someone's notes")
    dock.extra_environment["COLUMNS"] = "200"  # wide enough that no cell folds
    result = dock.cli("fleet", check=False, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line[:1] == "│"}
    assert "[bold red]boom[/]\\x1b[2J (cam\\x07\\x0a)" in rows["dock-x"]
    assert "malformed: not JSON" in rows["_fleet/broken.json"]
    assert "not a fleet status document (foreign object)" in rows["_fleet/notes.txt"]
    document = json.loads(dock.cli("fleet", "--json", check=False).stdout)
    problems = {entry["key"]: entry["problem"] for entry in document["docks"]}
    assert problems["_fleet/dock-x.json"] is None
    assert problems["_fleet/broken.json"].startswith("malformed: not JSON")
    assert problems["_fleet/notes.txt"].startswith("not a fleet status document")
    alarm = next(e for e in document["docks"] if e["key"] == "_fleet/dock-x.json")["alarms"][0]
    assert alarm["kind"] == "[bold red]boom[/]\x1b[2J"  # JSON keeps the exact text, escaped


def test_fleet_command_with_nothing_published_or_a_bad_config(dock: Dock) -> None:
    """No document under the prefix: exit 1 saying so; a bad [fleet] key: exit 2."""
    result = dock.cli("fleet", check=False, timeout=120)
    assert result.returncode == 1
    assert "no fleet status documents under '_fleet/'" in result.stderr
    dock.write_config(fleet={"interval_seconds": 0.5})  # under the 1 s minimum
    result = dock.cli("fleet", check=False, timeout=120)
    assert result.returncode == 2
    assert "fleet.interval_seconds" in result.stderr
    assert dock.cli("fleet", "--stale-after", "0", check=False).returncode == 2


def test_fleet_cameras_marks_what_only_an_unsigned_status_document_claims(dock: Dock) -> None:
    """An unsigned status document claiming two cameras docked now: the one nothing else
    knows is listed as unverified (exit 1); the one a docking record knows keeps the
    record's docking, not the newer unverified claim."""
    record = dock.nas / "_coverage/dockings/CAM1/20261001T080000Z.0.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({
        "schema": "bwc-dock/camera-evidence/1", "camera": "CAM1", "kind": "docking",
        "dock": "dock-c", "at": "2026-10-01T08:00:00+00:00",
    }))
    claim = status_document(daemon_status("dock-z"), [], now=datetime.now(UTC),
                            interval_seconds=60)
    claim["cameras"] = [{"serial": serial, "pending_clips": 0, "last_progress_at": None}
                        for serial in ("CAM1", "CAM9")]
    (dock.nas / "_fleet").mkdir()
    (dock.nas / "_fleet" / "dock-z.json").write_bytes(encode(claim))
    result = dock.cli("fleet", "cameras", "--json", "--stale-days", "36500", check=False)
    assert result.returncode == 1
    listed = {c["camera"]: (c["dock"], c["docked_now"], c["status_document"], c["unverified"])
              for c in json.loads(result.stdout)["cameras"]}
    assert listed == {"CAM1": ("dock-c", False, None, False),
                      "CAM9": ("dock-z", True, "unsigned", True)}
    table = dock.cli("fleet", "cameras", "--stale-days", "36500", check=False).stdout
    [row] = [line for line in table.splitlines() if "CAM9" in line]
    assert "unverified (unsigned)" in row
