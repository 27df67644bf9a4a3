"""A real dock PC, one long boot: install per the README, start, hot-plug cameras of every
layout, stop/restart/reload mid-copy, yank mid-copy, an unknown stick, a corrupt FAT, and
pyusb inside the hardened unit.

The guest is Debian 12 with its own kernel, systemd as PID 1 and udevd, booted from a
virtio disk (sd_mod is not loaded at boot, as on an NVMe/eMMC dock PC); cameras are QEMU
``usb-storage`` devices on an xHCI bus, mounted by the guest kernel's own vfat and exfat
drivers. Every offload is checked against the SHA-256 of each file taken on the host when
the camera image was made: exactly once in central storage, ``audit verify`` passing, no
``.part`` left in staging or central storage.

What this rig still cannot show: a real disk's volatile write cache (QEMU's disks honour
flushes exactly), real USB timing and electrical yanks (``device_del`` is a clean
detach), vendor firmware quirks of real cameras and hubs, and the speed of a real PC
(TCG runs about ten times slower, so timing bugs may hide or appear).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.realdock.cameras import CameraImage, corrupt_fat, make_camera
from tests.realdock.dockpc import BWC_DOCK, LEDGER, DockPC, new_dock_pc
from tests.realdock.machine import MachineError, wait_until

HARDENED_MOUNT_OPTIONS = {"ro", "nosuid", "nodev", "noexec"}
CAP_SYS_ADMIN = 21  # linux/capability.h
# Slow enough that a mount is still there to inspect, and that "mid-copy" lasts seconds
# on any machine: QEMU throttles the camera's reads, the guest's speed does not matter.
SLOW_CAMERA_BYTES_PER_SECOND = 192 * 1024
# A corrupt camera may be tried again with a backoff from the rescan interval (20 s in the
# guest config), never in a loop: more events than this about it in the window is a storm.
STORM_WINDOW_SECONDS = 60
STORM_LIMIT = 8
HOTPLUG_SERIALS = {
    "superfloppy-fat32": "HOTFLOPPY",
    "partitioned-fat32": "HOTPARTFAT",
    "partitioned-exfat": "HOTEXFAT",
}


@pytest.fixture(scope="module")
def dock_pc(
    realdock_image: Path, accelerator: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DockPC]:
    """One dock PC, powered on once for every test of this file (in file order)."""
    with new_dock_pc(realdock_image, accelerator, tmp_path_factory.mktemp("dockpc")) as pc:
        pc.machine.power_on()
        yield pc
        pc.machine.shut_down()


def wait_docked(pc: DockPC, camera: CameraImage, since: str) -> dict[str, str]:
    """Until the daemon logs dock.docked for ``camera``; a mount failure fails at once."""

    def docked() -> dict[str, str] | None:
        failures = pc.events("BWC_EVENT=dock.mount_failed", f"BWC_SERIAL={camera.serial}",
                             since=since)
        if failures:
            raise AssertionError(
                f"{camera.serial} ({camera.layout}) was not mounted: "
                f"{failures[-1].get('MESSAGE')}\n{pc.story()}"
            )
        found = pc.events("BWC_EVENT=dock.docked", f"BWC_CAMERA={camera.serial}", since=since)
        return found[-1] if found else None

    return wait_until(docked, timeout=300, what=f"{camera.serial} docked", interval=2)


def test_readme_install_commands_work_verbatim(dock_pc: DockPC) -> None:
    """After scripts/install (run in the image build, as the README says), the README's
    next commands work as typed: bwc-dock is on PATH, config check passes, enable --now."""
    machine = dock_pc.machine
    found = machine.shell("command -v bwc-dock")
    assert found.exit_code == 0, f"bwc-dock is not on PATH after scripts/install: {found}"
    machine.shell("bwc-dock config check").check()
    machine.shell("systemctl enable --now bwc-dock").check()
    rules = machine.shell("bwc-dock udev-rules").check().stdout
    installed = machine.run(["cat", "/etc/udev/rules.d/99-bwc-dock.rules"]).check().stdout
    assert rules.strip() == installed.strip(), "installed udev rules differ from the config's"


def test_enable_now_reports_ready_and_status(dock_pc: DockPC) -> None:
    """Under systemd as PID 1 the Type=notify unit gets READY=1 and shows a STATUS line."""
    state = dock_pc.wait_active()
    assert state["ActiveState"] == "active"
    assert state["StatusText"], f"no STATUS= line: {state}"
    assert state["NRestarts"] == "0", state


def test_the_daemon_cannot_reach_the_system_manager(dock_pc: DockPC) -> None:
    """In the daemon's mount namespace systemctl reaches neither PID 1's private bus nor
    the system D-Bus (it could start any unit as full root), and root's user manager is
    not there; sd_notify's and journald's sockets are."""
    pid = str(dock_pc.main_pid())
    machine = dock_pc.machine
    machine.run(["systemctl", "show", "-p", "Version"]).check()  # reachable from the host
    inside = machine.run(["nsenter", "-t", pid, "-m", "--", "systemctl", "show", "-p",
                          "Version"], timeout=60)
    assert inside.exit_code != 0, inside
    assert "Failed to connect to bus" in inside.stderr, inside
    machine.run(["nsenter", "-t", pid, "-m", "--", "sh", "-c",
                 "test -S /run/systemd/notify && test -S /run/systemd/journal/socket "
                 "&& ! test -e /run/systemd/private && ! test -e /run/user/0 "
                 "&& ! test -e /run/dbus/system_bus_socket"], timeout=60).check()


@pytest.mark.parametrize(
    "layout", ["superfloppy-fat32", "partitioned-fat32", "partitioned-exfat"]
)
def test_hotplugged_camera_is_mounted_hardened_and_offloaded(
    dock_pc: DockPC, camera_dir: Path, layout: str
) -> None:
    """A camera hot-plugged after boot is mounted by the mount helper with the kernel's own
    driver, read-only, nosuid, nodev, noexec, seen in the daemon's namespace, while the
    daemon holds no capability at all; every file arrives exactly once."""
    serial = HOTPLUG_SERIALS[layout]
    camera = make_camera(camera_dir, serial=serial, layout=layout)
    since = dock_pc.guest_now()
    dock_pc.plug(camera, bytes_per_second=SLOW_CAMERA_BYTES_PER_SECOND)
    docked = wait_docked(dock_pc, camera, since)
    mounts = dock_pc.daemon_mounts()
    assert mounts, f"dock.docked but no camera mount in the daemon's namespace: {docked}"
    mount_point, options, source = mounts[-1]
    assert set(options.split(",")) >= HARDENED_MOUNT_OPTIONS, (mount_point, options)
    expected_type = "exfat" if "exfat" in layout else "vfat"
    # propagation may show the mount more than once in the daemon's namespace (under /run
    # and under the binds ProtectSystem=strict adds over it)
    fs_types = set(dock_pc.machine.run(["findmnt", "-N", str(dock_pc.main_pid()), "-n", "-o",
                                        "FSTYPE", mount_point]).stdout.split())
    assert fs_types == {expected_type}, f"{source} mounted as {fs_types}, not the kernel driver"
    # the helper mounted it in the host's namespace; the daemon, while reading that very
    # mount, has no CAP_SYS_ADMIN (nor any capability) effective or in its bounding set
    # (its source reads /proc/self/fd/N: the helper mounts from a checked descriptor, so
    # the device is named by number)
    host = dock_pc.machine.run(["findmnt", "-n", "-o", "MAJ:MIN", mount_point]).stdout.split()
    seen = dock_pc.machine.run(["findmnt", "-N", str(dock_pc.main_pid()), "-n", "-o", "MAJ:MIN",
                                mount_point]).stdout.split()
    assert host and host[0].startswith("8:"), f"{mount_point} in the host's namespace: {host!r}"
    assert set(seen) == {host[0]}, (source, host, seen)
    capabilities = dock_pc.daemon_capabilities()
    assert capabilities["CapEff"] & (1 << CAP_SYS_ADMIN) == 0, capabilities
    assert capabilities["CapBnd"] & (1 << CAP_SYS_ADMIN) == 0, capabilities
    assert capabilities == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0}, capabilities
    assert dock_pc.daemon_mounts(), "the camera vanished from the daemon's namespace"
    if layout == "superfloppy-fat32":
        tags = dock_pc.machine.run(["udevadm", "info", "--query=property",
                                    f"--name=/dev/block/{host[0]}"])
        assert "BWC_CAMERA=1" in tags.stdout, f"udev rules did not tag the camera: {tags.stdout}"
    dock_pc.machine.set_camera_speed(dock_pc.machine.cameras[serial], None)
    dock_pc.wait_uploaded(camera)
    dock_pc.assert_exactly_once(camera)
    dock_pc.wait_clips(serial, "unmounted after its offload", lambda _: not any(
        mount[0] == mount_point for mount in dock_pc.daemon_mounts()))


def test_stop_restart_and_reload_mid_copy(dock_pc: DockPC, camera_dir: Path) -> None:
    """systemctl reload, restart and stop, each while a clip is being copied, lose nothing
    and copy nothing twice."""
    camera = make_camera(camera_dir, serial="SRR1", layout="superfloppy-fat32",
                         clip_count=5, clip_bytes=1024 * 1024)
    dock_pc.plug(camera, bytes_per_second=SLOW_CAMERA_BYTES_PER_SECOND)
    dock_pc.wait_mid_copy(camera.serial, 5, done=1)
    pid = dock_pc.main_pid()
    dock_pc.machine.run(["systemctl", "reload", "bwc-dock"]).check()
    dock_pc.wait_event("BWC_EVENT=config.reloaded", timeout=120)
    assert dock_pc.main_pid() == pid, "reload restarted the daemon"
    dock_pc.wait_mid_copy(camera.serial, 5, done=2)
    dock_pc.machine.run(["systemctl", "restart", "bwc-dock"], timeout=300).check()
    dock_pc.wait_active()
    dock_pc.wait_mid_copy(camera.serial, 5, done=3)
    dock_pc.machine.run(["systemctl", "stop", "bwc-dock"], timeout=300).check()
    assert dock_pc.unit("ActiveState")["ActiveState"] == "inactive"
    assert not [clip for clip in dock_pc.clips(camera.serial) if clip["state"] == "copying"]
    dock_pc.machine.set_camera_speed(dock_pc.machine.cameras[camera.serial], None)
    dock_pc.machine.run(["systemctl", "start", "bwc-dock"], timeout=300).check()
    dock_pc.wait_uploaded(camera)
    dock_pc.assert_exactly_once(camera)


def test_yank_mid_copy_then_replug(dock_pc: DockPC, camera_dir: Path) -> None:
    """A camera pulled out (device_del) mid-copy and docked again ends with every clip
    exactly once."""
    camera = make_camera(camera_dir, serial="YANK1", layout="partitioned-fat32",
                         clip_count=3, clip_bytes=1536 * 1024)
    since = dock_pc.guest_now()
    plugged = dock_pc.plug(camera, bytes_per_second=SLOW_CAMERA_BYTES_PER_SECOND)
    dock_pc.wait_mid_copy(camera.serial, 3, done=1)
    dock_pc.machine.yank(plugged)
    dock_pc.wait_event("BWC_EVENT=dock.undocked", f"BWC_CAMERA={camera.serial}", since=since,
                       timeout=120)
    dock_pc.wait_clips(camera.serial, "no clip left copying after the yank",
                       lambda clips: all(clip["state"] != "copying" for clip in clips),
                       timeout=120)
    assert not dock_pc.daemon_mounts(), "the yanked camera is still mounted"
    dock_pc.plug(camera, bytes_per_second=None)
    dock_pc.wait_uploaded(camera)
    dock_pc.assert_exactly_once(camera)


def test_unknown_usb_storage_is_never_mounted(dock_pc: DockPC, camera_dir: Path) -> None:
    """USB storage that no profile matches (same bus ids, another label) is logged once
    with its ids and never mounted."""
    stick = make_camera(camera_dir, serial="STICK1", layout="superfloppy-fat32",
                        label="USBSTICK", clip_count=1, clip_bytes=64 * 1024)
    since = dock_pc.guest_now()
    plugged = dock_pc.plug(stick)
    dock_pc.wait_event("BWC_EVENT=dock.unknown_device", "BWC_SERIAL=STICK1", since=since,
                       timeout=300)
    assert not dock_pc.daemon_mounts(), "an unknown device was mounted"
    assert dock_pc.clips("STICK1") == []
    # the helper mounts from a descriptor (source /proc/self/fd/N), so look for device
    # numbers, not names: no mount of the host is on a USB disk (sd, major 8)
    host_numbers = dock_pc.machine.run(["findmnt", "-n", "-o", "MAJ:MIN"]).stdout.split()
    assert not [number for number in host_numbers if number.split(":")[0] == "8"]
    dock_pc.machine.yank(plugged)


def test_corrupt_fat_camera_raises_an_alarm_without_a_retry_storm(
    dock_pc: DockPC, camera_dir: Path
) -> None:
    """A camera whose FAT is zeroed gives a clear error naming it and an alarm; the daemon
    neither crashes nor retries in a loop."""
    camera = make_camera(camera_dir, serial="CORRUPT1", layout="superfloppy-fat32",
                         clip_count=2, clip_bytes=256 * 1024)
    corrupt_fat(camera)
    pid_before = dock_pc.main_pid()
    restarts_before = dock_pc.unit("NRestarts")["NRestarts"]
    since = dock_pc.guest_now()
    plugged = dock_pc.plug(camera)
    failed = dock_pc.wait_event("BWC_EVENT=dock.mount_failed", "BWC_SERIAL=CORRUPT1",
                                since=since, timeout=300)
    assert failed[0]["PRIORITY"] == "3", failed[0]
    assert failed[0].get("BWC_ERROR"), f"the error does not say why: {failed[0]}"
    alarms = dock_pc.wait_event("BWC_EVENT=alarm.raised", "BWC_ALARM=camera_unmountable",
                                "BWC_CAMERA=CORRUPT1", since=since, timeout=300)
    print(f"realdock: corrupt FAT: {failed[0]['MESSAGE']} / {alarms[0]['MESSAGE']}")
    wait_until(
        lambda: "unmountable" in dock_pc.unit("StatusText")["StatusText"],
        timeout=120, what="the alarm in systemd's STATUS line",
    )
    assert not dock_pc.daemon_mounts(), "the corrupt camera is mounted"
    # A time window, on purpose: "no storm" is a rate, counted from the journal afterwards.
    window_start = dock_pc.guest_now()
    time.sleep(STORM_WINDOW_SECONDS)
    repeated = [
        entry for entry in dock_pc.events(since=window_start)
        if entry.get("BWC_SERIAL") == "CORRUPT1" or entry.get("BWC_CAMERA") == "CORRUPT1"
    ]
    assert len(repeated) <= STORM_LIMIT, (
        f"{len(repeated)} events about CORRUPT1 in {STORM_WINDOW_SECONDS} s: "
        f"{[entry.get('MESSAGE') for entry in repeated]}"
    )
    assert dock_pc.main_pid() == pid_before, "the daemon restarted"
    assert dock_pc.unit("NRestarts")["NRestarts"] == restarts_before
    dock_pc.machine.yank(plugged)


def test_pyusb_reads_the_device_descriptor_inside_the_hardened_unit(
    dock_pc: DockPC, camera_dir: Path
) -> None:
    """A profile's control transfer (GET_DESCRIPTOR of the device) reaches the hot-plugged
    device through pyusb and libusb from inside the hardened unit; the camera is offloaded."""
    camera = make_camera(camera_dir, serial="USBDESC1", layout="superfloppy-fat32",
                         label="BWCUSB", clip_count=1, clip_bytes=512 * 1024)
    since = dock_pc.guest_now()
    dock_pc.plug(camera)
    sent = dock_pc.wait_event("BWC_EVENT=usb.control_transfer", since=since, timeout=300)
    assert sent[-1].get("BWC_REQUEST") == "6", sent[-1]
    # the 18-byte device descriptor as the device sent it: bLength 18, type 1 (device),
    # then idVendor 46f4 and idProduct 0001 little-endian at offset 8
    descriptor = bytes.fromhex(sent[-1].get("BWC_ANSWER_HEX", ""))
    assert len(descriptor) == 18 and descriptor[:2] == b"\x12\x01", sent[-1]
    assert descriptor[8:12] == bytes.fromhex("f4460100"), descriptor.hex()
    failed = dock_pc.events("BWC_EVENT=usb.control_transfer_failed", since=since)
    assert failed == [], failed
    dock_pc.wait_uploaded(camera)
    dock_pc.assert_exactly_once(camera)


# file -> the New York wall clock its FAT/exFAT entry holds, and (UTC, daylight-saving
# flag) as the dock must record it
NEW_YORK_STAMPS = {
    "DCIM/100BWC/A.MP4": (datetime(2026, 11, 1, 1, 30), "2026-11-01T05:30:00+00:00", "ambiguous"),
    "DCIM/100BWC/B.MP4": (datetime(2026, 3, 8, 2, 30), "2026-03-08T07:30:00+00:00", "nonexistent"),
    "DCIM/100BWC/C.MP4": (datetime(2026, 11, 24, 20, 14), "2026-11-25T01:14:00+00:00", None),
}


@pytest.mark.parametrize(("layout", "serial"), [("superfloppy-fat32", "NYFAT"),
                                                ("partitioned-exfat", "NYEXFAT")])
def test_local_time_camera_timestamps_through_the_kernel_drivers(
    dock_pc: DockPC, camera_dir: Path, layout: str, serial: str
) -> None:
    """A camera keeping New York time, its clips dated only by their FAT32 / exFAT
    timestamps, mounted by the kernel's vfat (tz=UTC) and exfat drivers: each recorded
    time is the wall clock read in New York, the DST hours flagged; the docking records
    the dock's clock state."""
    stamped = {path: wall for path, (wall, _utc, _flag) in NEW_YORK_STAMPS.items()}
    camera = make_camera(camera_dir, serial=serial, layout=layout, label="BWCNY",
                         stamped=stamped)
    dock_pc.plug(camera)
    dock_pc.wait_uploaded(camera)
    listed = dock_pc.machine.run([BWC_DOCK, "clips", "--json", "--camera", serial],
                                 timeout=120).check().stdout
    clips = {clip["source_path"]: clip for clip in json.loads(listed)}
    found = {path: (clip["recorded_at"], clip["time_flag"], clip["camera_time_source"])
             for path, clip in clips.items()}
    assert found == {path: (utc, flag, "mtime")
                     for path, (_wall, utc, flag) in NEW_YORK_STAMPS.items()}
    query = ("select dock_clock_source, dock_clock_synchronized, camera_clock_source "
             f"from dockings where camera_serial = '{serial}'")
    dockings = dock_pc.machine.run(["sqlite3", "-readonly", "-json", LEDGER, query],
                                   timeout=60).check().stdout
    [docking] = json.loads(dockings)
    print(f"realdock: {serial} docking clocks: {docking}")
    assert docking["dock_clock_source"] in ("timesyncd", "chrony", "none", "adjtimex")
    assert docking["camera_clock_source"] is None  # the profile reads no camera clock


def test_the_fleet_document_is_signed_and_verified(dock_pc: DockPC) -> None:
    """The guest's fleet document, signed with its own key (ssh-keygen of openssh-client
    inside the hardened unit), shows as verified in bwc-dock fleet."""

    def signature() -> str | None:
        result = dock_pc.machine.run([BWC_DOCK, "fleet", "--json"], timeout=120)
        if result.exit_code not in (0, 1):
            raise MachineError(f"fleet failed: {result}")
        docks = json.loads(result.stdout)["docks"]
        found = [entry.get("signature") for entry in docks if entry.get("dock") == "realdock"]
        return found[0] if found else None

    assert wait_until(signature, timeout=300, what="a fleet document", interval=5) == "verified"


def test_daemon_survived_everything(dock_pc: DockPC) -> None:
    """After all of the above the unit still runs, and the audit chain verifies."""
    state = dock_pc.wait_active()
    assert state["ActiveState"] == "active"
    result = dock_pc.machine.run([BWC_DOCK, "status", "--json"], timeout=120)
    if result.exit_code not in (0, 1):
        raise MachineError(f"status failed: {result}")
    dock_pc.assert_audit_verifies()
