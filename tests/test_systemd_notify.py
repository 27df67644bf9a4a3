"""The sd_notify client against a test-owned NOTIFY_SOCKET, driven from real subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bwc_dock.systemd_notify import Notifier, notify_socket_address, watchdog_interval

# A child process that talks to systemd the way the daemon will: ready, status, watchdog.
CHILD = """
import sys
from bwc_dock.systemd_notify import Notifier
notifier = Notifier()
results = [
    notifier.ready(status="recovered 3 clips"),
    notifier.status("2 cameras docked\\n37 clips pending"),
    notifier.watchdog(),
    notifier.reloading(),
    notifier.stopping(),
]
sys.exit(0 if all(results) else 3)
"""


def _receive_all(receiver: socket.socket) -> list[str]:
    messages = []
    receiver.settimeout(0.2)
    while True:
        try:
            messages.append(receiver.recv(4096).decode())
        except TimeoutError:
            return messages


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify")
    receiver.bind(address)
    yield receiver, address
    receiver.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"bwc-dock-test-{uuid.uuid4().hex}"
    receiver.bind(b"\0" + name.encode())
    yield receiver, "@" + name
    receiver.close()


def _run_child(notify_socket: str | None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
    if notify_socket is not None:
        environment["NOTIFY_SOCKET"] = notify_socket
    return subprocess.run(
        [sys.executable, "-c", CHILD], env=environment, capture_output=True, text=True,
        timeout=60, check=False,
    )


@pytest.mark.parametrize("socket_fixture", ["path_socket", "abstract_socket"])
def test_child_process_sends_ready_status_watchdog_in_order(
    socket_fixture: str, request: pytest.FixtureRequest
) -> None:
    """A real subprocess reaches a path or abstract NOTIFY_SOCKET with each message in order."""
    receiver, address = request.getfixturevalue(socket_fixture)
    finished = _run_child(address)
    assert finished.returncode == 0, finished.stderr
    messages = _receive_all(receiver)
    assert messages[0] == "READY=1\nSTATUS=recovered 3 clips"
    assert messages[1] == "STATUS=2 cameras docked 37 clips pending"
    assert messages[2] == "WATCHDOG=1"
    assert messages[3].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert int(messages[3].rsplit("=", 1)[1]) > 0
    assert messages[4] == "STOPPING=1"
    assert len(messages) == 5


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    """Run outside systemd the client sends nothing and reports so."""
    finished = _run_child(None)
    assert finished.returncode == 3  # every call returned False
    assert not Notifier(environ={}).enabled


def test_failed_send_is_logged_once_until_it_works_again(tmp_path: Path) -> None:
    """A vanished socket is logged once, not on every watchdog ping, and recovery resets it."""
    address = str(tmp_path / "gone")
    notifier = Notifier(environ={"NOTIFY_SOCKET": address})
    with capture_logs() as logs:
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    assert [entry["event"] for entry in logs] == ["systemd.notify_failed"]
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    try:
        assert notifier.watchdog()
        assert receiver.recv(100) == b"WATCHDOG=1"
        receiver.close()
        os.unlink(address)
        with capture_logs() as logs:
            assert not notifier.watchdog()
        assert [entry["event"] for entry in logs] == ["systemd.notify_failed"]
    finally:
        receiver.close()


def test_long_status_is_cut_to_one_short_line(path_socket: tuple[socket.socket, str]) -> None:
    """STATUS stays one line that systemctl status can show."""
    receiver, address = path_socket
    Notifier(environ={"NOTIFY_SOCKET": address}).status("x" * 500)
    received = receiver.recv(4096).decode()
    assert received.startswith("STATUS=xxx")
    assert len(received.removeprefix("STATUS=")) == 200


def test_extend_timeout_is_in_microseconds(path_socket: tuple[socket.socket, str]) -> None:
    """A stop that needs longer asks systemd for the extra time in microseconds."""
    receiver, address = path_socket
    Notifier(environ={"NOTIFY_SOCKET": address}).extend_timeout(2.5)
    assert receiver.recv(100) == b"EXTEND_TIMEOUT_USEC=2500000"


def test_address_forms() -> None:
    """Paths are used as they are, @names go to the abstract namespace, others are refused."""
    assert notify_socket_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_socket_address({"NOTIFY_SOCKET": "@sd"}) == b"\0sd"
    assert notify_socket_address({}) is None
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        notify_socket_address({"NOTIFY_SOCKET": "vsock:2:1234"})
    with capture_logs() as logs:
        assert not Notifier(environ={"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert [entry["event"] for entry in logs] == ["systemd.notify_unsupported"]


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """Ping twice per WatchdogSec, and only when the watchdog is meant for this process."""
    pid = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None
