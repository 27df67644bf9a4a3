"""Real-parts harness for docking: udevd with the project's rules, loop-device cameras.

A camera here is a FAT32 or exFAT image with real MP4 clips (ffmpeg) and sidecars,
attached with ``losetup``. A test rule gives the loop device the USB identity a real
camera would carry (``ID_BUS=usb``, ``ID_VENDOR_ID``, ``ID_MODEL_ID``,
``ID_SERIAL_SHORT``), read from the image's file name:
``bwccam-<vendor>-<product>-<serial>.img``. Everything is undone in finalizers, also
when a test fails: mounts under the test's mount dir, loop devices of our images, rule
files, and udevd itself when this harness started it.

Use from a test module::

    from tests.udevharness import camera_bay, clip_source, udevd  # noqa: F401 (fixtures)

and then ``bay = camera_bay``; ``camera = bay.make_camera("exfat", serial="X81234567")``;
``bay.attach(camera)``; ``bay.yank(camera)``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.realparts import need_command, need_root, unavailable

REPO = Path(__file__).resolve().parent.parent
PROJECT_RULES = REPO / "udev-rules" / "99-bwc-dock.rules"
RULES_DIR = Path("/run/udev/rules.d")
HELPER_DIR = Path("/run/bwc-dock-test")
UDEVD = "/lib/systemd/systemd-udevd"
# The identity of the shipped example profile "generic-msc" (udev-rules/99-bwc-dock.rules).
CAMERA_VENDOR_ID = "1234"
CAMERA_PRODUCT_ID = "5678"
UNKNOWN_VENDOR_ID = "dead"
UNKNOWN_PRODUCT_ID = "beef"
HIDDEN_USB_ID = "hidden"  # the test rule gives such a loop device no ID_VENDOR_ID/ID_MODEL_ID
EVENT_TIMEOUT_SECONDS = 15.0
COMMAND_TIMEOUT_SECONDS = 60.0

LOOP_IDENTITY_HELPER = """#!/bin/sh
# bwc-dock TEST ONLY: give a loop device the USB identity its backing file announces,
# bwccam-<vendor>-<product>-<serial>.img (serial "none": the camera has none).
# Vendor and product "hidden": USB storage whose block device udev gave no USB ids, so
# bwc-dock has to walk up to the USB parent for them.
name=${1##*/}
name=${name%.img}
IFS=-
set -- $name
[ "$1" = bwccam ] || exit 0
if [ "$2$3" = hiddenhidden ]; then
    echo ID_BUS=usb
    case "$4" in ''|none|*[!A-Za-z0-9]*) ;; *) echo ID_SERIAL_SHORT=$4;; esac
    exit 0
fi
case "$2$3" in *[!0-9a-f]*) exit 0;; esac
[ ${#2} -eq 4 ] && [ ${#3} -eq 4 ] || exit 0
echo ID_BUS=usb
echo ID_VENDOR_ID=$2
echo ID_MODEL_ID=$3
case "$4" in ''|none|*[!A-Za-z0-9]*) ;; *) echo ID_SERIAL_SHORT=$4;; esac
"""

LOOP_IDENTITY_RULE = (
    '# bwc-dock TEST ONLY: loop devices backed by bwccam-*.img pose as USB cameras.\n'
    'ACTION!="remove", SUBSYSTEM=="block", KERNEL=="loop[0-9]*", ENV{DEVTYPE}=="disk", '
    'TEST=="loop/backing_file", ATTR{loop/backing_file}=="*/bwccam-*.img", '
    'IMPORT{program}="%s %%s{loop/backing_file}"\n'
)


def run(*arguments: str | Path, timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
    """Run a command; fail with its stderr when it fails."""
    completed = subprocess.run(
        [str(argument) for argument in arguments],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, arguments))} -> {completed.returncode}: {completed.stderr.strip()}"
        )
    return completed.stdout


def wait_until(predicate: Callable[[], bool], timeout: float = EVENT_TIMEOUT_SECONDS,
               interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def settle() -> None:
    run("udevadm", "settle", "--timeout=20", timeout=30)


# -- udevd ---------------------------------------------------------------------------------


@dataclass
class UdevDaemon:
    """A running systemd-udevd with the project's rules and the loop-identity test rule."""

    started_here: bool
    rule_files: list[Path] = field(default_factory=list)

    def reload(self) -> None:
        run("udevadm", "control", "--reload")


def _udevd_running() -> bool:
    completed = subprocess.run(["udevadm", "control", "--ping", "--timeout=2"],
                               capture_output=True, timeout=10, check=False)
    return completed.returncode == 0


def start_udevd() -> UdevDaemon:
    need_root()
    need_command("udevadm")
    if not Path(UDEVD).exists():
        unavailable(f"needs {UDEVD} (Debian package udev)")
    started = False
    if not _udevd_running():
        run(UDEVD, "--daemon")
        wait_until(_udevd_running, what="udevd to answer")
        started = True
    daemon = UdevDaemon(started_here=started)
    suffix = os.getpid()
    RULES_DIR.mkdir(parents=True, exist_ok=True)
    HELPER_DIR.mkdir(parents=True, exist_ok=True)
    helper = HELPER_DIR / f"loop-identity-{suffix}"
    helper.write_text(LOOP_IDENTITY_HELPER)
    helper.chmod(0o755)
    test_rule = RULES_DIR / f"98-bwc-dock-test-loop-{suffix}.rules"
    test_rule.write_text(LOOP_IDENTITY_RULE % helper)
    # the pid suffix keeps parallel test sessions from removing each other's rules
    project_rule = RULES_DIR / f"99-bwc-dock-{suffix}.rules"
    shutil.copyfile(PROJECT_RULES, project_rule)
    daemon.rule_files = [test_rule, project_rule, helper]
    daemon.reload()
    return daemon


def stop_udevd(daemon: UdevDaemon) -> None:
    for path in daemon.rule_files:
        path.unlink(missing_ok=True)
    with contextlib.suppress(RuntimeError):
        daemon.reload()
    if daemon.started_here:
        subprocess.run(["udevadm", "control", "--exit"], timeout=20, check=False)


@pytest.fixture(scope="session")
def udevd() -> Iterator[UdevDaemon]:
    daemon = start_udevd()
    try:
        yield daemon
    finally:
        stop_udevd(daemon)


# -- clips ---------------------------------------------------------------------------------


class ClipSource:
    """Real MP4 clips from ffmpeg; each copy made distinct by a trailing MP4 ``free`` box."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._base: Path | None = None
        self._counter = 0
        self._lock = threading.Lock()

    def base_clip(self) -> Path:
        if self._base is None:
            need_command("ffmpeg")
            clip = self.directory / "base.mp4"
            run("ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi",
                "-i", "testsrc=size=160x120:rate=10", "-t", "1", "-pix_fmt", "yuv420p",
                "-c:v", "libx264", "-preset", "ultrafast", "-y", clip, timeout=120)
            self._base = clip
        return self._base

    def write_clip(self, target: Path, padding: int = 0) -> None:
        """A valid MP4 at ``target`` whose bytes differ from every other clip written."""
        with self._lock:
            self._counter += 1
            marker = f"bwc-test-clip-{self._counter}-{time.time_ns()}".encode()
        payload = marker + os.urandom(padding)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as output:
            output.write(self.base_clip().read_bytes())
            output.write((8 + len(payload)).to_bytes(4, "big") + b"free" + payload)


@pytest.fixture(scope="session")
def clip_source(tmp_path_factory: pytest.TempPathFactory) -> ClipSource:
    return ClipSource(tmp_path_factory.mktemp("clips"))


def populate_tree(root: Path, clips: ClipSource, count: int = 2, padding: int = 0) -> list[str]:
    """Camera-like files under ``root``: DCIM/100BWC/ clips with .JPG/.GPS sidecars."""
    written = []
    for number in range(count):
        stem = f"DCIM/100BWC/VID_20240102_0304{number:02d}"
        clips.write_clip(root / f"{stem}.MP4", padding)
        (root / f"{stem}.GPS").write_text(f"$GPRMC,0304{number:02d},A,5230.0,N,01323.0,E\n")
        (root / f"{stem}.JPG").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(64) + b"\xff\xd9")
        written += [f"{stem}.MP4", f"{stem}.GPS", f"{stem}.JPG"]
    (root / "SYSTEM").mkdir(exist_ok=True)
    (root / "SYSTEM" / "DEVICE.TXT").write_text("model=test\n")
    return written


# -- camera images -------------------------------------------------------------------------


@dataclass
class LoopCamera:
    image: Path
    fs_type: str  # "exfat" or "vfat"
    vendor_id: str
    product_id: str
    serial: str | None
    label: str
    files: list[str]
    device: str | None = None  # /dev/loopN while attached

    @property
    def kernel_name(self) -> str:
        assert self.device is not None
        return Path(self.device).name


def image_name(vendor_id: str, product_id: str, serial: str | None) -> str:
    return f"bwccam-{vendor_id}-{product_id}-{serial or 'none'}.img"


def make_vfat_image(image: Path, label: str, tree: Path, size_mb: int = 40) -> None:
    """FAT32 (mkfs.vfat), filled with mtools: no mount needed."""
    need_command("mkfs.vfat")
    need_command("mcopy")
    with image.open("wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    run("mkfs.vfat", "-F", "32", "-n", label, image)
    for child in sorted(tree.iterdir()):
        run("mcopy", "-s", "-m", "-i", image, child, "::/")


def make_exfat_image(image: Path, label: str, tree: Path, size_mb: int = 16) -> None:
    """exFAT (mkfs.exfat), filled through a temporary read-write FUSE mount.

    mount.exfat-fuse as root insists on a block device, so the image is attached to a
    loop device for the fill, under a name the test rule ignores (no USB identity: the
    source under test must not take it for a camera).
    """
    need_command("mkfs.exfat")
    helper = need_command("mount.exfat-fuse")
    filling = image.with_name(image.name + ".filling")
    with filling.open("wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    run("mkfs.exfat", "-L", label, filling)
    device = run("losetup", "--find", "--show", filling).strip()
    try:
        with tempfile.TemporaryDirectory(prefix="bwc-exfat-fill-") as mount_point:
            run(helper, "-o", "rw", device, mount_point)
            try:
                for child in sorted(tree.iterdir()):
                    destination = Path(mount_point) / child.name
                    if child.is_dir():
                        shutil.copytree(child, destination)
                    else:
                        shutil.copy2(child, destination)
            finally:
                run("umount", mount_point)
    finally:
        run("losetup", "--detach", device)
    filling.rename(image)


def attached_devices(image: Path) -> list[str]:
    """Loop devices whose backing file is ``image``."""
    output = run("losetup", "--noheadings", "--output", "NAME,BACK-FILE", "--list")
    devices = []
    for line in output.splitlines():
        name, _, backing = line.strip().partition(" ")
        if backing.strip().removesuffix(" (deleted)") == str(image):
            devices.append(name)
    return devices


def fuse_processes_for(device: str) -> list[int]:
    """Pids of FUSE helpers (mount.exfat-fuse, fusefat) serving ``device``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        names = {Path(argument.decode(errors="replace")).name for argument in arguments[:1]}
        is_fuse = bool(names & {"mount.exfat", "mount.exfat-fuse", "fusefat"})
        if is_fuse and (device.encode() in arguments or _holds_open(entry, device)):
            pids.append(int(entry.name))
    return pids


def _holds_open(process: Path, device: str) -> bool:
    """Whether ``process`` has ``device`` open (a mount made from /proc/self/fd/N names no
    device on the helper's command line)."""
    try:
        return any(os.readlink(link) == device for link in (process / "fd").iterdir())
    except OSError:
        return False


class CameraBay:
    """Makes loop-device cameras, docks and undocks them, and cleans up after a test."""

    def __init__(self, directory: Path, clips: ClipSource, daemon: UdevDaemon) -> None:
        self.directory = directory
        self.clips = clips
        self.daemon = daemon
        self.cameras: list[LoopCamera] = []

    def make_camera(
        self,
        fs_type: str = "exfat",
        serial: str | None = "X81234567",
        vendor_id: str = CAMERA_VENDOR_ID,
        product_id: str = CAMERA_PRODUCT_ID,
        label: str = "BWCCAM",
        clip_count: int = 2,
        padding: int = 0,
        populate: Callable[[Path], list[str]] | None = None,
    ) -> LoopCamera:
        """A camera image; ``populate(tree)`` may lay out hostile or custom content."""
        folder = Path(tempfile.mkdtemp(prefix="cam-", dir=self.directory))
        tree = folder / "tree"
        tree.mkdir()
        files = populate(tree) if populate else populate_tree(tree, self.clips, clip_count, padding)
        image = folder / image_name(vendor_id, product_id, serial)
        size_mb = max(40 if fs_type == "vfat" else 16, 8 + _tree_megabytes(tree) * 2)
        if fs_type == "vfat":
            make_vfat_image(image, label, tree, size_mb)
        elif fs_type == "exfat":
            make_exfat_image(image, label, tree, size_mb)
        else:
            raise ValueError(f"unsupported camera filesystem {fs_type!r}")
        camera = LoopCamera(image, fs_type, vendor_id, product_id, serial, label, files)
        self.cameras.append(camera)
        return camera

    def attach(self, camera: LoopCamera) -> str:
        """Dock: ``losetup``; udev sends the change event with the filesystem identity."""
        need_command("losetup")
        camera.device = run("losetup", "--find", "--show", camera.image).strip()
        return camera.device

    def detach(self, camera: LoopCamera) -> None:
        """Undock an idle camera: ``losetup -d`` (deferred by the kernel while it is open)."""
        for device in attached_devices(camera.image):
            with contextlib.suppress(RuntimeError):
                run("losetup", "--detach", device)

    def yank(self, camera: LoopCamera, kill_fuse: bool = False) -> None:
        """Pull the camera out, as a USB unplug would.

        ``losetup -d`` on a loop device that a mount holds open only sets autoclear: the
        device stays until the last user lets go, and no event comes. A real unplug
        removes the disk whatever holds it, with a ``remove`` uevent; the harness sends
        that uevent itself. ``kill_fuse`` also kills the FUSE helper serving the device,
        so reads from the mount fail the way reads from a vanished disk do.
        """
        device = camera.device
        assert device is not None, "camera not attached"
        name = Path(device).name
        if kill_fuse:
            for pid in fuse_processes_for(device):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.detach(camera)
        if Path(f"/sys/block/{name}/loop/backing_file").exists():
            Path(f"/sys/block/{name}/uevent").write_text("remove")

    def wait_detached(self, camera: LoopCamera, timeout: float = EVENT_TIMEOUT_SECONDS) -> None:
        """Wait until the kernel has really let go of the camera's loop device(s)."""
        wait_until(lambda: not attached_devices(camera.image), timeout,
                   what=f"{camera.image.name} to detach")
        settle()

    @staticmethod
    def settle() -> None:
        settle()

    @staticmethod
    def wait_until(predicate: Callable[[], bool], timeout: float = EVENT_TIMEOUT_SECONDS,
                   what: str = "condition") -> None:
        wait_until(predicate, timeout, what=what)

    def trigger_change(self, camera: LoopCamera) -> None:
        assert camera.device is not None
        run("udevadm", "trigger", "--action=change", camera.device)

    def cleanup(self, mount_dirs: list[Path]) -> None:
        for mount_dir in mount_dirs:
            _unmount_under(mount_dir)
        for camera in self.cameras:
            for device in attached_devices(camera.image):
                for pid in fuse_processes_for(device):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                _unmount_device(device)
                with contextlib.suppress(RuntimeError):
                    run("losetup", "--detach", device)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            settle()


def _tree_megabytes(tree: Path) -> int:
    total = sum(path.stat().st_size for path in tree.rglob("*") if path.is_file())
    return total // (1024 * 1024) + 1


def _mountinfo_points() -> list[tuple[str, str]]:
    entries = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-", 6)
        point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), fields[4])
        entries.append((point, fields[separator + 2]))
    return entries


def _unmount_under(directory: Path) -> None:
    for point, _source in reversed(_mountinfo_points()):
        if Path(point).is_relative_to(directory):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def _unmount_device(device: str) -> None:
    for point, source in reversed(_mountinfo_points()):
        if source == device:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


@pytest.fixture
def camera_bay(
    tmp_path: Path, clip_source: ClipSource, udevd: UdevDaemon
) -> Iterator[CameraBay]:
    """Cameras for one test; their loop devices and any mounts under tmp_path go afterwards."""
    need_command("losetup")
    if not Path("/dev/loop-control").exists():
        unavailable("needs loop devices (/dev/loop-control)")
    if not Path("/dev/fuse").exists():
        unavailable("needs FUSE (/dev/fuse)")
    bay = CameraBay(tmp_path, clip_source, udevd)
    try:
        yield bay
    finally:
        bay.cleanup([tmp_path])
