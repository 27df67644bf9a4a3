"""The daemon as a systemd service: notify protocol, alarms in STATUS, metrics and log,
SHA256SUMS catch-up, SIGTERM (real processes; SIGHUP is in test_reload.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dock import Dock, make_camera, sha256_of, wait_until
from tests.realparts import need_root
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


# Deadlines below only stop a hung test; none of them measures speed. A busy 2-core CI
# machine has needed about 10 s for start-up recovery; 120 s leaves room for far worse.
STARTUP_DEADLINE_SECONDS = 120.0
# Once running, each awaited message follows within one alarm check (5 s) or one
# watchdog interval (0.5 s here) of the main loop; 60 s allows a loop stalled by load.
MESSAGE_DEADLINE_SECONDS = 60.0


def _parse(datagram: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.splitlines() if "=" in line)


def _receive_until(listener: socket.socket, messages: list[dict[str, str]],
                   done: Callable[[list[dict[str, str]]], bool], what: str,
                   timeout: float = MESSAGE_DEADLINE_SECONDS) -> None:
    """Append datagrams to ``messages`` until ``done(messages)``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done(messages):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s; received {messages}")
        try:
            messages.append(_parse(listener.recv(65536).decode()))
        except TimeoutError:
            continue


def _ready_index(messages: list[dict[str, str]]) -> int | None:
    return next((i for i, m in enumerate(messages) if m.get("READY") == "1"), None)


def _after_ready(messages: list[dict[str, str]], key: str) -> list[int]:
    """Indexes of messages carrying ``key`` after the first READY=1 (none before it)."""
    ready = _ready_index(messages)
    if ready is None:
        return []
    return [i for i, m in enumerate(messages) if i > ready and key in m]


def test_notify_ready_status_watchdog_in_order(dock: Dock, notify_socket: socket.socket) -> None:
    """READY=1 with STATUS after start-up recovery, then WATCHDOG=1 pings and STATUS updates,
    and STOPPING=1 after all of them (order and presence, not a rate)."""
    dock.extra_environment.update({"NOTIFY_SOCKET": notify_socket.getsockname(),
                                   "WATCHDOG_USEC": "1000000"})
    messages: list[dict[str, str]] = []
    daemon = dock.start_daemon()
    try:
        _receive_until(notify_socket, messages, lambda m: _ready_index(m) is not None,
                       "READY=1", STARTUP_DEADLINE_SECONDS)
        # two pings show the watchdog repeats; how many fit in a window depends on the load
        _receive_until(notify_socket, messages, lambda m: len(_after_ready(m, "WATCHDOG")) >= 2,
                       "two WATCHDOG=1 after READY=1")
        camera = dock.root / "camera"
        make_camera(camera, [1000], sidecars=False)
        camera.rename(dock.watch_dir / "NOTE1")  # a watch folder stays docked: a lasting change
        _receive_until(
            notify_socket, messages,
            lambda m: any("1 cameras docked" in m[i]["STATUS"] for i in _after_ready(m, "STATUS")),
            "STATUS update naming the docked camera")
    finally:
        assert dock.stop_daemon(daemon) == 0
    _receive_until(notify_socket, messages, lambda m: bool(_after_ready(m, "STOPPING")),
                   "STOPPING=1")
    kinds = [sorted(m) for m in messages]
    ready = _ready_index(messages)
    assert ready is not None
    assert [e for e in dock.log_events() if e.get("event") == "daemon.recovered"], (
        "start-up recovery ran before READY")
    assert "cameras docked" in messages[ready]["STATUS"], kinds
    assert "clips pending" in messages[ready]["STATUS"], kinds
    [stopping] = _after_ready(messages, "STOPPING")
    assert all(i < stopping for i in _after_ready(messages, "WATCHDOG")), kinds
    assert all(i < stopping for i in _after_ready(messages, "STATUS") if i != stopping), kinds
    assert not any("STOPPING" in m for m in messages[:ready]), kinds


def _metric(path: Path, family: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus textfile, None when absent."""
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        name, _, rest = line.partition("{")
        if name != f"bwc_dock_{family}" or "}" not in rest:
            continue
        label_text, _, value = rest.rpartition("} ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            return float(value)
    return None


def _mount(*arguments: str) -> None:
    subprocess.run(["mount", *arguments], check=True, timeout=30, capture_output=True)


@pytest.mark.realparts
def test_running_daemon_raises_and_clears_an_alarm_in_status_metrics_and_log(
    dock: Dock, notify_socket: socket.socket, tmp_path: Path
) -> None:
    """A read-only NAS makes the running daemon raise storage_refused in STATUS, in the
    metrics textfile and in the log; writable again, the alarm clears in all three."""
    need_root()  # a read-only bind mount of the NAS folder
    metrics = tmp_path / "textfiles" / "bwc_dock.prom"
    metrics.parent.mkdir()
    # storage is checked every 2 s (product 30 s): the check is what clears the alarm
    dock.write_config(service={"heartbeat_seconds": 1, "metrics_textfile": str(metrics)},
                      storage={"check_interval_seconds": 2})
    dock.extra_environment["NOTIFY_SOCKET"] = notify_socket.getsockname()
    _mount("--bind", str(dock.nas), str(dock.nas))
    messages: list[dict[str, str]] = []
    try:
        _mount("-o", "remount,bind,ro", str(dock.nas))
        daemon = dock.start_daemon()
        try:
            _receive_until(notify_socket, messages, lambda m: any(
                "ALARM: storage refused" in message.get("STATUS", "") for message in m),
                "STATUS with the storage alarm", STARTUP_DEADLINE_SECONDS)
            wait_until(lambda: _metric(metrics, "alarm", alarm="storage_refused") == 1
                       and _metric(metrics, "storage_reachable") == 0,
                       timeout=MESSAGE_DEADLINE_SECONDS, message="alarm in the metrics")
            raised = [e for e in dock.log_events() if e.get("event") == "alarm.raised"]
            assert [(e["alarm"], e["level"]) for e in raised] == [("storage_refused", "error")]
            assert _metric(metrics, "alarm", alarm="quarantined") == 0  # only the one alarm

            _mount("-o", "remount,bind,rw", str(dock.nas))
            # the daemon probes storage every 2 s here: one probe, one alarm check and a
            # loaded machine fit well inside two minutes
            alarm_gone = len(messages)
            _receive_until(notify_socket, messages, lambda m: any(
                "storage ok" in message.get("STATUS", "") and "ALARM" not in message["STATUS"]
                for message in m[alarm_gone:]), "STATUS without the alarm", 120)
            wait_until(lambda: _metric(metrics, "alarm", alarm="storage_refused") == 0
                       and _metric(metrics, "storage_reachable") == 1,
                       timeout=MESSAGE_DEADLINE_SECONDS, message="alarm cleared in the metrics")
            wait_until(lambda: any(e.get("event") == "alarm.cleared" for e in dock.log_events()),
                       timeout=MESSAGE_DEADLINE_SECONDS, message="alarm.cleared logged")
        finally:
            assert dock.stop_daemon(daemon) == 0
    finally:
        subprocess.run(["umount", str(dock.nas)], check=False, timeout=30)
    cleared = [e for e in dock.log_events() if e.get("event") == "alarm.cleared"]
    assert [e["alarm"] for e in cleared] == ["storage_refused"]


def test_fresh_dock_starts_without_a_false_staging_alarm(dock: Dock, tmp_path: Path) -> None:
    """A daemon on a new state folder, before any camera made staging, measures free space
    where staging will be: its first fleet document, status and metrics carry no alarm."""
    metrics = tmp_path / "textfiles" / "bwc_dock.prom"
    metrics.parent.mkdir()
    # any reserve above zero: an unknown free space read as 0 MiB fell under it
    dock.write_config(dock={"staging_reserve_mb": 1},
                      service={"heartbeat_seconds": 1, "metrics_textfile": str(metrics)})
    fleet_document = dock.nas / "_fleet" / "dock-test.json"
    daemon = dock.start_daemon()
    try:
        wait_until(fleet_document.exists, timeout=STARTUP_DEADLINE_SECONDS,
                   message="the first fleet document")
        first_document = json.loads(fleet_document.read_text())
        wait_until(lambda: json.loads(dock.cli("status", "--json").stdout)["daemon_alive"],
                   timeout=STARTUP_DEADLINE_SECONDS, message="a heartbeat")
        status = json.loads(dock.cli("status", "--json").stdout)
        wait_until(lambda: _metric(metrics, "alarm", alarm="staging_low") is not None,
                   timeout=MESSAGE_DEADLINE_SECONDS, message="the metrics textfile")
        metric_alarm = _metric(metrics, "alarm", alarm="staging_low")
        metric_free = _metric(metrics, "staging_free_bytes")
    finally:
        assert dock.stop_daemon(daemon) == 0
    assert not dock.staging_dir.exists()  # still no camera: staging not made yet
    assert first_document["alarms"] == []
    assert first_document["staging_free_bytes"] > 1 * MIB
    assert status["staging_free_bytes"] > 1 * MIB
    assert metric_alarm == 0
    assert metric_free is not None and metric_free > 1 * MIB
    assert [e for e in dock.log_events() if e.get("event") == "alarm.raised"] == []


def test_running_daemon_writes_a_missing_sha256sums_without_a_restart(dock: Dock) -> None:
    """A docking's SHA256SUMS the store refused while the daemon ran is written by the
    running daemon once the way is clear, at its next [storage] sums_interval_seconds."""
    camera = dock.root / "camera"
    make_camera(camera, [3000, 4000], sidecars=False)
    for path in camera.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))  # recorded 2023-11-14 UTC
    sums = dock.nas / "SUMS1/2023/11/14/SHA256SUMS.dock-test.docking-000001"
    (sums / "in-the-way").mkdir(parents=True)
    # the anchorer writes missing lists every 3 s here (product: every 60 s)
    dock.write_config(storage={"sums_interval_seconds": 3})
    daemon = dock.start_daemon()
    try:
        camera.rename(dock.watch_dir / "SUMS1")
        wait_until(lambda: any(e.get("event") == "custody.sums_failed"
                               for e in dock.log_events()),
                   timeout=STARTUP_DEADLINE_SECONDS, message="the store refused the list")
        assert {clip["state"] for clip in dock.clips()} == {"uploaded"}
        shutil.rmtree(sums)
        # one interval plus a slow round on a loaded machine fit in two minutes. The
        # bound stops a hung test; it does not time anything.
        wait_until(sums.is_file, timeout=120, message="SHA256SUMS written by the daemon")
        assert daemon.poll() is None  # the same daemon, no restart
    finally:
        assert dock.stop_daemon(daemon) == 0
    listed = {line.split("  ", 1)[1] for line in sums.read_text().splitlines()
              if not line.startswith("#")}  # the header: how the times were read
    assert listed == {Path(clip["remote_key"]).name for clip in dock.clips()}
    checked = subprocess.run(["sha256sum", "--strict", "-c", sums.name], cwd=sums.parent,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_sigterm_during_copy_loses_nothing(dock: Dock) -> None:
    """SIGTERM mid-copy: exit 0 quickly, the clip back to discovered, no .part; a restart
    finishes it."""
    camera = dock.root / "camera"
    expected = make_camera(camera, [400 * MIB], sidecars=False)
    dock.write_config(sources={"udev": False, "watch_dirs": [str(dock.watch_dir)]})
    daemon = dock.start_daemon()
    try:
        camera.rename(dock.watch_dir / "TERM1")
        wait_until(lambda: bool(list(dock.staging_dir.rglob("*.part"))), timeout=60,
                   message="a copy in progress", interval=0.05)
    finally:
        started = time.monotonic()
        assert dock.stop_daemon(daemon, timeout=60) == 0
    # systemd kills a stop after TimeoutStopSec=2min: a quarter of it leaves room for load
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
                               "allow_plaintext": True,
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
    try:
        with sqlite3.connect(dock.ledger_path, timeout=30) as connection:
            count: int = connection.execute("SELECT count(*) FROM multipart_parts").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # the schema is not there yet
    return count
