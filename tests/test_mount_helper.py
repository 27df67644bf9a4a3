"""The mount helper mounts tagged camera devices safely for the daemon and refuses the rest.

Real parts: the helper runs as a real subprocess (``bwc-dock-mount``) on a unix socket in
a temporary directory; cameras are loop devices that the test udev rule gives a USB
identity, tagged ``BWC_CAMERA=1`` by the project's own rules under a real udevd.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bwc_dock.mount_paths import find_mount
from bwc_dock.mount_protocol import (
    SOCKET_ENVIRONMENT,
    HelperMounter,
    encode,
    make_mounter,
    read_message,
)
from bwc_dock.mounting import Mounter, MountError

if TYPE_CHECKING:
    from tests.udevharness import CameraBay

pytest_plugins = ("tests.udevharness",)  # fixtures: udevd, clip_source, camera_bay

pytestmark = pytest.mark.timeout(180)
DESIGNED_FLAGS = {"ro", "nosuid", "nodev", "noexec"}  # from docs/design.md, not SAFE_FLAGS
UNPRIVILEGED_UID = 65534


# the helper in a mount namespace of its own: what it mounts, wrongly or not, stays there
PRIVATE_NAMESPACE = ("unshare", "--mount", "--propagation", "private")


class Helper:
    """A running bwc-dock-mount subprocess, its socket and mount root."""

    def __init__(
        self, directory: Path, mount_root: Path | None = None, prefix: Sequence[str] = (),
    ) -> None:
        self.socket_path = directory / "mount.sock"
        self.mount_root = directory / "cameras" if mount_root is None else mount_root
        self.log = directory / "helper.log"
        program = Path(sys.executable).parent / "bwc-dock-mount"
        with self.log.open("wb") as log:
            # prefix ends in exec, so the pid is the helper's (its mountinfo is read below)
            self.process = subprocess.Popen(
                [*prefix, str(program), "--socket", str(self.socket_path),
                 "--mount-root", str(self.mount_root)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not self.socket_path.is_socket():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"helper did not start: {self.log.read_text()}")
            time.sleep(0.05)
        self.client = HelperMounter(self.socket_path)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One raw request, as any client could send it."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(60)
            connection.connect(str(self.socket_path))
            connection.sendall(encode(request))
            return read_message(connection)

    def mount_points(self) -> list[str]:
        """Every mount point in the helper's own mount namespace."""
        lines = Path(f"/proc/{self.process.pid}/mountinfo").read_text().splitlines()
        return [line.split()[4] for line in lines]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.ask({"op": "cleanup"})  # FUSE servers in its namespace end with their mounts
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def helper(camera_bay: CameraBay, helper_only: Helper) -> Helper:
    """The helper under tmp_path (camera_bay unmounts what is left there afterwards)."""
    return helper_only


@pytest.fixture
def helper_only(tmp_path: Path) -> Iterator[Helper]:
    """The helper subprocess alone, for tests that mount nothing."""
    directory = tmp_path / "helper"
    directory.mkdir()
    running = Helper(directory)
    try:
        yield running
    finally:
        running.stop()


def _tagged_camera(bay: CameraBay, fs_type: str = "vfat", **kwargs: Any) -> tuple[str, list[str]]:
    camera = bay.make_camera(fs_type, **kwargs)
    device = bay.attach(camera)
    bay.settle()  # udev has written the BWC_CAMERA tag into its database
    return device, camera.files


@pytest.mark.realparts
def test_helper_mounts_a_tagged_camera_read_only_and_unmounts_it(
    camera_bay: CameraBay, helper: Helper
) -> None:
    """Mounted under the helper's root by kernel name with ro,nosuid,nodev,noexec; the clips
    read; writable only inside writable(); unmounted and its mount point gone afterwards."""
    device, files = _tagged_camera(camera_bay)
    volume = helper.client.mount(device, "vfat", "chosen-by-daemon")
    assert volume.mount_point == helper.mount_root / Path(device).name
    entry = find_mount(volume.mount_point)
    assert entry is not None and entry.mount_options >= DESIGNED_FLAGS
    assert (volume.mount_point / files[0]).read_bytes()[4:8] == b"ftyp"
    with pytest.raises(OSError) as refused:
        (volume.mount_point / "new.txt").write_bytes(b"x")
    assert refused.value.errno == errno.EROFS
    with helper.client.writable(volume):
        (volume.mount_point / files[0]).unlink()  # what clear_after_upload does
        writable_entry = find_mount(volume.mount_point)
        assert writable_entry is not None
        assert writable_entry.mount_options >= {"rw", "nosuid", "nodev", "noexec"}
    entry = find_mount(volume.mount_point)
    assert entry is not None and entry.mount_options >= DESIGNED_FLAGS
    helper.client.unmount(volume)
    assert find_mount(volume.mount_point) is None
    assert not volume.mount_point.exists()


@pytest.mark.realparts
def test_helper_refuses_what_is_not_a_tagged_camera(
    camera_bay: CameraBay, helper: Helper, tmp_path: Path
) -> None:
    """Non-block paths, paths with '..', untagged devices, unknown filesystems, option
    injection and foreign mount points are refused with a reason, and nothing is mounted."""
    device, _files = _tagged_camera(camera_bay)
    untagged, _ = _tagged_camera(camera_bay, vendor_id="dead", product_id="beef")
    plain_file = tmp_path / "not-a-device"
    plain_file.write_bytes(b"\0" * 4096)
    refusals: dict[str, list[dict[str, Any]]] = {
        "not /dev/<kernel name>": [
            {"op": "mount", "device": str(plain_file), "fs_type": "vfat"},
            {"op": "mount", "device": f"/dev/../{plain_file}", "fs_type": "vfat"},
            {"op": "mount", "device": f"/dev/{Path(device).name}/../../tmp", "fs_type": "vfat"},
            {"op": "mount", "device": "/dev/shm/camera", "fs_type": "vfat"},
            {"op": "mount", "device": "/dev/disk/by-id/usb-camera", "fs_type": "vfat"},
            {"op": "mount", "device": f"{device}\n", "fs_type": "vfat"},
            {"op": "mount", "device": "/dev/.", "fs_type": "vfat"},
        ],
        "no block device 'null' in sysfs": [
            {"op": "mount", "device": "/dev/null", "fs_type": "vfat"}
        ],
        "is not tagged BWC_CAMERA=1": [{"op": "mount", "device": untagged, "fs_type": "vfat"}],
        "filesystem type not allowed": [
            {"op": "mount", "device": device, "fs_type": "ext4"},
            {"op": "mount", "device": device, "fs_type": "vfat,rw"},
        ],
        "mount option not allowed": [
            {"op": "mount", "device": device, "fs_type": "vfat", "options": ["rw"]},
            {"op": "mount", "device": device, "fs_type": "vfat", "options": ["exec"]},
            {"op": "mount", "device": device, "fs_type": "vfat", "options": ["utf8,suid"]},
            {"op": "mount", "device": device, "fs_type": "vfat", "options": ["x-mount.mkdir"]},
            {"op": "mount", "device": device, "fs_type": "vfat", "options": ["errors=panic"]},
            {"op": "mount", "device": device, "fs_type": "vfat", "options": ["helper=udisks2"]},
        ],
        "not a mount point of this helper": [
            {"op": "unmount", "mount_point": "/"},
            {"op": "unmount", "mount_point": str(helper.mount_root / ".." / "x")},
            {"op": "remount", "mount_point": "/usr", "mode": "rw"},
            {"op": "unmount", "mount_point": str(helper.mount_root / ".hidden")},
        ],
        "unknown op": [{"op": "bind", "device": device}],
    }
    for reason, requests in refusals.items():
        for request in requests:
            answer = helper.ask(request)
            assert answer["ok"] is False, request
            assert reason in answer["error"], (request, answer)
    assert not [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(helper.mount_root) in line
    ]
    with pytest.raises(MountError, match="refused mount"):
        helper.client.mount(untagged, "vfat", "x")


@pytest.mark.realparts
def test_helper_refuses_a_device_whose_disk_is_mounted_elsewhere(
    camera_bay: CameraBay, helper: Helper, tmp_path: Path
) -> None:
    """A tagged device already mounted outside the helper's root (as a system disk is) is
    refused: the tag alone is not enough. (exFAT: a kernel driver or fuseblk, whose
    mountinfo names the device; fusefat's names no device.)"""
    device, _files = _tagged_camera(camera_bay, "exfat")
    elsewhere = Mounter(tmp_path / "system")
    mounted = elsewhere.mount(device, "exfat", "root")
    try:
        answer = helper.ask({"op": "mount", "device": device, "fs_type": "exfat"})
        assert answer["ok"] is False
        assert f"is mounted at {mounted.mount_point}" in answer["error"]
    finally:
        elsewhere.unmount(mounted)
    answer = helper.ask({"op": "mount", "device": device, "fs_type": "exfat"})
    assert answer["ok"] is True, answer
    helper.ask({"op": "unmount", "mount_point": answer["mount_point"]})


@pytest.mark.realparts
def test_helper_refuses_a_peer_that_is_not_root(helper_only: Helper) -> None:
    """SO_PEERCRED: a connection from uid 65534 is answered with a refusal, even when the
    socket's file mode would let it connect."""
    # the system's interpreter: one under /root (pyenv, this venv) is not executable by 65534
    python = "/usr/bin/python3"
    if not Path(python).exists():
        pytest.skip("needs /usr/bin/python3 to run the unprivileged client")
    open_directory = Path(tempfile.mkdtemp(prefix="bwc-helper-", dir="/tmp"))
    try:
        open_directory.chmod(0o755)
        link = open_directory / "mount.sock"
        os.link(helper_only.socket_path, link)  # the same socket, reachable by others
        link.chmod(0o666)
        client = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.connect(sys.argv[1])\n"
            "s.sendall(b'{\"op\": \"cleanup\"}\\n')\n"
            "print(s.makefile().readline())\n"
        )
        completed = subprocess.run(
            [python, "-c", client, str(link)], user=UNPRIVILEGED_UID, group=UNPRIVILEGED_UID,
            capture_output=True, text=True, timeout=60, check=False, cwd="/",
        )
    finally:
        shutil.rmtree(open_directory)
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert answer == {"ok": False, "error": f"uid {UNPRIVILEGED_UID} may not use the mount helper"}


def test_make_mounter_uses_the_configured_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the socket configured the daemon mounts through the helper; without it (and no
    default socket on this machine) it mounts directly."""
    monkeypatch.setenv(SOCKET_ENVIRONMENT, str(tmp_path / "helper.sock"))
    chosen = make_mounter(tmp_path / "mounts")
    assert isinstance(chosen, HelperMounter)
    assert chosen.socket_path == tmp_path / "helper.sock"
    monkeypatch.delenv(SOCKET_ENVIRONMENT)
    if Path("/run/bwc-dock-mount.sock").exists():
        pytest.skip("this machine runs the installed helper")
    direct = make_mounter(tmp_path / "mounts")
    assert isinstance(direct, Mounter)
    assert direct.mount_dir == tmp_path / "mounts"


def test_a_missing_helper_is_a_mount_error(tmp_path: Path) -> None:
    """No helper listening: the daemon gets a MountError naming the socket, not a crash."""
    client = HelperMounter(tmp_path / "absent.sock")
    with pytest.raises(MountError, match=r"absent\.sock did not answer mount"):
        client.mount("/dev/sdz1", "vfat", "sdz1")


def _decoy(tmp_path: Path) -> Path:
    """An empty root-owned folder (0755), as /etc/cron.d is, for a link to point at."""
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    decoy.chmod(0o755)
    return decoy


def _contained(tmp_path: Path, mount_root: Path | None = None,
               prefix: Sequence[str] = PRIVATE_NAMESPACE) -> Helper:
    directory = tmp_path / "helper"
    directory.mkdir(exist_ok=True)
    return Helper(directory, mount_root, prefix)


@pytest.mark.realparts
@pytest.mark.parametrize("planted", ["mount point", "mount root", "parent of the root"])
def test_a_link_planted_on_the_mount_path_is_refused(
    camera_bay: CameraBay, tmp_path: Path, planted: str
) -> None:
    """A link where the mount point, the mount root or its parent should be, pointing at a
    root-owned folder: the mount is refused, nothing is mounted there or anywhere outside
    the root, and the folder keeps its mode."""
    device, _files = _tagged_camera(camera_bay)
    decoy = _decoy(tmp_path)
    mount_root = tmp_path / "helper" / "run" / "cameras"
    mount_root.parent.mkdir(parents=True)
    if planted == "mount point":
        mount_root.mkdir(mode=0o700)
        (mount_root / Path(device).name).symlink_to(decoy)
    elif planted == "mount root":
        mount_root.symlink_to(decoy)
    else:
        mount_root.parent.rmdir()
        mount_root.parent.symlink_to(decoy)
    helper = _contained(tmp_path, mount_root)
    try:
        answer = helper.ask({"op": "mount", "device": device, "fs_type": "vfat"})
        assert not [point for point in helper.mount_points() if point.startswith(str(decoy))]
        assert not [point for point in helper.mount_points() if "helper/run" in point]
        assert stat.S_IMODE(decoy.stat().st_mode) == 0o755
        assert answer["ok"] is False, answer
        assert "is a link or not a directory" in answer["error"], answer
    finally:
        helper.stop()


@pytest.mark.realparts
def test_a_device_path_that_is_a_link_is_refused(camera_bay: CameraBay, tmp_path: Path) -> None:
    """A link under /dev (in /dev/shm, writable by anyone the unit lets write) to a tagged
    camera is not /dev/<kernel name>: refused, and nothing is mounted."""
    device, _files = _tagged_camera(camera_bay)
    link = Path("/dev/shm") / f"bwc-test-{os.getpid()}-camera"
    link.symlink_to(device)
    helper = _contained(tmp_path)
    try:
        answer = helper.ask({"op": "mount", "device": str(link), "fs_type": "vfat"})
        assert answer == {"ok": False, "error": f"not /dev/<kernel name>: '{link}'"}
        assert not [point for point in helper.mount_points() if str(tmp_path) in point]
    finally:
        link.unlink()
        helper.stop()


@pytest.mark.realparts
def test_a_node_with_another_device_number_is_refused(
    camera_bay: CameraBay, tmp_path: Path
) -> None:
    """/dev/<tagged camera> that is really another disk's node (bound over it in the
    helper's namespace, as a renamed node would be): its number is not the one sysfs
    gives that name, so it is refused and nothing is mounted."""
    camera, _files = _tagged_camera(camera_bay)
    other_disk, _ = _tagged_camera(camera_bay, vendor_id="dead", product_id="beef")
    swap = f'mount --bind "{other_disk}" "{camera}" && exec "$@"'
    helper = _contained(tmp_path, prefix=(*PRIVATE_NAMESPACE, "sh", "-c", swap, "sh"))
    try:
        answer = helper.ask({"op": "mount", "device": camera, "fs_type": "vfat"})
        assert answer["ok"] is False, answer
        other_number = os.stat(other_disk).st_rdev
        camera_number = os.stat(camera).st_rdev
        assert answer["error"] == (
            f"{camera} is device {os.major(other_number)}:{os.minor(other_number)}, not "
            f"{os.major(camera_number)}:{os.minor(camera_number)} that sysfs gives "
            f"{Path(camera).name}"
        )
        assert not [point for point in helper.mount_points() if str(tmp_path) in point]
    finally:
        helper.stop()


@pytest.mark.realparts
def test_unmounting_a_link_unmounts_nothing(camera_bay: CameraBay, tmp_path: Path) -> None:
    """An unmount request for a name under the root that is a link to a mounted camera
    leaves that camera mounted and the link in place."""
    device, _files = _tagged_camera(camera_bay)
    helper = _contained(tmp_path)
    try:
        answer = helper.ask({"op": "mount", "device": device, "fs_type": "vfat"})
        assert answer["ok"] is True, answer
        camera_point = helper.mount_root / Path(device).name
        link = helper.mount_root / "planted"
        link.symlink_to(camera_point)
        helper.ask({"op": "unmount", "mount_point": str(link), "lazy": False})
        assert str(camera_point) in helper.mount_points()
        assert link.is_symlink()
        link.unlink()
    finally:
        helper.stop()
