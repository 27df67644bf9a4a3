"""A real dock PC that loses power: a camera present at boot, then power cuts (QEMU killed
with SIGKILL) mid-copy, mid-upload and right after docking, each followed by a reboot on
the same disks. The tests of this file are one chain, run in file order.

The boot disk and the evidence disk (the file backend's "NAS" at /mnt/evidence) are both
virtio disks of the killed QEMU, so the cut is real for the ledger, staging and central
storage alike: what the guest had not flushed is gone. Cameras plugged at the moment of a
cut are present again at the next power-on (coldplug).

What this rig still cannot show: a real disk's volatile write cache that lies about
flushes (QEMU's disks honour every flush), torn sectors, a NAS that loses power on its
own, and real USB timing. Power cuts land where the rig waits for them (a ledger state,
a .part file), not at every instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realdock.cameras import CameraImage, make_camera
from tests.realdock.dockpc import DockPC, new_dock_pc, write_guest_file
from tests.realdock.machine import wait_until

SLOW_CAMERA_BYTES_PER_SECOND = 192 * 1024
# Uploads limited by the product's own schedule ([[storage.bandwidth]], all week), so a
# 2 MiB clip takes seconds to upload and "mid-upload" is reachable on any machine.
UPLOAD_LIMIT = """
[[storage.bandwidth]]
start = 00:00:00
end = 23:59:59
limit_mb_per_s = 0.25
"""

CAMERAS: dict[str, CameraImage] = {}


@pytest.fixture(scope="module")
def dock_pc(
    realdock_image: Path, accelerator: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DockPC]:
    """One dock PC for the whole chain; each test powers it on as it needs."""
    with new_dock_pc(realdock_image, accelerator, tmp_path_factory.mktemp("powercut")) as pc:
        yield pc
        pc.machine.shut_down()


def test_camera_present_at_boot_is_offloaded(dock_pc: DockPC, camera_dir: Path) -> None:
    """A camera already plugged in when the PC powers on (coldplug) is offloaded."""
    camera = make_camera(camera_dir, serial="COLD1", layout="partitioned-fat32")
    CAMERAS[camera.serial] = camera
    dock_pc.machine.add_camera(camera.path, camera.serial).plugged = True
    dock_pc.machine.power_on()
    dock_pc.wait_active()
    dock_pc.wait_uploaded(camera)
    dock_pc.assert_exactly_once(camera)


def test_power_cut_mid_copy_then_reboot(dock_pc: DockPC, camera_dir: Path) -> None:
    """Power lost while a clip is being copied: after the reboot every clip arrives once."""
    config = dock_pc.machine.run(["cat", "/etc/bwc-dock/config.toml"]).check().stdout
    if "[[storage.bandwidth]]" not in config:
        # appended after the last [[camera]] table would put it inside that table
        head, separator, tail = config.partition("[[camera]]")
        write_guest_file(dock_pc.machine, "/etc/bwc-dock/config.toml",
                         head + UPLOAD_LIMIT + "\n" + separator + tail)
        dock_pc.machine.run(["systemctl", "restart", "bwc-dock"], timeout=300).check()
        dock_pc.wait_active()
    camera = make_camera(camera_dir, serial="CUT1", layout="superfloppy-fat32",
                         clip_count=3, clip_bytes=2 * 1024 * 1024)
    CAMERAS[camera.serial] = camera
    plugged = dock_pc.plug(camera, bytes_per_second=SLOW_CAMERA_BYTES_PER_SECOND)
    dock_pc.wait_mid_copy(camera.serial, 3, done=1)
    dock_pc.machine.power_cut()
    plugged.bytes_per_second = None  # the reboot finds it plugged in, at full speed
    dock_pc.machine.power_on()
    dock_pc.wait_active()


def test_power_cut_mid_upload_then_reboot(dock_pc: DockPC) -> None:
    """Power lost while a clip is being written to central storage (a .part is there):
    after the reboot every clip arrives once and no .part is left."""
    camera = CAMERAS["CUT1"]

    def uploading() -> str | None:
        found = dock_pc.machine.run(
            ["find", f"/mnt/evidence/{camera.serial}", "-name", "*.part"]
        ).stdout.strip()
        return found or None

    wait_until(uploading, timeout=420, what="a .part in central storage", interval=0.5)
    dock_pc.machine.power_cut()
    dock_pc.machine.power_on()
    dock_pc.wait_active()
    dock_pc.wait_uploaded(camera)
    dock_pc.assert_exactly_once(camera)


def test_power_cut_right_after_docking_then_reboot(dock_pc: DockPC, camera_dir: Path) -> None:
    """Power lost the moment a camera is docked: after the reboot it is offloaded once."""
    camera = make_camera(camera_dir, serial="CUT2", layout="superfloppy-fat32",
                         clip_count=2, clip_bytes=1024 * 1024)
    CAMERAS[camera.serial] = camera
    since = dock_pc.guest_now()
    dock_pc.plug(camera)
    dock_pc.wait_event("BWC_EVENT=dock.docked", f"BWC_CAMERA={camera.serial}", since=since,
                       timeout=300)
    dock_pc.machine.power_cut()
    dock_pc.machine.power_on()
    dock_pc.wait_active()
    dock_pc.wait_uploaded(camera)
    for every in CAMERAS.values():
        dock_pc.assert_exactly_once(every)
