"""structlog events reach journald's native protocol with the fields IT staff query.

Two receivers: a test socket that parses the protocol byte by byte (runs anywhere), and a
real systemd-journald started in a private journal namespace (needs root), queried back
with journalctl exactly as an operator would.
"""

from __future__ import annotations

import array
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bwc_dock.journald import (
    JournaldRenderer,
    field_name,
    journald_renderer,
    running_under_journald,
)
from tests import realparts
from tests.dock import BWC_DOCK, Dock, make_camera

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def parse_native(payload: bytes) -> list[tuple[str, bytes]]:
    """journald's side of the protocol: KEY=VALUE lines, or KEY, 64-bit LE length, value."""
    fields = []
    position = 0
    while position < len(payload):
        newline = payload.index(b"\n", position)
        line = payload[position:newline]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            position = newline + 1
        else:
            name = line
            length = int.from_bytes(payload[newline + 1 : newline + 9], "little")
            value = payload[newline + 9 : newline + 9 + length]
            assert payload[newline + 9 + length : newline + 10 + length] == b"\n"
            position = newline + 10 + length
        fields.append((name.decode(), value))
    return fields


class ProtocolSocket:
    """A datagram socket standing in for /run/systemd/journal/socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.socket.bind(self.path)
        self.socket.settimeout(5)

    def receive(self) -> dict[str, bytes]:
        """One entry, read from the datagram or from the memfd passed with it."""
        data, ancillary, _flags, _address = self.socket.recvmsg(1 << 20, socket.CMSG_SPACE(4))
        if ancillary:
            level, kind, descriptor_bytes = ancillary[0]
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            assert data == b""
            descriptor = array.array("i", descriptor_bytes)[0]
            with os.fdopen(descriptor, "rb") as memfd:
                memfd.seek(0)  # the sender's writes left the shared offset at the end
                data = memfd.read()
        return dict(parse_native(data))


@pytest.fixture
def journal_socket(tmp_path: Path) -> Iterator[ProtocolSocket]:
    receiver = ProtocolSocket(tmp_path / "socket")
    yield receiver
    receiver.socket.close()


def _logger(socket_path: str, fallback: io.StringIO | None = None) -> structlog.BoundLogger:
    renderer = JournaldRenderer(socket_path=socket_path, fallback=fallback)
    return structlog.wrap_logger(
        structlog.PrintLogger(io.StringIO()),
        processors=[structlog.processors.add_log_level, renderer],
        wrapper_class=structlog.BoundLogger,
    )


def test_event_fields_reach_the_socket(journal_socket: ProtocolSocket) -> None:
    """Event, camera, clip, hash, priority, identifier, readable message, other keys upper-cased."""
    log = _logger(journal_socket.path).bind(camera="X81234567", clip_id=42)
    log.warning("upload.retry", sha256=SHA, attempt=3, **{"next-try": "later on"})
    fields = journal_socket.receive()
    assert fields["BWC_EVENT"] == b"upload.retry"
    assert fields["BWC_CAMERA"] == b"X81234567"
    assert fields["BWC_CLIP"] == b"42"
    assert fields["BWC_SHA256"] == SHA.encode()
    assert fields["BWC_ATTEMPT"] == b"3"
    assert fields["BWC_NEXT_TRY"] == b"later on"
    assert fields["PRIORITY"] == b"4"
    assert fields["SYSLOG_IDENTIFIER"] == b"bwc-dock"
    assert fields["MESSAGE"] == (
        f"upload.retry camera=X81234567 clip_id=42 sha256={SHA} attempt=3 "
        "next-try='later on'"
    ).encode()
    assert "BWC_LEVEL" not in fields


@pytest.mark.parametrize(
    ("method", "expected"),
    [("debug", b"7"), ("info", b"6"), ("warning", b"4"), ("error", b"3"), ("critical", b"2")],
)
def test_priority_follows_the_level(
    journal_socket: ProtocolSocket, method: str, expected: bytes
) -> None:
    """PRIORITY is the syslog priority of the structlog level."""
    getattr(_logger(journal_socket.path), method)("dock.docked")
    assert journal_socket.receive()["PRIORITY"] == expected


def test_multi_line_and_hostile_values_use_the_length_form(
    journal_socket: ProtocolSocket,
) -> None:
    """A newline or a non-UTF-8 byte in a camera's file name arrives whole, not as new fields."""
    hostile = "DCIM/evil\nBWC_CAMERA=forged\x00.MP4"
    undecodable = os.fsdecode(b"DCIM/\xff\xfe.MP4")
    _logger(journal_socket.path).error("clip.refused", path=hostile, name=undecodable)
    fields = journal_socket.receive()
    assert fields["BWC_PATH"] == hostile.encode()
    assert fields["BWC_NAME"] == b"DCIM/\\udcff\\udcfe.MP4"
    assert "BWC_CAMERA" not in fields
    assert b"\n" not in fields["MESSAGE"].replace(b"\\n", b"")


def test_exception_traceback_is_a_field(journal_socket: ProtocolSocket) -> None:
    """log.exception sends the traceback as BWC_EXCEPTION at error priority."""
    log = _logger(journal_socket.path)
    try:
        raise OSError(5, "Input/output error")
    except OSError:
        log.exception("copy.failed", camera="X1")
    fields = journal_socket.receive()
    assert fields["PRIORITY"] == b"3"
    assert b"Traceback" in fields["BWC_EXCEPTION"]
    assert b"OSError: [Errno 5] Input/output error" in fields["BWC_EXCEPTION"]
    assert fields["MESSAGE"] == b"copy.failed camera=X1"


def test_entry_larger_than_a_datagram_goes_through_a_sealed_memfd(
    journal_socket: ProtocolSocket,
) -> None:
    """An entry over the socket's datagram limit still arrives, byte for byte."""
    big = "x" * (4 * 1024 * 1024)
    _logger(journal_socket.path).info("scan.listing", listing=big)
    fields = journal_socket.receive()
    assert fields["BWC_LISTING"] == big.encode()


def test_unreachable_journald_falls_back_to_a_prefixed_stderr_line(tmp_path: Path) -> None:
    """With no journald socket the event is still written, with its priority prefix."""
    fallback = io.StringIO()
    _logger(str(tmp_path / "missing"), fallback=fallback).error("storage.unreachable", camera="X1")
    line = fallback.getvalue()
    assert line.startswith("<3>storage.unreachable camera=X1 journal_error=")
    assert line.endswith("\n")


def test_field_names_are_valid_journal_fields() -> None:
    """Bound keys become [A-Z0-9_] names of at most 64 characters."""
    assert field_name("camera_serial") == "BWC_CAMERA"
    assert field_name("bytes.moved") == "BWC_BYTES_MOVED"
    assert field_name("_private") == "BWC__PRIVATE"
    assert len(field_name("k" * 100)) == 64


def test_renderer_prints_nothing_of_its_own(journal_socket: ProtocolSocket) -> None:
    """The renderer ends the chain: nothing is also printed, so journald gets each event once."""
    printed = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(printed),
        processors=[journald_renderer(socket_path=journal_socket.path)],
    )
    log.info("dock.docked")
    assert journal_socket.receive()["BWC_EVENT"] == b"dock.docked"
    assert printed.getvalue() == ""


DETECT = "import sys; from bwc_dock.journald import running_under_journald as r; print(r())"


def test_running_under_journald_compares_stderr_with_journal_stream(tmp_path: Path) -> None:
    """JOURNAL_STREAM counts only when it names the file stderr really is."""
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("w") as stderr_file:
        status = os.fstat(stderr_file.fileno())
        results = []
        for stream in (f"{status.st_dev}:{status.st_ino}", f"{status.st_dev}:1", "", "junk"):
            environment = {**os.environ, "JOURNAL_STREAM": stream}
            finished = subprocess.run(
                [sys.executable, "-c", DETECT], env=environment, stderr=stderr_file,
                capture_output=False, stdout=subprocess.PIPE, text=True, timeout=60, check=True,
            )
            results.append(finished.stdout.strip())
    assert results == ["True", "False", "False", "False"]
    assert running_under_journald(io.StringIO()) is False


# --- a real journald -----------------------------------------------------------------


@pytest.fixture
def real_journald() -> Iterator[str]:
    """systemd-journald serving a private namespace; yields the namespace name."""
    realparts.need_root()
    journald = realparts.need_command("systemd-journald")
    realparts.need_command("journalctl")
    namespace = f"bwctest{uuid.uuid4().hex[:10]}"
    runtime = Path(f"/run/systemd/journal.{namespace}")
    process = subprocess.Popen(
        [journald, namespace], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while not (runtime / "socket").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                realparts.unavailable(f"systemd-journald did not start: {process.stderr}")
            time.sleep(0.05)
        yield namespace
    finally:
        process.terminate()
        process.wait(timeout=30)
        machine_id = Path("/etc/machine-id").read_text().strip()
        for leftover in (
            runtime,
            Path(f"/var/log/journal/{machine_id}.{namespace}"),
            Path(f"/run/log/journal/{machine_id}.{namespace}"),
        ):
            shutil.rmtree(leftover, ignore_errors=True)


def _query(namespace: str, *matches: str, expected: int) -> list[dict[str, object]]:
    """Entries matching, polled until ``expected`` arrived (journald stores asynchronously)."""
    deadline = time.monotonic() + 20
    while True:
        finished = subprocess.run(
            ["journalctl", f"--namespace={namespace}", "-o", "json", "--no-pager",
             "--all", *matches],
            capture_output=True, text=True, timeout=60, check=True,
        )
        entries = [json.loads(line) for line in finished.stdout.splitlines() if line]
        if len(entries) >= expected or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)


@pytest.mark.realparts
def test_real_journald_finds_one_cameras_story(real_journald: str) -> None:
    """journalctl BWC_CAMERA=... returns that camera's events with every native field."""
    socket_path = f"/run/systemd/journal.{real_journald}/socket"
    log = _logger(socket_path)
    log.info("clip.staged", camera="X81234567", clip_id=7, sha256=SHA)
    log.error("clip.quarantined", camera="X81234567", clip_id=8, reason="hash\nmismatch")
    log.info("clip.staged", camera="Y00000001", clip_id=9, sha256=SHA)
    log.info("scan.listing", camera="X81234567", listing="y" * (1024 * 1024))

    entries = _query(real_journald, "BWC_CAMERA=X81234567", expected=3)
    events = [entry["BWC_EVENT"] for entry in entries]
    assert events == ["clip.staged", "clip.quarantined", "scan.listing"]
    staged, quarantined, listing = entries
    assert staged["BWC_CLIP"] == "7"
    assert staged["BWC_SHA256"] == SHA
    assert staged["PRIORITY"] == "6"
    assert staged["SYSLOG_IDENTIFIER"] == "bwc-dock"
    assert staged["MESSAGE"] == f"clip.staged camera=X81234567 clip_id=7 sha256={SHA}"
    assert staged["_PID"] == str(os.getpid())
    assert quarantined["PRIORITY"] == "3"
    assert quarantined["BWC_REASON"] == "hash\nmismatch"
    assert len(listing["BWC_LISTING"]) == 1024 * 1024  # through the memfd path

    by_identifier = _query(real_journald, "SYSLOG_IDENTIFIER=bwc-dock", "PRIORITY=3", expected=1)
    assert [entry["BWC_CLIP"] for entry in by_identifier] == ["8"]


# The daemon sends to journald's fixed socket path. In a private mount namespace (unshare)
# that path is made to lead to the test's journald, so the host's /run is never touched.
POINT_JOURNAL_SOCKET_AND_RUN = (
    'mount --bind "$1" "$2" && mount -t tmpfs tmpfs /run/systemd && '
    'mkdir /run/systemd/journal && ln -s "$2/socket" /run/systemd/journal/socket && '
    'shift 2 && exec "$@"'
)
# Only stop a hung test: start-up on a loaded CI machine has taken about 10 s.
DAEMON_DEADLINE_SECONDS = 120.0


@pytest.mark.realparts
def test_running_daemon_logs_to_journald_with_native_fields(
    real_journald: str, tmp_path: Path
) -> None:
    """`bwc-dock run` whose stderr is the JOURNAL_STREAM sends its events to journald:
    journalctl BWC_CAMERA=... finds a docked camera's offload, from the daemon's PID."""
    realparts.need_command("unshare")
    dock = Dock(tmp_path / "dock")
    dock.root.mkdir()
    dock.write_config()
    camera = dock.root / "camera"
    expected = make_camera(camera, [2000], sidecars=False)
    runtime_view = tmp_path / "journal-runtime"
    runtime_view.mkdir()
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr_file:
        status = os.fstat(stderr_file.fileno())
        environment = {**dock.environment(), "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        daemon = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             POINT_JOURNAL_SOCKET_AND_RUN, "sh", f"/run/systemd/journal.{real_journald}",
             str(runtime_view), BWC_DOCK, "run"],
            stdout=stderr_file, stderr=stderr_file, env=environment,
        )
    try:
        _query_until(real_journald, "BWC_EVENT=daemon.started")
        camera.rename(dock.watch_dir / "JRNL1")
        uploaded = _query_until(real_journald, "BWC_CAMERA=JRNL1", "BWC_EVENT=upload.done")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, stderr_path.read_text()[-3000:]
    [entry] = uploaded
    assert entry["_PID"] == str(daemon.pid)  # unshare and sh exec'd: the daemon itself
    assert entry["SYSLOG_IDENTIFIER"] == "bwc-dock"
    assert entry["PRIORITY"] == "6"
    assert entry["BWC_SHA256"] == next(iter(expected.values()))
    story = [e["BWC_EVENT"] for e in _query_until(real_journald, "BWC_CAMERA=JRNL1")]
    assert {"clip.discovered", "upload.done"} <= set(story), story
    assert "upload.done" not in stderr_path.read_text()  # journald only, not also on stderr


def _query_until(namespace: str, *matches: str) -> list[dict[str, object]]:
    """Entries matching, polled until at least one arrived (the daemon works at its pace)."""
    deadline = time.monotonic() + DAEMON_DEADLINE_SECONDS
    while not (entries := _query(namespace, *matches, expected=1)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no journal entry {matches} in {DAEMON_DEADLINE_SECONDS} s")
    return entries
