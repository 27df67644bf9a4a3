"""The udev source turns real udev events into one read-only DockedVolume per docking.

Real parts: systemd-udevd with the project's rules, loop-device cameras (exFAT, FAT32)
that a test rule gives USB identities, FUSE mounts. The pure matching functions at the
end run anywhere.
"""

from __future__ import annotations

import errno
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pyudev
from structlog.testing import capture_logs

from bwc_dock.config import Config, parse_config
from bwc_dock.found import DockedVolume
from bwc_dock.mount_paths import find_mount
from bwc_dock.mounting import missing_flags, read_mountinfo
from bwc_dock.sources import udev as udev_source
from bwc_dock.sources.base import SourceListener
from bwc_dock.sources.identity import (
    BlockIdentity,
    clean_serial,
    identity_from_properties,
    match_profile,
)
from bwc_dock.sources.udev import UdevSource

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.udevharness import CameraBay

from tests.udevharness import HIDDEN_USB_ID

pytest_plugins = ("tests.udevharness",)  # fixtures: udevd, clip_source, camera_bay

pytestmark = pytest.mark.timeout(120)
WAIT_SECONDS = 10.0
QUIET_SECONDS = 1.5  # longer than the settle time plus a udev round trip


class RecordingListener(SourceListener):
    """Records callbacks in order and lets a test wait for them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, DockedVolume | str]] = []
        self._changed = threading.Condition()

    def docked(self, volume: DockedVolume) -> None:
        with self._changed:
            self.events.append(("docked", volume))
            self._changed.notify_all()

    def undocked(self, device: str) -> None:
        with self._changed:
            self.events.append(("undocked", device))
            self._changed.notify_all()

    @property
    def volumes(self) -> list[DockedVolume]:
        return [item for kind, item in self.events if kind == "docked"]  # type: ignore[misc]

    @property
    def undocked_devices(self) -> list[str]:
        return [item for kind, item in self.events if kind == "undocked"]  # type: ignore[misc]

    def wait_for(self, kind: str, count: int, timeout: float = WAIT_SECONDS) -> None:
        with self._changed:
            reached = self._changed.wait_for(
                lambda: sum(1 for event in self.events if event[0] == kind) >= count, timeout)
        assert reached, f"expected {count} {kind} callback(s) within {timeout}s: {self.events}"


def make_config(tmp_path: Path, cameras: list[dict[str, object]] | None = None) -> Config:
    return parse_config({
        "dock": {"id": "dock-test", "state_dir": str(tmp_path / "state")},
        "storage": {"backend": "file", "path": str(tmp_path / "central")},
        "camera": cameras if cameras is not None else [
            {"name": "generic-msc", "usb_vendor_id": "0x1234", "usb_product_id": "0x5678"},
        ],
    })


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def listener() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def start_source(config: Config, listener: RecordingListener, camera_bay: CameraBay
                 ) -> Iterator[Callable[..., UdevSource]]:
    """Start a UdevSource (optionally with another config); stopped after the test."""
    started: list[UdevSource] = []

    def start(with_config: Config | None = None) -> UdevSource:
        source = UdevSource(with_config or config, rescan_interval_seconds=60)
        source.start(listener)
        started.append(source)
        return source

    yield start
    for source in started:
        source.stop()


def _assert_safely_mounted(volume: DockedVolume) -> None:
    entry = find_mount(volume.root)
    assert entry is not None, f"{volume.root} is not mounted"
    assert missing_flags(entry) == []
    with pytest.raises(OSError) as refused:
        (volume.root / "written-by-dock").write_bytes(b"x")
    assert refused.value.errno == errno.EROFS


def _mounted_under(directory: Path) -> list[Path]:
    return [entry.mount_point for entry in read_mountinfo()
            if entry.mount_point.is_relative_to(directory)]


@pytest.mark.realparts
def test_exfat_and_fat32_cameras_each_dock_once(
    start_source: Callable[..., UdevSource],
    listener: RecordingListener,
    camera_bay: CameraBay,
    config: Config,
) -> None:
    """Two cameras docked: two DockedVolumes, right serial and profile, mounted ro/noexec."""
    start_source()
    exfat = camera_bay.make_camera("exfat", serial="EXF0001", label="EXCAM")
    fat = camera_bay.make_camera("vfat", serial="FAT0002", label="FATCAM")
    camera_bay.attach(exfat)
    camera_bay.attach(fat)
    listener.wait_for("docked", 2)
    time.sleep(QUIET_SECONDS)
    volumes = {volume.camera_serial: volume for volume in listener.volumes}
    assert sorted(volumes) == ["EXF0001", "FAT0002"]
    assert len(listener.volumes) == 2
    for camera, volume in ((exfat, volumes["EXF0001"]), (fat, volumes["FAT0002"])):
        assert volume.source == "udev"
        assert volume.device == camera.device
        assert volume.profile_name == "generic-msc"
        assert (volume.usb_vendor_id, volume.usb_product_id) == ("1234", "5678")
        assert volume.fs_label == camera.label
        assert volume.root.is_relative_to(config.mount_dir)
        _assert_safely_mounted(volume)
        assert sorted(str(path.relative_to(volume.root)) for path in volume.root.rglob("*.MP4")
                      ) == sorted(name for name in camera.files if name.endswith(".MP4"))


@pytest.mark.realparts
def test_yanked_camera_is_reported_undocked_and_its_mount_cleaned(
    start_source: Callable[..., UdevSource],
    listener: RecordingListener,
    camera_bay: CameraBay,
    config: Config,
) -> None:
    """Pulling a docked camera reports undocked(device) from the remove event (not a
    rescan) and lazily unmounts it."""
    start_source()
    camera = camera_bay.make_camera("exfat")
    camera_bay.attach(camera)
    listener.wait_for("docked", 1)
    volume = listener.volumes[0]
    camera_bay.yank(camera)
    # The source's rescan, which would also notice the camera gone, runs every 60 s here
    # (start_source): a report within WAIT_SECONDS (10 s) can only come from the kernel's
    # remove event itself, which is what lets a copier hear of a yank at once. The bound
    # separates those two paths by 50 s; it does not time this machine.
    listener.wait_for("undocked", 1, timeout=WAIT_SECONDS)
    assert listener.undocked_devices == [camera.device]
    # the lazy unmount follows the callback in the source's thread
    camera_bay.wait_until(lambda: find_mount(volume.root) is None and not volume.root.exists(),
                          what="the lazy unmount and the mount point's removal")
    assert _mounted_under(config.mount_dir) == []


@pytest.mark.realparts
@pytest.mark.parametrize("fs_type", ["exfat", "vfat"])
def test_reads_fail_after_a_yank_that_kills_the_device(
    start_source: Callable[..., UdevSource],
    listener: RecordingListener,
    camera_bay: CameraBay,
    fs_type: str,
) -> None:
    """A reader with a clip open gets an OSError once the camera is gone, not stale bytes."""
    start_source()
    camera = camera_bay.make_camera(fs_type, padding=2 * 1024 * 1024)
    camera_bay.attach(camera)
    listener.wait_for("docked", 1)
    volume = listener.volumes[0]
    reader = (volume.root / camera.files[0]).open("rb", buffering=0)
    assert reader.read(4096)
    camera_bay.yank(camera, kill_fuse=True)
    listener.wait_for("undocked", 1)
    with pytest.raises(OSError) as failed:
        while reader.read(65536):
            pass
    # even close() fails on a dead FUSE mount: a copier must expect that too
    with pytest.raises(OSError) as close_failed:
        reader.close()
    assert close_failed.value.errno == errno.ENOTCONN
    assert failed.value.errno in {errno.ENOTCONN, errno.EIO, errno.ENODEV}
    camera_bay.wait_detached(camera)


@pytest.mark.realparts
def test_redocking_after_a_yank_docks_again(
    start_source: Callable[..., UdevSource], listener: RecordingListener, camera_bay: CameraBay,
) -> None:
    """The same camera back in the bay is a new docking with the same serial."""
    start_source()
    camera = camera_bay.make_camera("vfat", serial="AGAIN01")
    camera_bay.attach(camera)
    listener.wait_for("docked", 1)
    camera_bay.yank(camera, kill_fuse=True)
    listener.wait_for("undocked", 1)
    camera_bay.wait_detached(camera)
    camera_bay.attach(camera)
    listener.wait_for("docked", 2)
    assert [volume.camera_serial for volume in listener.volumes] == ["AGAIN01", "AGAIN01"]
    _assert_safely_mounted(listener.volumes[1])


@pytest.mark.realparts
def test_camera_present_at_start_is_docked_before_start_returns(
    start_source: Callable[..., UdevSource], listener: RecordingListener, camera_bay: CameraBay,
) -> None:
    """Coldplug: a dock PC rebooting with a camera in the bay resumes it."""
    camera = camera_bay.make_camera("exfat", serial="COLD001")
    camera_bay.attach(camera)
    camera_bay.settle()
    start_source()
    assert [volume.camera_serial for volume in listener.volumes] == ["COLD001"]
    _assert_safely_mounted(listener.volumes[0])


@pytest.mark.realparts
def test_unknown_device_is_logged_once_and_never_mounted(
    start_source: Callable[..., UdevSource],
    listener: RecordingListener,
    camera_bay: CameraBay,
    config: Config,
) -> None:
    """USB storage no profile matches: one log line with its ids, no mount, no callback."""
    with capture_logs() as logs:
        source = start_source()
        camera = camera_bay.make_camera("vfat", serial="STRANGER", vendor_id="dead",
                                        product_id="beef")
        camera_bay.attach(camera)
        time.sleep(QUIET_SECONDS)
        for _ in range(3):
            camera_bay.trigger_change(camera)
        source.rescan()
        time.sleep(QUIET_SECONDS)
    unknown = [log for log in logs if log["event"] == "dock.unknown_device"
               and log["device"] == camera.device]
    assert len(unknown) == 1
    assert (unknown[0]["vendor_id"], unknown[0]["product_id"], unknown[0]["serial"]) == (
        "dead", "beef", "STRANGER")
    assert listener.events == []
    assert _mounted_under(config.mount_dir) == []
    assert not [entry for entry in read_mountinfo() if entry.source == camera.device]


@pytest.mark.realparts
def test_ids_missing_from_udev_make_the_source_walk_up_for_a_usb_parent(
    start_source: Callable[..., UdevSource],
    listener: RecordingListener,
    camera_bay: CameraBay,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """USB storage whose udev properties lack vendor and model ids sends the identity
    lookup up the device tree; a loop device has no USB parent, so the walk ends with
    none: no ids, no location, the device ignored as unknown and never mounted.

    What this shows: the walk is reached from a real udev event and ends cleanly when
    there is no USB parent. What it cannot show here: reading ids from a found parent
    (this machine has no USB bus); the VM rig's hot-plugged usb-storage cameras cover
    that, and test_identity_falls_back_to_the_usb_parent covers the reading itself."""
    walks: list[tuple[str, object]] = []
    real_walk = udev_source._usb_parent

    def recorded_walk(device: object) -> object:  # the real walk, recorded
        parent = real_walk(device)
        walks.append((device.sys_path, parent))  # type: ignore[attr-defined]
        return parent

    monkeypatch.setattr(udev_source, "_usb_parent", recorded_walk)
    camera = camera_bay.make_camera("vfat", serial="BARE1", vendor_id=HIDDEN_USB_ID,
                                    product_id=HIDDEN_USB_ID)
    with capture_logs() as logs:
        start_source()
        camera_bay.attach(camera)
        camera_bay.wait_until(lambda: any(log["event"] == "dock.unknown_device"
                                          and log["device"] == camera.device for log in logs),
                              what="the camera reported as unknown")
    assert camera.device is not None
    properties = pyudev.Devices.from_device_file(pyudev.Context(), camera.device).properties
    assert properties.get("ID_BUS") == "usb" and properties.get("ID_SERIAL_SHORT") == "BARE1"
    assert "ID_VENDOR_ID" not in properties and "ID_MODEL_ID" not in properties
    walked = [parent for path, parent in walks if Path(path).name == Path(camera.device).name]
    assert walked and all(parent is None for parent in walked), walks
    [unknown] = [log for log in logs if log["event"] == "dock.unknown_device"
                 and log["device"] == camera.device]
    assert (unknown["vendor_id"], unknown["product_id"], unknown["serial"]) == (
        None, None, "BARE1")
    assert not [log for log in logs if log["event"] in ("udev.event_failed",
                                                        "udev.evaluate_failed")]
    assert listener.events == []
    assert _mounted_under(config.mount_dir) == []


@pytest.mark.realparts
def test_repeated_udev_events_are_one_docking(
    start_source: Callable[..., UdevSource], listener: RecordingListener, camera_bay: CameraBay,
) -> None:
    """udev repeating change events and a rescan do not dock the camera twice."""
    with capture_logs() as logs:
        source = start_source()
        camera = camera_bay.make_camera("exfat")
        camera_bay.attach(camera)
        listener.wait_for("docked", 1)
        for _ in range(5):
            camera_bay.trigger_change(camera)
        source.rescan()
        time.sleep(QUIET_SECONDS)
    assert len(listener.volumes) == 1
    assert listener.undocked_devices == []
    assert len([log for log in logs if log["event"] == "mount.mounted"]) == 1
    _assert_safely_mounted(listener.volumes[0])


@pytest.mark.realparts
def test_release_unmounts_and_the_offloaded_camera_is_not_docked_again(
    start_source: Callable[..., UdevSource], listener: RecordingListener, camera_bay: CameraBay,
) -> None:
    """After release() the volume is unmounted; events and rescans do not re-offload it."""
    source = start_source()
    camera = camera_bay.make_camera("vfat")
    camera_bay.attach(camera)
    listener.wait_for("docked", 1)
    volume = listener.volumes[0]
    source.release(volume)
    assert find_mount(volume.root) is None
    camera_bay.trigger_change(camera)
    source.rescan()
    time.sleep(QUIET_SECONDS)
    assert len(listener.volumes) == 1
    assert source.docked_volumes() == []


@pytest.mark.realparts
@pytest.mark.parametrize("fs_type", ["exfat", "vfat"])
def test_writable_step_deletes_and_is_not_a_new_docking(
    start_source: Callable[..., UdevSource],
    listener: RecordingListener,
    camera_bay: CameraBay,
    fs_type: str,
) -> None:
    """Clear-after-upload's rw window: deletes stick, ro comes back, no undock/redock."""
    source = start_source()
    camera = camera_bay.make_camera(fs_type)
    camera_bay.attach(camera)
    listener.wait_for("docked", 1)
    volume = listener.volumes[0]
    clip = camera.files[0]
    with source.writable(volume) as root:
        assert root == volume.root
        (root / clip).unlink()
    _assert_safely_mounted(volume)
    assert not (volume.root / clip).exists()
    assert (volume.root / camera.files[1]).exists()
    time.sleep(QUIET_SECONDS)  # closing the written device makes udev send change events
    assert [kind for kind, _ in listener.events] == ["docked"]


@pytest.mark.realparts
def test_serial_from_a_file_on_the_volume(
    start_source: Callable[..., UdevSource],
    listener: RecordingListener,
    camera_bay: CameraBay,
    tmp_path: Path,
) -> None:
    """serial_source = "file": the first line of the named file, sanitised."""
    config = make_config(tmp_path, [{
        "name": "serial-file-cam", "usb_vendor_id": "1234", "usb_product_id": "5678",
        "serial_source": "file", "serial_file": "SYSTEM/SERIAL.TXT",
    }])

    def populate(tree: Path) -> list[str]:
        (tree / "SYSTEM").mkdir()
        (tree / "SYSTEM" / "SERIAL.TXT").write_text("BWC 9/77\nsecond line\n")
        return []

    start_source(config)
    camera_bay.attach(camera_bay.make_camera("exfat", serial=None, populate=populate))
    listener.wait_for("docked", 1)
    assert listener.volumes[0].camera_serial == "BWC_9_77"


@pytest.mark.realparts
def test_label_profile_and_fs_uuid_serial(
    start_source: Callable[..., UdevSource],
    listener: RecordingListener,
    camera_bay: CameraBay,
    tmp_path: Path,
) -> None:
    """A label narrows the match; the serial can be the filesystem UUID."""
    config = make_config(tmp_path, [
        {"name": "other-label", "usb_vendor_id": "1234", "label": "NOTTHIS"},
        {"name": "by-label", "usb_vendor_id": "1234", "label": "axoncam",
         "serial_source": "fs_uuid"},
    ])
    start_source(config)
    camera = camera_bay.make_camera("vfat", label="AXONCAM")
    camera_bay.attach(camera)
    listener.wait_for("docked", 1)
    volume = listener.volumes[0]
    assert volume.profile_name == "by-label"
    assert volume.camera_serial == volume.fs_uuid
    assert volume.fs_uuid and len(volume.fs_uuid) == 9  # FAT volume id, e.g. 3B30-1F15


# -- pure functions: no udev needed ----------------------------------------------------------


def _identity(**overrides: object) -> BlockIdentity:
    values: dict[str, object] = {
        "DEVNAME": "/dev/sdb1", "ID_VENDOR_ID": "1234", "ID_MODEL_ID": "5678",
        "ID_SERIAL_SHORT": "X1", "ID_FS_TYPE": "exfat", "ID_FS_USAGE": "filesystem",
        "ID_FS_LABEL": "CAM", "DISKSEQ": "7", "ID_BUS": "usb",
    }
    values.update(overrides)
    properties = {key: str(value) for key, value in values.items() if value is not None}
    return identity_from_properties("/sys/devices/x/block/sdb/sdb1", properties)


def test_profile_match_needs_ids_label_and_filesystem(tmp_path: Path) -> None:
    """Vendor, product, label and filesystem type must all agree; priority breaks ties."""
    config = make_config(tmp_path, [
        {"name": "low", "usb_vendor_id": "1234"},
        {"name": "high", "usb_vendor_id": "0x1234", "usb_product_id": "5678", "priority": 5},
        {"name": "fat-only", "usb_vendor_id": "abcd", "filesystem_types": ["vfat"]},
        {"name": "folder", "serial_source": "folder"},
    ])
    profiles = config.camera
    high = match_profile(_identity(), profiles)
    assert high is not None and high.name == "high"
    low = match_profile(_identity(ID_MODEL_ID="9999"), profiles)
    assert low is not None and low.name == "low"
    assert match_profile(_identity(ID_VENDOR_ID="ABCD", ID_FS_TYPE="exfat"), profiles) is None
    fat_only = match_profile(_identity(ID_VENDOR_ID="abcd", ID_FS_TYPE="vfat"), profiles)
    assert fat_only is not None and fat_only.name == "fat-only"
    assert match_profile(_identity(ID_VENDOR_ID="ffff"), profiles) is None


def test_identity_falls_back_to_the_usb_parent() -> None:
    """Missing udev properties are read from the USB parent's sysfs attributes."""

    class UsbParent:  # plain sysfs-like data: the walk itself is exercised with real udev above
        attributes = {"idVendor": b"1234", "idProduct": b"5678", "serial": b"PARENT9",
                      "busnum": b"3", "devnum": b"12"}

    identity = identity_from_properties(
        "/sys/x", {"DEVNAME": "/dev/sdc", "ID_FS_TYPE": "vfat", "ID_FS_USAGE": "filesystem"},
        UsbParent())
    assert (identity.vendor_id, identity.product_id, identity.serial) == (
        "1234", "5678", "PARENT9")
    assert identity.usb_location is not None
    assert (identity.usb_location.bus, identity.usb_location.address) == (3, 12)
    assert identity.bus == "usb"


def test_hostile_serials_are_made_safe() -> None:
    """Serials become plain names: no separators, dot-dot, control characters or excess length."""
    assert clean_serial("X81234567") == "X81234567"
    assert clean_serial("../../etc/passwd") == "etc_passwd"
    assert clean_serial("a\x00b\nc d") == "a_b_c_d"
    assert clean_serial("..") is None
    assert clean_serial("   ") is None
    long_serial = clean_serial("A" * 500)
    assert long_serial is not None and len(long_serial) == 64


def test_docking_key_changes_with_a_new_medium() -> None:
    """Same device, new disk sequence number: a new docking, not a repeat."""
    assert _identity().docking_key == _identity().docking_key
    assert _identity().docking_key != _identity(DISKSEQ="8").docking_key


def test_setup_realparts_is_valid_bash() -> None:
    """scripts/setup-realparts at least parses (it runs for real in CI's scripts/test)."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "setup-realparts"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
