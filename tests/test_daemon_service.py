"""The daemon as a systemd service: notify protocol, SIGTERM, SIGHUP (real processes)."""

from __future__ import annotations

import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dock import Dock, make_camera, sha256_of, wait_until
from tests.seaweedfs import SeaweedServer

MIB = 1024 * 1024


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A test-owned NOTIFY_SOCKET, as systemd would offer it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(0.5)
    yield listener
    listener.close()


def _receive(listener: socket.socket, seconds: float) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            datagram = listener.recv(65536).decode()
        except TimeoutError:
            continue
        messages.append(dict(line.split("=", 1) for line in datagram.splitlines() if "=" in line))
    return messages


def test_notify_ready_status_watchdog_in_order(dock: Dock, notify_socket: socket.socket) -> None:
    """READY=1 after start-up recovery, STATUS kept current, WATCHDOG=1 pings, STOPPING=1."""
    dock.extra_environment.update({"NOTIFY_SOCKET": notify_socket.getsockname(),
                                   "WATCHDOG_USEC": "1000000"})
    daemon = dock.start_daemon()
    try:
        messages = _receive(notify_socket, 6)
    finally:
        assert dock.stop_daemon(daemon) == 0
    messages += _receive(notify_socket, 1)
    kinds = [next(iter(m)) for m in messages if m]
    first_ready = next(i for i, m in enumerate(messages) if m.get("READY") == "1")
    recovered = [e for e in dock.log_events() if e.get("event") == "daemon.recovered"]
    assert recovered, "start-up recovery ran before READY"
    assert "cameras docked" in messages[first_ready]["STATUS"]
    assert "clips pending" in messages[first_ready]["STATUS"]
    assert sum(1 for m in messages[first_ready:] if m.get("WATCHDOG") == "1") >= 5
    assert any("STOPPING" in m for m in messages[first_ready:]), kinds


def test_sigterm_during_copy_loses_nothing(dock: Dock) -> None:
    """SIGTERM mid-copy: exit 0 quickly, the clip back to discovered, no .part; a restart
    finishes it."""
    camera = dock.root / "camera"
    expected = make_camera(camera, [400 * MIB], sidecars=False)
    dock.write_config(sources={"udev": False, "watch_dirs": [str(dock.watch_dir)]})
    daemon = dock.start_daemon()
    try:
        camera.rename(dock.watch_dir / "TERM1")
        wait_until(lambda: list(dock.staging_dir.rglob("*.part")), timeout=60,
                   message="a copy in progress", interval=0.05)
    finally:
        started = time.monotonic()
        assert dock.stop_daemon(daemon, timeout=60) == 0
    assert time.monotonic() - started < 30
    [clip] = dock.clips()
    assert clip["state"] == "discovered"
    assert not list(dock.staging_dir.rglob("*.part"))
    daemon = dock.start_daemon()
    try:
        wait_until(lambda: dock.clips()[0]["state"] == "uploaded", timeout=180,
                   message="uploaded after restart")
    finally:
        assert dock.stop_daemon(daemon) == 0
    [clip] = dock.clips()
    assert clip["sha256"] == next(iter(expected.values()))
    assert sha256_of(dock.nas / clip["remote_key"]) == clip["sha256"]


def test_sigterm_during_multipart_upload_loses_nothing(
    dock: Dock, seaweedfs: SeaweedServer, s3_bucket: str
) -> None:
    """SIGTERM mid-upload: the clip goes back to staged with its parts kept; a restart
    resumes the same multipart upload."""
    dock.extra_environment.update(seaweedfs.environment())
    dock.write_config(storage={"backend": "s3", "endpoint_url": seaweedfs.endpoint_url,
                               "bucket": s3_bucket, "addressing_style": "path",
                               "multipart_threshold_mb": 5, "multipart_part_mb": 5,
                               "multipart_concurrency": 1})
    with dock.config_path.open("a") as config:
        config.write("[[storage.bandwidth]]\nstart = 00:00:00\nend = 00:00:00\n"
                     "limit_mb_per_s = 8\n")
    camera = dock.root / "camera"
    make_camera(camera, [50 * MIB], sidecars=False)
    daemon = dock.start_daemon()
    try:
        camera.rename(dock.watch_dir / "TERM2")
        wait_until(lambda: _parts(dock) >= 1, timeout=120, message="a part uploaded")
    finally:
        assert dock.stop_daemon(daemon, timeout=60) == 0
    [clip] = dock.clips()
    assert clip["state"] == "staged"
    kept = _parts(dock)
    assert kept >= 1
    daemon = dock.start_daemon()
    try:
        wait_until(lambda: dock.clips()[0]["state"] == "uploaded", timeout=180,
                   message="uploaded after restart")
    finally:
        assert dock.stop_daemon(daemon) == 0
    events = dock.log_events()
    assert [e for e in events if e.get("event") == "s3.multipart.resume"]
    assert len([e for e in events if e.get("event") == "s3.multipart.begin"]) == 1


def _parts(dock: Dock) -> int:
    if not dock.ledger_path.exists():
        return 0  # the daemon has not created its ledger yet
    with sqlite3.connect(dock.ledger_path, timeout=30) as connection:
        count: int = connection.execute("SELECT count(*) FROM multipart_parts").fetchone()[0]
    return count


def test_sighup_reloads_a_good_config_and_keeps_the_old_one_for_a_bad_one(dock: Dock) -> None:
    """SIGHUP with a bad config logs why and keeps running; with a good one it reloads."""
    daemon = dock.start_daemon()
    try:
        wait_until(lambda: any(e.get("event") == "daemon.started" for e in dock.log_events()),
                   timeout=30, message="daemon started")
        good = dock.config_path.read_text()
        dock.config_path.write_text(good + "\n[alarms]\noldest_pending_hourz = 3\n")
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: any(e.get("event") == "config.reload_rejected"
                               for e in dock.log_events()), timeout=30, message="rejected")
        rejected = next(e for e in dock.log_events() if e.get("event") == "config.reload_rejected")
        assert "alarms.oldest_pending_hourz: unknown key" in rejected["error"]
        assert daemon.poll() is None
        dock.config_path.write_text(good + "\n[alarms]\noldest_pending_hours = 3\n")
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: any(e.get("event") == "config.reloaded" for e in dock.log_events()),
                   timeout=30, message="reloaded")
        assert daemon.poll() is None
    finally:
        assert dock.stop_daemon(daemon) == 0
