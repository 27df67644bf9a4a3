"""Docking end to end: real udevd, loop-device cameras, FUSE mounts, the real daemon.

Every part is real: systemd-udevd with the project's rules and the loop-identity test
rule (tests/udevharness.py), exFAT and FAT32 camera images on loop devices, mounts
through the FUSE helpers, ``bwc-dock run`` as a subprocess with the file backend and
the SQLite ledger in the test's tmp folder. Tests read what happened from the daemon's
JSON log, the ledger (``bwc-dock clips --json``), central storage on disk and
``/proc/self/mountinfo``.

The cameras here carry a USB product id of their own, chosen per test session, so a
daemon under test never takes a camera another test session on the same machine docks.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import signal
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.dock import CameraReadThrottle, Dock, central_objects, sha256_of
from tests.realparts import need_root, unavailable
from tests.udevharness import CameraBay, ClipSource, LoopCamera, populate_tree, run, settle

pytestmark = [pytest.mark.realparts, pytest.mark.timeout(120)]

VENDOR_ID = "b0c0"
PRODUCT_ID = f"{random.SystemRandom().randrange(0x1000, 0xF000):04x}"
CLEARING_PRODUCT_ID = f"{int(PRODUCT_ID, 16) + 1:04x}"  # a profile with clear_after_upload
OFFLOAD_SECONDS = 45.0
EVENT_SECONDS = 15.0
MIB = 1024 * 1024

# the harness names clips VID_20240102_0304SS: remote keys are predictable from the name
RECORDED_PATTERN = (r"VID_(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2})_"
                    r"(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})")
PROFILES: list[dict[str, Any]] = [
    {"name": "test-bay", "usb_vendor_id": VENDOR_ID, "usb_product_id": PRODUCT_ID,
     "recorded_pattern": RECORDED_PATTERN},
    {"name": "test-bay-clearing", "usb_vendor_id": VENDOR_ID,
     "usb_product_id": CLEARING_PRODUCT_ID, "recorded_pattern": RECORDED_PATTERN,
     "clear_after_upload": True},
]


def mount_points() -> list[tuple[Path, str]]:
    """(mount point, source) of every mount this process sees, from /proc/self/mountinfo."""
    entries = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-", 6)
        point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), fields[4])
        entries.append((Path(point), fields[separator + 2]))
    return entries


def timestamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


@dataclass
class UdevDock:
    """A dock whose daemon takes cameras from udev; the test's cameras come from ``bay``."""

    dock: Dock
    bay: CameraBay
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    throttle: CameraReadThrottle | None = None

    @property
    def mount_dir(self) -> Path:
        return self.dock.state_dir / "mounts"

    def camera(self, fs_type: str = "exfat", serial: str = "CAM0001", *,
               clearing: bool = False, **options: Any) -> LoopCamera:
        product = CLEARING_PRODUCT_ID if clearing else PRODUCT_ID
        return self.bay.make_camera(fs_type, serial=serial, vendor_id=VENDOR_ID,
                                    product_id=product, **options)

    def attach(self, camera: LoopCamera) -> None:
        """Dock the camera (``losetup``), at USB speed when this dock has a throttle."""
        device = self.bay.attach(camera)
        if self.throttle is not None:
            self.throttle.throttle(device)  # well before udev settles and the daemon reads

    def configure(self, *, rescan_seconds: float = 5, **dock_settings: Any) -> None:
        """udev on, no watch folders, the test profiles; ``dock_settings`` go to [dock].

        The rescan runs every 5 s, not the product's 60 s, so that tests of what only a
        rescan notices (a missed event) end in seconds; every other value is the product's.
        """
        self.dock.write_config(
            dock={"copy_workers": 2, "upload_workers": 2, **dock_settings},
            sources={"udev": True, "watch_dirs": [],
                     "rescan_interval_seconds": rescan_seconds},
            camera=PROFILES,
        )

    def start(self) -> subprocess.Popen[bytes]:
        process = self.dock.start_daemon()
        self.processes.append(process)
        self.wait_event("udev.started")
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def events(self, name: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        return [
            event for event in self.dock.log_events()
            if (name is None or event.get("event") == name)
            and all(event.get(key) == value for key, value in fields.items())
        ]

    def wait_event(self, name: str, count: int = 1, timeout: float = EVENT_SECONDS,
                   **fields: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name, **fields)
            if len(found) >= count:
                return found
            for process in self.processes:
                assert process.poll() is None, f"daemon exited {process.returncode}:\n{self.log()}"
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {count}x {name} {fields} within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def wait_for(self, condition: Callable[[], bool], message: str,
                 timeout: float = OFFLOAD_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s: {message}\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        path = self.dock.root / "daemon.log"
        return path.read_text()[-6000:] if path.exists() else "(no log)"

    def clips(self, serial: str) -> list[dict[str, Any]]:
        return self.dock.clips("--camera", serial)

    def mounted(self, camera: LoopCamera | None = None) -> list[Path]:
        """Mount points under the dock's mount dir, or of ``camera``'s loop device."""
        return [
            point for point, source in mount_points()
            if point.is_relative_to(self.mount_dir)
            or (camera is not None and camera.device is not None and source == camera.device)
        ]

    def ledger_rows(self, query: str, *parameters: Any) -> list[tuple[Any, ...]]:
        """Rows from the ledger file itself, opened read-only beside the daemon."""
        uri = f"file:{self.dock.ledger_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as connection:
            return connection.execute(query, parameters).fetchall()

    def dockings(self, serial: str) -> list[tuple[int, str | None]]:
        """(docking id, undocked_at) of the camera's dockings."""
        return [(row[0], row[1]) for row in self.ledger_rows(
            "SELECT id, undocked_at FROM dockings WHERE camera_serial = ? ORDER BY id", serial)]


@pytest.fixture
def udev_dock(dock: Dock, camera_bay: CameraBay) -> Iterator[UdevDock]:
    """The daemon takes cameras from udev with the test profiles; stopped after the test."""
    instance = UdevDock(dock, camera_bay)
    instance.configure()
    try:
        yield instance
    finally:
        instance.stop()


def expected_hashes(camera: LoopCamera) -> dict[str, str]:
    """{path on the camera: sha256} of the files the image was filled from."""
    tree = camera.image.parent / "tree"
    return {name: sha256_of(tree / name) for name in camera.files}


def stored_by_source_path(udev_dock: UdevDock, serial: str) -> dict[str, str]:
    """{path on the camera: sha256 of the object in central storage} for clips and sidecars."""
    stored = central_objects(udev_dock.dock.nas)
    result: dict[str, str] = {}
    for clip in udev_dock.clips(serial):
        key = clip["remote_key"]
        if key is None:
            continue
        result[clip["source_path"]] = stored[key]
        for sidecar in clip["sidecars"]:
            result[sidecar["source_path"]] = stored[sidecar["remote_key"]]
    return result


def all_uploaded(udev_dock: UdevDock, serial: str, count: int) -> Callable[[], bool]:
    def check() -> bool:
        clips = udev_dock.clips(serial)
        return len(clips) == count and all(c["state"] == "uploaded" for c in clips)
    return check


def assert_no_tracebacks(udev_dock: UdevDock) -> None:
    log = (udev_dock.dock.root / "daemon.log").read_text()
    assert "Traceback" not in log, log[-6000:]
    assert not udev_dock.events("worker.crashed")


# -- the cases ---------------------------------------------------------------------------


def test_docked_camera_is_offloaded_then_unmounted_and_its_docking_ended(
    udev_dock: UdevDock,
) -> None:
    """Dock -> every clip and sidecar stored with its camera SHA-256 -> unmounted, ended."""
    udev_dock.start()
    camera = udev_dock.camera("exfat", serial="DOCK0001", clip_count=3)
    udev_dock.bay.attach(camera)

    udev_dock.wait_event("dock.docked", camera="DOCK0001")
    udev_dock.wait_for(all_uploaded(udev_dock, "DOCK0001", 3), "all 3 clips uploaded")
    udev_dock.wait_event("dock.released", camera="DOCK0001")

    expected = expected_hashes(camera)
    camera_files = {k: v for k, v in expected.items() if k.startswith("DCIM/")}
    assert stored_by_source_path(udev_dock, "DOCK0001") == camera_files
    for clip in udev_dock.clips("DOCK0001"):
        assert clip["sha256"] == expected[clip["source_path"]]
    udev_dock.wait_for(lambda: not udev_dock.mounted(camera), "the camera unmounted", 10)
    udev_dock.wait_event("clip.uploaded", 3)
    udev_dock.wait_for(lambda: all(ended for _, ended in udev_dock.dockings("DOCK0001")),
                       "the docking ended in the ledger", 10)
    assert len(udev_dock.dockings("DOCK0001")) == 1
    assert not list(udev_dock.dock.staging_dir.rglob("*.part"))
    assert_no_tracebacks(udev_dock)


def filesystem_uuid(camera: LoopCamera) -> str:
    """The volume's UUID as blkid (util-linux) reads it from the image."""
    return run("blkid", "-o", "value", "-s", "UUID", str(camera.image)).strip()


def camera_audit(udev_dock: UdevDock, serial: str, event: str) -> list[dict[str, Any]]:
    return [json.loads(details) for (details,) in udev_dock.ledger_rows(
        "SELECT details FROM audit_log WHERE camera_serial = ? AND event = ? ORDER BY id",
        serial, event)]


def test_custody_records_name_the_device_and_a_changed_identity_is_audited(
    udev_dock: UdevDock,
) -> None:
    """The USB ids, profile and filesystem the dock saw reach dock.docked, every custody
    record and `cameras --json`; the same serial docked again as another device (another
    filesystem) is a camera.identity_changed audit event and a warning."""
    udev_dock.start()
    first = udev_dock.camera("exfat", serial="IDENT001", clip_count=1)
    first_uuid = filesystem_uuid(first)
    udev_dock.bay.attach(first)
    udev_dock.wait_for(all_uploaded(udev_dock, "IDENT001", 1), "the first camera's clip")
    udev_dock.wait_event("dock.released", camera="IDENT001")
    seen = {"profile": "test-bay", "usb_vendor_id": VENDOR_ID, "usb_product_id": PRODUCT_ID,
            "fs_type": "exfat", "fs_label": "BWCCAM", "fs_uuid": first_uuid}
    [docked] = udev_dock.events("dock.docked", camera="IDENT001")
    assert {name: docked[name] for name in seen} == seen
    [clip] = udev_dock.clips("IDENT001")
    manifest = json.loads((udev_dock.dock.nas / udev_dock.dock.manifest_key(clip)).read_text())
    assert manifest["device"] == seen
    listed = {c["serial"]: c for c in json.loads(udev_dock.dock.cli("cameras", "--json").stdout)}
    assert listed["IDENT001"]["device"] == {k: v for k, v in seen.items() if k != "profile"}
    assert camera_audit(udev_dock, "IDENT001", "camera.identity_changed") == []

    udev_dock.bay.detach(first)
    second = udev_dock.camera("vfat", serial="IDENT001", clip_count=1)
    second_uuid = filesystem_uuid(second)
    udev_dock.bay.attach(second)
    udev_dock.wait_event("dock.docked", 2, camera="IDENT001")
    udev_dock.wait_for(lambda: bool(camera_audit(udev_dock, "IDENT001", "camera.identity_changed")),
                       "the identity change audited")
    [changed] = camera_audit(udev_dock, "IDENT001", "camera.identity_changed")
    assert changed["changed"] == {"fs_type": ["exfat", "vfat"],
                                  "fs_uuid": [first_uuid, second_uuid]}
    [warning] = udev_dock.events("camera.identity_changed", camera="IDENT001")
    assert warning["level"] == "warning"


BIG_FILE_BYTES = 32 * MIB
CAMERA_BYTES_PER_SECOND = 16_000_000  # a USB 2 camera: a 32 MiB file takes two seconds


@pytest.fixture
def slow_udev_dock(udev_dock_throttle: CameraReadThrottle, udev_dock: UdevDock) -> UdevDock:
    """A udev dock whose cameras read at USB speed, so a yank can land mid-copy."""
    udev_dock.throttle = udev_dock_throttle
    return udev_dock


@pytest.fixture
def udev_dock_throttle() -> Iterator[CameraReadThrottle]:
    need_root()
    if not CameraReadThrottle.available():
        unavailable("needs the blkio cgroup (v1) to read loop devices at a camera's speed")
    throttle = CameraReadThrottle(CAMERA_BYTES_PER_SECOND)
    try:
        yield throttle
    finally:
        throttle.close()


def _largest_part(udev_dock: UdevDock) -> int:
    """Bytes in the largest partial copy in staging now (0 when there is none)."""
    sizes = []
    for part in udev_dock.dock.staging_dir.rglob("*.part"):
        try:
            sizes.append(part.stat().st_size)
        except FileNotFoundError:
            continue  # renamed into place meanwhile
    return max(sizes, default=0)


def big_sidecar_tree(clips: ClipSource) -> Callable[[Path], list[str]]:
    """A small clip, then one whose .GPS sidecar is big: the yank lands while the first is
    verified from staging and the second clip is already in place."""
    def populate(tree: Path) -> list[str]:
        written = []
        for number, sidecar_size in ((0, 1000), (1, BIG_FILE_BYTES)):
            stem = f"DCIM/100BWC/VID_20240102_03040{number}"
            clips.write_clip(tree / f"{stem}.MP4")
            (tree / f"{stem}.GPS").write_bytes(random.randbytes(sidecar_size))
            written += [f"{stem}.MP4", f"{stem}.GPS"]
        return written
    return populate


@pytest.mark.parametrize(("fs_type", "kill_fuse", "big"), [
    ("exfat", True, "clip"), ("vfat", False, "clip"), ("exfat", False, "sidecar")])
def test_yank_mid_copy_stops_cleanly_and_redock_resumes(
    slow_udev_dock: UdevDock, fs_type: str, kill_fuse: bool, big: str,
) -> None:
    """Yanked mid-copy: the yank itself stops the copier, nothing staged; docked again,
    it resumes."""
    udev_dock = slow_udev_dock
    # No rescan during the test: the copier can then hear of the yank only from the
    # yank itself (its reads failing, the remove event), never from a periodic look.
    udev_dock.configure(rescan_seconds=3600)
    udev_dock.start()
    if big == "clip":
        camera = udev_dock.camera(fs_type, serial="YANK0001", clip_count=1,
                                  padding=BIG_FILE_BYTES)
    else:
        camera = udev_dock.camera(fs_type, serial="YANK0001",
                                  populate=big_sidecar_tree(udev_dock.bay.clips))
    clip_count = 1 if big == "clip" else 2
    udev_dock.attach(camera)
    copying = udev_dock.wait_event("clip.copying", clip_count, camera="YANK0001")[-1]
    # a quarter into the big file, seen in staging rather than guessed from a sleep
    udev_dock.wait_for(lambda: _largest_part(udev_dock) >= BIG_FILE_BYTES // 4,
                       "a quarter of the big file staged")
    udev_dock.bay.yank(camera, kill_fuse=kill_fuse)

    # present within EVENT_SECONDS, with no rescan for an hour: stopped by the yank itself
    interrupted = udev_dock.wait_event("copy.interrupted", camera="YANK0001")
    assert interrupted[0]["clip"] == copying["clip"]
    udev_dock.wait_event("dock.undocked", camera="YANK0001")
    udev_dock.bay.wait_detached(camera)
    time.sleep(1.0)  # anything that would still follow the yank has time to show now
    clips = {c["id"]: c for c in udev_dock.clips("YANK0001")}
    assert len(clips) == clip_count
    assert clips.pop(copying["clip"])["state"] == "discovered"
    # a clip read before the yank was verified from staging and goes on to be uploaded
    assert all(c["state"] in ("staged", "uploading", "uploaded") for c in clips.values())
    yanked_folder = udev_dock.dock.staging_dir / f"clips/{copying['clip']:08d}"
    assert not yanked_folder.exists() or not list(yanked_folder.iterdir())
    assert not list(udev_dock.dock.staging_dir.rglob("*.part"))
    assert len(udev_dock.events("copy.interrupted")) == 1
    assert not udev_dock.events("copy.failed")
    assert_no_tracebacks(udev_dock)
    assert not udev_dock.mounted(camera)
    assert [ended is not None for _, ended in udev_dock.dockings("YANK0001")] == [True]

    udev_dock.attach(camera)
    udev_dock.wait_event("dock.docked", 2, camera="YANK0001")
    udev_dock.wait_for(all_uploaded(udev_dock, "YANK0001", clip_count),
                       "the yanked clip uploaded")
    expected = expected_hashes(camera)
    assert stored_by_source_path(udev_dock, "YANK0001") == {
        k: v for k, v in expected.items() if k.startswith("DCIM/")}
    assert copying["clip"] in {c["id"] for c in udev_dock.clips("YANK0001")}  # resumed
    udev_dock.wait_for(lambda: not udev_dock.mounted(camera), "the camera unmounted", 10)
    assert_no_tracebacks(udev_dock)


def copy_interval(udev_dock: UdevDock, serial: str) -> tuple[float, float]:
    """(first clip.copying, last clip.staged) of a camera, from the daemon's log timestamps."""
    started = [timestamp(e) for e in udev_dock.events("clip.copying", camera=serial)]
    staged = [timestamp(e) for e in udev_dock.events("clip.staged", camera=serial)]
    return min(started), max(staged)


def test_two_cameras_are_offloaded_in_parallel_and_their_uploads_interleave(
    udev_dock: UdevDock,
) -> None:
    """exFAT and FAT32 docked together: copy intervals overlap, uploads alternate cameras."""
    with udev_dock.dock.config_path.open("a") as config:  # uploads slower than copies, so
        config.write("[[storage.bandwidth]]\nstart = 00:00:00\nend = 00:00:00\n"  # both
                     "limit_mb_per_s = 20\n")  # cameras' clips wait their turn together
    udev_dock.start()
    exfat = udev_dock.camera("exfat", serial="PAR0EXF", clip_count=3, padding=24 * MIB)
    fat = udev_dock.camera("vfat", serial="PAR0FAT", clip_count=3, padding=24 * MIB)
    udev_dock.bay.attach(exfat)
    udev_dock.bay.attach(fat)

    for serial, camera in (("PAR0EXF", exfat), ("PAR0FAT", fat)):
        udev_dock.wait_for(all_uploaded(udev_dock, serial, 3), f"{serial} uploaded")
        assert stored_by_source_path(udev_dock, serial) == {
            k: v for k, v in expected_hashes(camera).items() if k.startswith("DCIM/")}

    exfat_start, exfat_end = copy_interval(udev_dock, "PAR0EXF")
    fat_start, fat_end = copy_interval(udev_dock, "PAR0FAT")
    overlap = min(exfat_end, fat_end) - max(exfat_start, fat_start)
    assert overlap > 0, (exfat_start, exfat_end, fat_start, fat_end)
    copiers = {e["owner"] for e in udev_dock.events("clip.copying")}
    assert len(copiers) == 2  # one copier per camera
    uploads = [e["camera"] for e in udev_dock.events("clip.uploading")]
    switches = sum(1 for before, after in itertools.pairwise(uploads)
                   if before != after)
    assert switches >= 2, uploads  # not one camera's uploads, then the other's
    udev_dock.wait_for(lambda: not udev_dock.mounted(), "both cameras unmounted", 10)
    assert_no_tracebacks(udev_dock)


def test_camera_present_at_start_is_offloaded_and_unknown_device_never_mounted(
    udev_dock: UdevDock,
) -> None:
    """Coldplug: a camera docked before the daemon starts is offloaded; an unknown one is not."""
    camera = udev_dock.camera("vfat", serial="COLD0001", clip_count=2)
    stranger = udev_dock.bay.make_camera("exfat", serial="UNKNOWN1", vendor_id="dead",
                                         product_id="beef", clip_count=1)
    udev_dock.bay.attach(camera)
    udev_dock.bay.attach(stranger)
    settle()
    udev_dock.start()

    udev_dock.wait_for(all_uploaded(udev_dock, "COLD0001", 2), "the coldplugged camera offloaded")
    unknown = udev_dock.wait_event("dock.unknown_device", device=stranger.device)
    assert (unknown[0]["vendor_id"], unknown[0]["product_id"]) == ("dead", "beef")
    # udev repeats itself, and the daemon rescans: the stranger is still ignored, and quietly
    udev_dock.bay.trigger_change(stranger)
    deadline = time.monotonic() + 6  # past one rescan interval
    while time.monotonic() < deadline:
        assert not [p for p, source in mount_points() if source == stranger.device]
        time.sleep(0.1)
    assert len(udev_dock.events("dock.unknown_device", device=stranger.device)) == 1
    assert udev_dock.clips("UNKNOWN1") == []
    assert not udev_dock.events("dock.docked", device=stranger.device)
    assert_no_tracebacks(udev_dock)


@contextlib.contextmanager
def inspected(camera: LoopCamera) -> Iterator[Path]:
    """The (detached) camera image's files, mounted read-only under a name no rule claims."""
    copy = camera.image.with_name("inspect.img")
    run("cp", "--sparse=always", camera.image, copy)
    mount_point = camera.image.parent / "inspect"
    mount_point.mkdir()
    device = run("losetup", "--find", "--show", "--read-only", copy).strip()
    try:
        run("mount", "-t", camera.fs_type, "-o", "ro", device, mount_point)
        try:
            yield mount_point
        finally:
            run("umount", mount_point)
    finally:
        run("losetup", "--detach", device)


def files_under(root: Path, camera: LoopCamera) -> set[str]:
    # fusefat shows a FAT volume label as an empty file in the root: not the camera's
    return {str(path.relative_to(root)) for path in root.rglob("*")
            if path.is_file() and str(path.relative_to(root)) != camera.label}


def with_extra_files(clips: ClipSource, extra: Sequence[str]) -> Callable[[Path], list[str]]:
    """The harness's camera tree plus files that are neither clips nor their sidecars."""
    def populate(tree: Path) -> list[str]:
        written = populate_tree(tree, clips, count=3)
        for name in extra:
            (tree / name).write_bytes(b"not a clip\n")
        return [*written, *extra, "SYSTEM/DEVICE.TXT"]
    return populate


def test_clear_after_upload_deletes_exactly_the_verified_clips(udev_dock: UdevDock) -> None:
    """Every clip verified centrally: its clip and sidecars leave the camera, nothing else."""
    udev_dock.start()
    extra = ["DCIM/100BWC/INDEX.DAT", "DCIM/OTHER.TXT"]
    camera = udev_dock.camera("exfat", serial="CLEAR001", clearing=True,
                              populate=with_extra_files(udev_dock.bay.clips, extra))
    udev_dock.bay.attach(camera)

    def all_cleared() -> bool:
        clips = udev_dock.clips("CLEAR001")
        return len(clips) == 3 and all(c["state"] == "cleared" for c in clips)

    udev_dock.wait_for(all_cleared, "all 3 clips cleared from the camera")
    udev_dock.wait_event("dock.released", camera="CLEAR001")
    cleared = udev_dock.events("clip.cleared_from_camera", camera="CLEAR001")
    clip_ids = sorted(c["id"] for c in udev_dock.clips("CLEAR001"))
    assert sorted(e["clip"] for e in cleared) == clip_ids
    assert all(e["files"] == 3 for e in cleared)  # the clip, its .GPS and its .JPG
    assert len(udev_dock.events("mount.writable")) == 1  # one read-write window
    udev_dock.wait_for(lambda: not udev_dock.mounted(camera), "the camera unmounted", 10)
    stored = stored_by_source_path(udev_dock, "CLEAR001")
    expected = expected_hashes(camera)
    assert stored == {k: v for k, v in expected.items()
                      if k.startswith("DCIM/100BWC/VID_")}
    audited = udev_dock.ledger_rows(
        "SELECT clip_id, details FROM audit_log WHERE event = 'clip.cleared' ORDER BY clip_id")
    assert [row[0] for row in audited] == clip_ids  # each deletion is an audit event
    for _, details in audited:
        assert len(json.loads(details)["deleted"]) == 3
    assert udev_dock.dock.cli("audit", "verify").returncode == 0

    udev_dock.bay.detach(camera)
    udev_dock.bay.wait_detached(camera)
    with inspected(camera) as root:
        assert files_under(root, camera) == {*extra, "SYSTEM/DEVICE.TXT"}
    assert_no_tracebacks(udev_dock)


def test_camera_with_a_quarantined_clip_keeps_everything(udev_dock: UdevDock) -> None:
    """A clip whose central key holds other bytes is quarantined; the camera is not cleared."""
    udev_dock.start()
    camera = udev_dock.camera("vfat", serial="QUAR0001", clearing=True, clip_count=2)
    # the key template is {camera}/{recorded:%Y/%m/%d}/{stem}.{sha16}{ext} with the date
    # from the file name: the key of the second clip's content, someone else's bytes in it
    name = "VID_20240102_030401"
    sha16 = sha256_of(camera.image.parent / "tree" / "DCIM" / "100BWC" / f"{name}.MP4")[:16]
    conflicting = udev_dock.dock.nas / f"QUAR0001/2024/01/02/{name}.{sha16}.MP4"
    conflicting.parent.mkdir(parents=True)
    conflicting.write_bytes(b"someone else's object at our key")
    udev_dock.bay.attach(camera)

    def settled() -> bool:
        states = {c["id"]: c["state"] for c in udev_dock.clips("QUAR0001")}
        return states == {1: "uploaded", 2: "quarantined"}

    udev_dock.wait_for(settled, "clip 1 uploaded and clip 2 quarantined")
    udev_dock.wait_event("dock.released", camera="QUAR0001")
    udev_dock.wait_for(lambda: not udev_dock.mounted(camera), "the camera unmounted", 10)
    assert not udev_dock.events("clip.cleared_from_camera")
    assert not udev_dock.events("mount.writable")
    assert conflicting.read_bytes() == b"someone else's object at our key"

    udev_dock.bay.detach(camera)
    udev_dock.bay.wait_detached(camera)
    with inspected(camera) as root:
        on_camera = {name: sha256_of(root / name) for name in files_under(root, camera)}
    tree = camera.image.parent / "tree"
    assert on_camera == {name: sha256_of(tree / name) for name in files_under(tree, camera)}
    assert len(on_camera) == 7  # two clips with two sidecars each, and SYSTEM/DEVICE.TXT


HOSTILE_NAMES = [
    "..MP4",
    ".. .. ..MP4",
    "%2e%2e%2f%2e%2e%2fescape.MP4",
    "..%5c..%5cwin.MP4",
    "$(touch PWNED);`id`.MP4",
    "-rf --no-preserve-root.MP4",
    "L" * 251 + ".MP4",  # 255 bytes, the longest name FAT and exFAT allow
]
EXFAT_ONLY_NAMES = ["\u202eKCATTA.MP4", "ünïcødé 名前.MP4"]
SHOWN_IN_LEDGER = {"DCIM/100BWC/\u202eKCATTA.MP4": "DCIM/100BWC/\\u202eKCATTA.MP4"}
DEEP_DIRECTORIES = "DCIM/" + "/".join(f"D{level}" for level in range(1, 11))
MAX_SCAN_DEPTH = 6


def hostile_tree(clips: ClipSource, fs_type: str) -> Callable[[Path], list[str]]:
    """Good clips, clips with hostile names (real MP4s: evidence too), one clip too deep."""
    names = HOSTILE_NAMES + (EXFAT_ONLY_NAMES if fs_type == "exfat" else [])

    def populate(tree: Path) -> list[str]:
        written = populate_tree(tree, clips, count=2)
        for name in names:
            clips.write_clip(tree / "DCIM" / "100BWC" / name)
            written.append(f"DCIM/100BWC/{name}")
        clips.write_clip(tree / DEEP_DIRECTORIES / "DEEP.MP4")
        written.append(f"{DEEP_DIRECTORIES}/DEEP.MP4")
        return written
    return populate


def files_outside(root: Path, *kept: Path) -> set[Path]:
    return {path for path in root.rglob("*")
            if path.is_file() and not any(path.is_relative_to(k) for k in kept)}


@pytest.mark.parametrize("fs_type", ["exfat", "vfat"])
def test_hostile_image_writes_nothing_outside_staging_and_good_clips_arrive(
    udev_dock: UdevDock, fs_type: str,
) -> None:
    """Traversal-looking, 255-byte and odd names, deep folders: stored safely or refused."""
    udev_dock.configure(max_scan_depth=MAX_SCAN_DEPTH)
    camera = udev_dock.camera(fs_type, serial="HOST0001",
                              populate=hostile_tree(udev_dock.bay.clips, fs_type))
    root = udev_dock.dock.root
    state, nas = udev_dock.dock.state_dir, udev_dock.dock.nas
    daemon_log = root / "daemon.log"
    before = files_outside(root, state, nas, daemon_log)
    udev_dock.start()
    udev_dock.bay.attach(camera)

    videos = [n for n in camera.files if n.endswith(".MP4") and not n.startswith(DEEP_DIRECTORIES)]
    udev_dock.wait_for(all_uploaded(udev_dock, "HOST0001", len(videos)), "every clip uploaded")
    udev_dock.wait_event("dock.released", camera="HOST0001")

    clips = udev_dock.clips("HOST0001")
    expected = expected_hashes(camera)
    # the ledger's source_path of each name: as written, but for the right-to-left
    # override, which it holds as the printable escape \u202e
    shown = {SHOWN_IN_LEDGER.get(name, name): name for name in videos}
    assert sorted(c["source_path"] for c in clips) == sorted(shown)
    for clip in clips:
        assert clip["sha256"] == expected[shown[clip["source_path"]]]
    good = {k: v for k, v in expected.items() if k.startswith("DCIM/100BWC/VID_")}
    stored = stored_by_source_path(udev_dock, "HOST0001")
    assert {k: stored[k] for k in good} == good
    refused = udev_dock.events("scan.refused")
    assert [e["reason"] for e in refused] == ["too deep"], refused
    assert refused[0]["path"].startswith("DCIM/D1/")

    # every byte written went to staging or to the camera's folder in central storage
    # (and the dock's own fleet status document and signing key, named by the dock id,
    # not the camera)
    assert files_outside(root, state, nas, daemon_log) == before
    assert not (Path.cwd() / "PWNED").exists()
    fleet_folder = nas / "_fleet"
    assert sorted(str(p.relative_to(fleet_folder)) for p in fleet_folder.rglob("*")) == [
        "dock-test.json", "keys", "keys/dock-test.pub"
    ]
    for path in nas.rglob("*"):
        relative = path.relative_to(nas)
        if path.is_relative_to(fleet_folder) or path.is_relative_to(nas / "_coverage"):
            continue  # the dock's status document; its docking record (a serial it made safe)
        if relative == Path(".bwc-dock-store"):
            continue  # the share's marker file, put there by the admin (the test)
        assert relative.parts[0] == "HOST0001"
        assert re.fullmatch(r"[A-Za-z0-9._/-]+", str(relative)), relative
        assert ".." not in relative.parts
    staged = [p for p in udev_dock.dock.staging_dir.rglob("*") if p.is_file()]
    assert staged
    for path in staged:
        relative = path.relative_to(udev_dock.dock.staging_dir)
        assert re.fullmatch(r"clips/\d{8}/[A-Za-z0-9._-]+", str(relative)), relative
    assert not udev_dock.mounted()
    assert_no_tracebacks(udev_dock)


@pytest.mark.parametrize("fs_type", ["exfat", "vfat"])
def test_daemon_killed_mid_copy_cleans_its_stale_mount_and_resumes(
    slow_udev_dock: UdevDock, fs_type: str,
) -> None:
    """kill -9 with a camera mounted: the restart unmounts the leftover, docks again, resumes."""
    udev_dock = slow_udev_dock
    first = udev_dock.start()
    camera = udev_dock.camera(fs_type, serial="CRASH001", clip_count=1, padding=BIG_FILE_BYTES)
    udev_dock.attach(camera)
    udev_dock.wait_event("clip.copying", camera="CRASH001")
    # bytes really in flight when the kill lands (seen in staging, not assumed after a sleep)
    udev_dock.wait_for(lambda: _largest_part(udev_dock) > 0, "the copy under way")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    udev_dock.processes.remove(first)
    assert udev_dock.mounted(camera)  # the FUSE helper outlives the daemon: a stale mount

    udev_dock.start()
    udev_dock.wait_event("mount.stale_cleaned")
    udev_dock.wait_for(all_uploaded(udev_dock, "CRASH001", 1), "the clip uploaded after restart")
    assert stored_by_source_path(udev_dock, "CRASH001") == {
        k: v for k, v in expected_hashes(camera).items() if k.startswith("DCIM/")}
    udev_dock.wait_event("dock.released", camera="CRASH001")
    udev_dock.wait_for(lambda: not udev_dock.mounted(camera), "the camera unmounted", 10)
    assert not list(udev_dock.dock.staging_dir.rglob("*.part"))
    # the daemon releases the camera (dock.released, the unmount), then ends the docking
    udev_dock.wait_for(lambda: all(ended for _, ended in udev_dock.dockings("CRASH001")),
                       "both dockings ended in the ledger")
    assert len(udev_dock.events("dock.docked", camera="CRASH001")) == 2
    assert_no_tracebacks(udev_dock)


def loop_fat_directory(image: Path, parent: str, child: str) -> None:
    """Corrupt a FAT32 image so that ``parent/child`` is ``parent`` itself: a directory loop.

    FAT has no symlinks; a directory entry whose start cluster is an ancestor's is how a
    directory loop happens on a camera's card (corruption, or a card made to hurt).
    Names are 8.3 upper case, directly under the root.
    """
    def short(name: str) -> bytes:
        return name.upper().ljust(11).encode()

    with image.open("r+b") as handle:
        boot = handle.read(512)
        bytes_per_sector, = struct.unpack_from("<H", boot, 11)
        reserved, = struct.unpack_from("<H", boot, 14)
        fat_size, root_cluster = struct.unpack_from("<I", boot, 36)[0], struct.unpack_from(
            "<I", boot, 44)[0]
        cluster_bytes = bytes_per_sector * boot[13]
        data_start = (reserved + boot[16] * fat_size) * bytes_per_sector

        def entry(cluster: int, name: bytes) -> tuple[int, int]:
            start = data_start + (cluster - 2) * cluster_bytes
            handle.seek(start)
            block = handle.read(cluster_bytes)
            for at in range(0, cluster_bytes, 32):
                if block[at:at + 11] == name:
                    high, = struct.unpack_from("<H", block, at + 20)
                    low, = struct.unpack_from("<H", block, at + 26)
                    return start + at, high << 16 | low
            raise AssertionError(f"{name!r} not in cluster {cluster}")

        _, parent_cluster = entry(root_cluster, short(parent))
        child_entry, _ = entry(parent_cluster, short(child))
        handle.seek(child_entry + 20)
        handle.write(struct.pack("<H", parent_cluster >> 16))
        handle.seek(child_entry + 26)
        handle.write(struct.pack("<H", parent_cluster & 0xFFFF))


def test_fat_directory_loop_is_refused_and_each_clip_taken_once(udev_dock: UdevDock) -> None:
    """DCIM/LOOP is DCIM again: the walk ends, and each clip is offloaded exactly once."""
    def populate(tree: Path) -> list[str]:
        written = populate_tree(tree, udev_dock.bay.clips, count=2)
        (tree / "DCIM" / "LOOP").mkdir()
        (tree / "DCIM" / "LOOP" / "PLACE.TXT").write_text("replaced by the loop\n")
        return written

    camera = udev_dock.camera("vfat", serial="LOOP0001", populate=populate)
    loop_fat_directory(camera.image, "DCIM", "LOOP")
    udev_dock.start()
    udev_dock.bay.attach(camera)

    udev_dock.wait_event("dock.scanned", camera="LOOP0001", timeout=30)
    udev_dock.wait_event("dock.released", camera="LOOP0001", timeout=OFFLOAD_SECONDS)
    clips = udev_dock.clips("LOOP0001")
    assert sorted(c["source_path"] for c in clips) == [
        "DCIM/100BWC/VID_20240102_030400.MP4", "DCIM/100BWC/VID_20240102_030401.MP4"]
    assert all(c["state"] == "uploaded" for c in clips)
    assert any("loop" in e["reason"] for e in udev_dock.events("scan.refused"))


def test_camera_without_a_readable_filesystem_raises_one_alarm_and_no_retry_storm(
    udev_dock: UdevDock,
) -> None:
    """A camera whose boot sector is gone: one error, an alarm, no mount per rescan;
    the alarm clears when the camera is taken out."""
    udev_dock.start()
    camera = udev_dock.camera("vfat", serial="CORRUPT01", clip_count=1)
    with camera.image.open("r+b") as image:
        image.write(bytes(4096))  # boot sector and FSInfo zeroed: no filesystem signature
    udev_dock.bay.attach(camera)

    failed = udev_dock.wait_event("dock.mount_failed", device=camera.device)
    assert failed[0]["level"] == "error"
    assert "no filesystem" in failed[0]["error"]
    raised = udev_dock.wait_event("alarm.raised", alarm="camera_unmountable")
    assert raised[0]["camera"] == "CORRUPT01"
    assert raised[0]["level"] == "error"
    # rescans come every 5 s here: after 12 s at least two have looked at the camera
    # again, and before the fix each one tried to mount it and logged another error
    udev_dock.wait_for(lambda: _seconds_since(failed[0]) > 12, "two rescan intervals", 30)
    assert len(udev_dock.events("dock.mount_failed", device=camera.device)) == 1
    assert len(udev_dock.events("alarm.raised", alarm="camera_unmountable")) == 1
    assert not udev_dock.mounted(camera)
    assert not udev_dock.events("dock.docked", camera="CORRUPT01")

    udev_dock.bay.detach(camera)
    udev_dock.wait_event("alarm.cleared", alarm="camera_unmountable")
    assert_no_tracebacks(udev_dock)


def _seconds_since(event: dict[str, Any]) -> float:
    return time.time() - timestamp(event)
