"""What other writers leave in the shared folder store cannot stop a dock: a deep folder
chain, a sidecar whose name reads as a temporary file (real processes, a real folder)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dock import BWC_DOCK, Dock, make_camera, wait_until

# deeper than Python's default recursion limit (1000): a recursive walk dies on it
CHAIN_DEPTH = 1200
# stops a hung test only; start-up on a busy 2-core machine has needed about 10 s
STARTUP_DEADLINE_SECONDS = 120.0


def plant_chain(top: Path, depth: int) -> None:
    """``top/d/d/...`` ``depth`` folders deep, made one level at a time (no long paths)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _level in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("bottom.mp4", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd),
                  "wb") as bottom:
            bottom.write(b"planted")
    finally:
        os.close(fd)


def remove_chain(top: Path) -> None:
    """Undo plant_chain without recursion (shutil.rmtree recurses per level)."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        while "d" in os.listdir(fds[-1]):
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        for name in os.listdir(fds[-1]):
            os.unlink(name, dir_fd=fds[-1])
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("d", dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)
    top.rmdir()


@pytest.fixture
def deep_chain(dock: Dock) -> Iterator[Path]:
    top = dock.nas / "junk"
    plant_chain(top, CHAIN_DEPTH)
    yield top
    remove_chain(top)


def wait_for_ready(listener: socket.socket) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if b"READY=1" in listener.recv(65536):
                return
        except TimeoutError:
            continue
    raise AssertionError(f"no READY=1 within {STARTUP_DEADLINE_SECONDS} s")


def test_deep_folder_chain_stops_no_start_resync_or_remote_audit(
    dock: Dock, deep_chain: Path, tmp_path: Path
) -> None:
    """A 1,200-level folder chain in the store: the daemon still gets READY, resync and
    audit verify --remote complete, and the walk logs the part it skipped."""
    camera = dock.root / "card"
    make_camera(camera, [1000, 2000], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(0.5)
    dock.extra_environment["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    daemon = dock.start_daemon()
    try:
        wait_for_ready(listener)
    finally:
        assert dock.stop_daemon(daemon) == 0
        listener.close()
    dock.extra_environment.pop("NOTIFY_SOCKET")

    resync = dock.cli("resync", "--json", check=False)
    assert resync.returncode == 0, resync.stderr[-2000:]
    assert json.loads(resync.stdout)["actions"] == []
    audit = dock.cli("audit", "verify", "--remote", "--json", check=False)
    assert audit.returncode == 0, audit.stderr[-2000:]
    assert "storage.list.too_deep_skipped" in resync.stdout + resync.stderr
    assert (deep_chain / "d").is_dir()  # skipped, never touched


def test_startup_recovery_reads_only_this_docks_recent_folders(dock: Dock) -> None:
    """Start-up recovery removes this dock's temporary in a folder it wrote to, and does
    not look into a folder of the store it never wrote to."""
    camera = dock.root / "card"
    make_camera(camera, [1000], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    [clip] = dock.clips()
    folder = (dock.nas / clip["remote_key"]).parent
    ours = folder / "clip.MP4.0123456789abcdef.dock-test.part"
    ours.write_bytes(b"half an upload")
    elsewhere = dock.nas / "someone-else" / "deep"
    elsewhere.mkdir(parents=True)
    not_looked_at = elsewhere / "clip.MP4.0123456789abcdef.dock-test.part"
    not_looked_at.write_bytes(b"left for a hand-run resync")

    daemon = dock.start_daemon()
    try:
        wait_until(lambda: any(e.get("event") == "daemon.recovered"
                               for e in dock.log_events()), timeout=120,
                   message="start-up recovery done")
    finally:
        assert dock.stop_daemon(daemon) == 0
    [recovered] = [e for e in dock.log_events() if e.get("event") == "daemon.recovered"]
    assert recovered["storage_partials_removed"] == 1
    assert not ours.exists()
    assert not_looked_at.exists()


def test_startup_recovery_removes_a_docking_record_left_half_written(dock: Dock) -> None:
    """A docking's coverage record written when the daemon was killed (a kill -9 found it)
    leaves a temporary in the camera's record folder; the next start removes it."""
    camera = dock.root / "card"
    make_camera(camera, [1000], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    records = dock.nas / "_coverage" / "dockings" / "X1"
    assert records.is_dir()  # the ingest's own docking record lies there
    ours = records / "20261205T205932Z.6bcd21084eb6dda6.json.b15ec295cb6d8e4e.dock-test.part"
    ours.write_bytes(b'{"half": ')

    daemon = dock.start_daemon()
    try:
        wait_until(lambda: any(e.get("event") == "daemon.recovered"
                               for e in dock.log_events()), timeout=120,
                   message="start-up recovery done")
    finally:
        assert dock.stop_daemon(daemon) == 0
    assert not ours.exists()


def test_sidecar_named_part_is_uploaded_and_survives_recovery(dock: Dock) -> None:
    """A sidecar called X.part travels with its clip to central storage, and start-up
    recovery leaves the stored object alone."""
    camera = dock.root / "card"
    make_camera(camera, [1000], sidecars=False)
    [clip_path] = camera.rglob("*.MP4")
    clip_path.with_suffix(".part").write_bytes(b"a sidecar, not a temporary file")
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    [clip] = dock.clips()
    assert clip["state"] == "uploaded"
    stored = [path for path in dock.nas.rglob("*") if path.is_file()
              and path.read_bytes() == b"a sidecar, not a temporary file"]
    assert len(stored) == 1
    assert stored[0].name.endswith("_part")

    daemon = dock.start_daemon()
    try:
        wait_until(lambda: any(e.get("event") == "daemon.recovered"
                               for e in dock.log_events()), timeout=120,
                   message="start-up recovery done")
    finally:
        assert dock.stop_daemon(daemon) == 0
    assert stored[0].read_bytes() == b"a sidecar, not a temporary file"


def run_measured(dock: Dock, *arguments: str) -> tuple[int, str, int]:
    """(exit code, stdout, peak resident KiB) of one bwc-dock command (wait4's rusage)."""
    process = subprocess.Popen([BWC_DOCK, *arguments], env=dock.environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, output, usage.ru_maxrss


def test_planted_giant_sums_version_is_not_read_whole(dock: Dock) -> None:
    """A 768 MiB sparse "next version" of a SHA256SUMS list is not read into memory:
    resync stays small and writes the list beside it as the version after."""
    camera = dock.root / "card"
    make_camera(camera, [1000], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    [first] = dock.nas.rglob("SHA256SUMS.*")
    giant = first.with_name(first.name + ".v2")
    with giant.open("wb") as planted:
        planted.truncate(768 * 1024 * 1024)

    code, output, peak_kib = run_measured(dock, "resync", "--json")

    assert code == 0, output[-2000:]
    assert peak_kib < 256 * 1024, f"resync peaked at {peak_kib} KiB"
    assert first.with_name(first.name + ".v3").read_bytes() == first.read_bytes()


def test_unwritable_sums_name_does_not_stop_resync_or_later_anchors(dock: Dock) -> None:
    """A folder squatting on one docking's SHA256SUMS name: resync still rewrites the
    next docking's list and ends with its report, naming the one it could not write."""
    for serial in ("X1", "X2"):
        camera = dock.root / f"card-{serial}"
        make_camera(camera, [1000], sidecars=False)
        dock.cli("ingest", str(camera), "--camera-serial", serial, "--wait")
    lists = sorted(dock.nas.rglob("SHA256SUMS.*"), key=lambda path: path.name)
    assert [path.name for path in lists] == ["SHA256SUMS.dock-test.docking-000001",
                                             "SHA256SUMS.dock-test.docking-000002"]
    second = lists[1].read_bytes()
    for path in lists:
        path.unlink()
    lists[0].mkdir()  # squats on the first docking's name

    result = dock.cli("resync", "--json", check=False)

    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads(result.stdout)
    [problem] = report["unrepairable"]
    assert "docking 1" in problem["problem"]
    assert lists[1].read_bytes() == second
