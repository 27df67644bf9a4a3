"""The fleet view: each dock publishes a status document to central storage, at most once
per interval, without ever holding up offloading; ``bwc-dock fleet`` reads them all."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bwc_dock.alarms import Alarm, AlarmKind, DockedCamera, StorageState
from bwc_dock.config import AlarmsConfig
from bwc_dock.fleet import (
    SCHEMA,
    FleetPublisher,
    document_key,
    encode,
    judge,
    parse_document,
    status_document,
)
from bwc_dock.service import DaemonStatus
from bwc_dock.storage.filesystem import FileBackend

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
        data = publisher._waiting  # what the thread would send next
        if data is not None:
            assert publisher.publish(data)
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
