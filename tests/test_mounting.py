"""Camera volumes are mounted read-only, nosuid, nodev and noexec, and proven so by the kernel.

Real parts: loop-device cameras (FAT32 through fusefat, exFAT through exfat-fuse here).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from bwc_dock.mount_paths import find_mount, parse_mountinfo_line
from bwc_dock.mounting import (
    SAFE_FLAGS,
    Mounter,
    MountError,
    MountInfo,
    missing_flags,
    run_command,
    validate_profile_options,
)
from tests.realparts import unavailable

if TYPE_CHECKING:
    from tests.udevharness import CameraBay

pytest_plugins = ("tests.udevharness",)  # fixtures: udevd, clip_source, camera_bay

pytestmark = pytest.mark.timeout(120)
FILESYSTEMS = ["exfat", "vfat"]
# Written out from docs/design.md ("mount -t TYPE -o ro,nosuid,nodev,noexec"), not
# taken from the product's SAFE_FLAGS, so a weakened table fails these tests.
DESIGNED_FLAGS = {"ro", "nosuid", "nodev", "noexec"}
WRITABLE_STEP_FLAGS = {"rw", "nosuid", "nodev", "noexec"}  # only ro is lifted to clear


def _safe(entry: MountInfo | None) -> bool:
    """The kernel reports every designed flag for this mount."""
    return entry is not None and entry.mount_options >= DESIGNED_FLAGS


@pytest.fixture
def mounter(tmp_path: Path) -> Mounter:
    return Mounter(tmp_path / "mounts")


def _attached(bay: CameraBay, fs_type: str, **kwargs: object) -> tuple[str, list[str]]:
    camera = bay.make_camera(fs_type, **kwargs)  # type: ignore[arg-type]
    return bay.attach(camera), camera.files


@pytest.mark.realparts
@pytest.mark.parametrize("fs_type", FILESYSTEMS)
def test_mount_is_read_only_nosuid_nodev_noexec(
    camera_bay: CameraBay, mounter: Mounter, fs_type: str,
) -> None:
    """The kernel reports all four safety flags, writing fails, and the clips are readable."""
    device, files = _attached(camera_bay, fs_type)
    volume = mounter.mount(device, fs_type, "cam0")
    entry = find_mount(volume.mount_point)
    assert entry is not None
    assert entry.mount_options >= DESIGNED_FLAGS
    with pytest.raises(OSError) as refused:
        (volume.mount_point / "new.txt").write_bytes(b"x")
    assert refused.value.errno == errno.EROFS
    with pytest.raises(OSError):
        (volume.mount_point / files[0]).unlink()
    clip = (volume.mount_point / files[0]).read_bytes()
    assert clip[4:8] == b"ftyp"  # a real MP4 came through
    # FAT has no permissions (files show 0777): the private parent keeps others out
    assert mounter.mount_dir.stat().st_mode & 0o777 == 0o700


@pytest.mark.realparts
@pytest.mark.parametrize("fs_type", FILESYSTEMS)
def test_program_on_camera_cannot_execute(
    camera_bay: CameraBay, mounter: Mounter, fs_type: str,
) -> None:
    """A script planted on the camera will not run from the mount (noexec really holds)."""

    def plant(tree: Path) -> list[str]:
        script = tree / "RUNME.SH"
        script.write_text("#!/bin/sh\necho pwned\n")
        script.chmod(0o755)
        return ["RUNME.SH"]

    device, _ = _attached(camera_bay, fs_type, populate=plant)
    volume = mounter.mount(device, fs_type, "cam0")
    script = volume.mount_point / "RUNME.SH"
    assert script.read_text().startswith("#!/bin/sh")
    with pytest.raises(PermissionError):
        subprocess.run([str(script)], check=False, timeout=10)


@pytest.mark.realparts
def test_exfat_fuse_helper_drops_noexec_and_the_mounter_restores_it(
    camera_bay: CameraBay, mounter: Mounter, tmp_path: Path,
) -> None:
    """mount.exfat-fuse ignores noexec; the mounter notices in mountinfo and bind-remounts."""
    device, _ = _attached(camera_bay, "exfat")
    raw_point = tmp_path / "mounts" / "raw"
    raw_point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "exfat", "-o", "ro,nosuid,nodev,noexec", device,
                    str(raw_point)], check=True, timeout=30)
    raw_entry = find_mount(raw_point)
    assert raw_entry is not None
    helper_dropped = missing_flags(raw_entry, tuple(sorted(DESIGNED_FLAGS)))
    subprocess.run(["umount", str(raw_point)], check=True, timeout=30)
    if not raw_entry.fs_type.startswith("fuse"):
        # a kernel exFAT driver keeps noexec, so this path cannot be shown here; the test
        # below forces the restore on any kernel
        unavailable(f"exfat served by {raw_entry.fs_type}, not the FUSE helper that drops noexec")
    # here exfat-fuse serves exfat (see docs/design.md); if it stopped dropping noexec, this test
    # would no longer reach the restore: fail and say so rather than pass without it
    assert helper_dropped == ["noexec"], f"exfat-fuse now keeps the flags: {raw_entry}"

    with capture_logs() as logs:
        volume = mounter.mount(device, "exfat", "cam0")
    entry = find_mount(volume.mount_point)
    assert _safe(entry), entry
    enforced = [log for log in logs if log["event"] == "mount.flags_enforced"]
    assert [log["missing"] for log in enforced] == [["noexec"]]


@pytest.mark.realparts
@pytest.mark.parametrize("fs_type", FILESYSTEMS)
def test_a_mount_that_lost_noexec_is_bind_remounted_with_it(
    camera_bay: CameraBay, tmp_path: Path, fs_type: str,
) -> None:
    """Whatever the helper: a first mount without noexec is seen in mountinfo and restored."""
    device, _ = _attached(camera_bay, fs_type)
    commands: list[list[str]] = []
    first_mount_flags: list[frozenset[str]] = []

    def drop_noexec_from_the_first_mount(arguments: Sequence[str], fds: Sequence[int]) -> None:
        # a real mount(8) call, asked for less than the mounter wanted: the situation a
        # helper that drops noexec creates, here on any kernel and filesystem
        arguments = list(arguments)
        if arguments[:3] == ["mount", "-c", "-t"] and not commands:
            options = arguments[arguments.index("-o") + 1].split(",")
            arguments[arguments.index("-o") + 1] = ",".join(o for o in options if o != "noexec")
        commands.append(arguments)
        run_command(arguments, fds)
        if len(commands) == 1:
            entry = find_mount(tmp_path / "mounts" / "cam0")
            assert entry is not None
            first_mount_flags.append(entry.mount_options)

    mounter = Mounter(tmp_path / "mounts", runner=drop_noexec_from_the_first_mount)
    with capture_logs() as logs:
        volume = mounter.mount(device, fs_type, "cam0")
    assert "noexec" not in first_mount_flags[0]  # the restore really had something to do
    enforced = [log for log in logs if log["event"] == "mount.flags_enforced"]
    assert len(enforced) == 1 and "noexec" in enforced[0]["missing"]
    assert any(command[:4] == ["mount", "-c", "-i", "-o"] and "remount" in command[4]
               and "noexec" in command[4] for command in commands), commands
    assert _safe(find_mount(volume.mount_point))


@pytest.mark.realparts
@pytest.mark.parametrize("fs_type", FILESYSTEMS)
def test_writable_only_inside_the_block(
    camera_bay: CameraBay, mounter: Mounter, fs_type: str,
) -> None:
    """writable() allows deleting a clip; then the volume is read-only again, the delete kept."""
    device, files = _attached(camera_bay, fs_type)
    volume = mounter.mount(device, fs_type, "cam0")
    with mounter.writable(volume) as writable:
        entry = find_mount(writable.mount_point)
        assert entry is not None and entry.mount_options >= WRITABLE_STEP_FLAGS
        (writable.mount_point / files[0]).unlink()
    entry = find_mount(volume.mount_point)
    assert _safe(entry), entry
    assert not (volume.mount_point / files[0]).exists()
    assert (volume.mount_point / files[1]).exists()
    with pytest.raises(OSError):
        (volume.mount_point / "new.txt").write_bytes(b"x")


@pytest.mark.realparts
def test_writable_goes_back_to_read_only_when_the_step_fails(
    camera_bay: CameraBay, mounter: Mounter,
) -> None:
    """An error inside writable() still leaves the camera read-only."""
    device, _ = _attached(camera_bay, "exfat")
    volume = mounter.mount(device, "exfat", "cam0")
    with pytest.raises(RuntimeError, match="clear step failed"), mounter.writable(volume):
        raise RuntimeError("clear step failed")
    entry = find_mount(volume.mount_point)
    assert _safe(entry), entry


@pytest.mark.realparts
def test_lazy_unmount_detaches_at_once_while_a_reader_holds_a_file(
    camera_bay: CameraBay, mounter: Mounter,
) -> None:
    """A yanked camera's mount disappears from the tree even though a copier has a file open."""
    device, files = _attached(camera_bay, "exfat")
    volume = mounter.mount(device, "exfat", "cam0")
    with (volume.mount_point / files[0]).open("rb") as reader:
        mounter.unmount(volume, lazy=True)
        assert find_mount(volume.mount_point) is None
        assert not volume.mount_point.exists()
        assert reader.read(8)[4:8] == b"ftyp"


@pytest.mark.realparts
def test_stale_mounts_from_a_crash_are_cleaned_at_start(
    camera_bay: CameraBay, mounter: Mounter,
) -> None:
    """Mounts left under mount_dir by a killed daemon are unmounted and their dirs removed."""
    device, _ = _attached(camera_bay, "vfat")
    stale = mounter.mount_dir / "loop99"
    stale.mkdir(parents=True)
    subprocess.run(["mount", "-t", "vfat", "-o", "ro", device, str(stale)], check=True,
                   timeout=30)
    (mounter.mount_dir / "leftover-dir").mkdir()
    cleaned = mounter.cleanup_stale_mounts()
    assert cleaned == [stale]
    assert find_mount(stale) is None
    assert list(mounter.mount_dir.iterdir()) == []


@pytest.mark.realparts
def test_mount_failure_is_a_mount_error_and_leaves_nothing(
    camera_bay: CameraBay, mounter: Mounter,
) -> None:
    """Mounting an exFAT camera as vfat fails cleanly: an error, no mount, no directory."""
    device, _ = _attached(camera_bay, "exfat")
    with pytest.raises(MountError):
        mounter.mount(device, "vfat", "cam0")
    assert find_mount(mounter.mount_dir / "cam0") is None


def test_profile_options_that_weaken_the_mount_are_refused() -> None:
    """A profile may tune a mount (uid, iocharset) but never undo ro/nosuid/nodev/noexec."""
    assert validate_profile_options(["uid=0", "iocharset=utf8", "noatime"]) == (
        "uid=0", "iocharset=utf8", "noatime")
    for bad in ["rw", "exec", "suid", "dev", "defaults", "remount", "x-mount.mkdir",
                "uid=0,exec", "opt with space", "utf8\n"]:
        with pytest.raises(MountError):
            validate_profile_options([bad])


def test_mount_point_names_cannot_escape_the_mount_dir(tmp_path: Path) -> None:
    """Mount point names are plain: no separators, no dots, no leading dash."""
    mounter = Mounter(tmp_path)
    assert mounter.mount_point_for("sdb1") == tmp_path / "sdb1"
    assert mounter.mount_point_for("nvme0n1p1") == tmp_path / "nvme0n1p1"
    for bad in ["..", "../etc", "a/b", "", "x" * 65, ".hidden", "-o", "a.b", "sdb1\n"]:
        with pytest.raises(MountError):
            mounter.mount_point_for(bad)


def test_mountinfo_lines_are_parsed_with_escapes() -> None:
    """Spaces in mount points arrive as \\040 and are decoded; optional fields are skipped."""
    line = ("42 27 7:0 / /var/lib/bwc\\040dock/m ro,nosuid,nodev,noexec,relatime shared:5 - "
            "fuseblk /dev/loop0 ro,user_id=0,allow_other,blksize=4096")
    entry = parse_mountinfo_line(line)
    assert entry.mount_point == Path("/var/lib/bwc dock/m")
    assert entry.fs_type == "fuseblk"
    assert entry.source == "/dev/loop0"
    assert not missing_flags(entry)
    assert os.fspath(entry.mount_point).count(" ") == 1
    assert missing_flags(parse_mountinfo_line(line.replace(",noexec,", ","))) == ["noexec"]


def test_the_product_safety_flags_are_the_designed_ones() -> None:
    """SAFE_FLAGS, what every camera mount asks for and checks, is ro,nosuid,nodev,noexec."""
    assert set(SAFE_FLAGS) == DESIGNED_FLAGS and len(SAFE_FLAGS) == 4
