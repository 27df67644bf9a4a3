"""The systemd units pass systemd-analyze verify and keep privilege where docs/design.md puts it.

bwc-dock.service (parses camera content, talks to the network) holds no capability, no
mount syscall and no block device; bwc-dock-mount.service (the camera mount helper) holds
CAP_SYS_ADMIN, @mount and the camera block devices, and no network.

`systemd-analyze verify` insists that ExecStart's program exists, and the unit's program,
/opt/bwc-dock/venv/bin/bwc-dock, exists only after scripts/install. So the unit is
verified as a copy in which that one path is replaced by the bwc-dock console script of
the running environment (the same entry point the installer puts in its venv), and the
test asserts that this is the only difference. tests/test_install.py verifies the unit
the installer wrote against the venv the installer built.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import realparts

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "bwc-dock.service"
HELPER_UNIT = SYSTEMD / "bwc-dock-mount.service"
HELPER_SOCKET_UNIT = SYSTEMD / "bwc-dock-mount.socket"
INSTALLED_PROGRAM = "/opt/bwc-dock/venv/bin/bwc-dock"
INSTALLED_HELPER = "/opt/bwc-dock/venv/bin/bwc-dock-mount"
# 9.6 ("UNSAFE") for the same service without hardening; 2.4 while it still mounted
# (CAP_SYS_ADMIN, @mount, block devices). What remains: root, network, usbfs.
MAX_EXPOSURE = 1.9
# The helper may not have a mount namespace (its mounts must reach the host), so the
# namespace-based settings are open; it has no network and only CAP_SYS_ADMIN.
MAX_HELPER_EXPOSURE = 3.0


def unit_with_program(directory: Path, program: Path, text: str | None = None) -> Path:
    """A copy of the unit whose ExecStart runs ``program`` instead of the installed path."""
    text = UNIT.read_text() if text is None else text
    copy = directory / "bwc-dock.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_PROGRAM} ", f"ExecStart={program} "))
    changed = [
        (before, after)
        for before, after in zip(text.splitlines(), copy.read_text().splitlines(), strict=True)
        if before != after
    ]
    assert changed == [(f"ExecStart={INSTALLED_PROGRAM} run", f"ExecStart={program} run")]
    return copy


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = realparts.need_command("systemd-analyze")
    return subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def console_script() -> Path:
    program = Path(sys.executable).parent / "bwc-dock"
    if not program.exists():
        pytest.fail(f"{program} missing: install the package (pip install -e .) first")
    return program


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """verify exits 0 and prints nothing: no unknown key, no bad value, no missing program."""
    result = verify(unit_with_program(tmp_path, console_script()))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """The check can fail: a misspelt hardening key is reported (verify still exits 0 for it)."""
    broken = UNIT.read_text().replace("ProtectHome=yes", "ProtectHomes=yes")
    result = verify(unit_with_program(tmp_path, console_script(), broken))
    assert "Unknown key 'ProtectHomes'" in result.stderr


def test_verify_fails_when_the_program_is_missing(tmp_path: Path) -> None:
    """verify checks that ExecStart names an executable: a unit pointing at a program that
    is not there fails, so the passing verify above means something."""
    missing = tmp_path / "not-installed" / "bwc-dock"
    result = verify(unit_with_program(tmp_path, missing))
    assert result.returncode != 0
    assert f"Command {missing} is not executable" in result.stderr


def test_security_exposure_stays_low(tmp_path: Path) -> None:
    """systemd-analyze security rates the unit at most 2.4 (of 10) and flags what is expected."""
    analyze = realparts.need_command("systemd-analyze")
    unit = unit_with_program(tmp_path, console_script())
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    exposure = re.search(r"Overall exposure level for bwc-dock\.service: (\d+\.\d)", result.stdout)
    assert exposure, result.stdout
    assert float(exposure.group(1)) <= MAX_EXPOSURE
    open_items = {
        match.group(1)
        for match in re.finditer(r"^✗ ([A-Za-z]+)", result.stdout, flags=re.MULTILINE)
    }
    # each remaining one is a need of the job, explained in the unit
    assert open_items <= {
        "SystemCallFilter", "RootDirectory", "User", "PrivateDevices",
        "RestrictAddressFamilies", "CapabilityBoundingSet", "PrivateNetwork", "PrivateUsers",
        "DeviceAllow", "IPAddressDeny",
    }


def helper_with_program(directory: Path, program: Path, text: str | None = None) -> Path:
    """A copy of the helper unit (and its socket) whose ExecStart runs ``program``."""
    text = HELPER_UNIT.read_text() if text is None else text
    copy = directory / "bwc-dock-mount.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_HELPER} ", f"ExecStart={program} "))
    assert copy.read_text().count(f"ExecStart={program} ") == 1
    (directory / "bwc-dock-mount.socket").write_text(HELPER_SOCKET_UNIT.read_text())
    return copy


def helper_program() -> Path:
    program = Path(sys.executable).parent / "bwc-dock-mount"
    if not program.exists():
        pytest.fail(f"{program} missing: install the package (pip install -e .) first")
    return program


def test_helper_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The mount helper's service and socket verify cleanly (exit 0, nothing printed)."""
    unit = helper_with_program(tmp_path, helper_program())
    for checked in (unit, tmp_path / "bwc-dock-mount.socket"):
        result = verify(checked)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), checked.name


def test_helper_security_exposure_stays_bounded(tmp_path: Path) -> None:
    """systemd-analyze security rates the helper at most 3.0, and network is not among the
    open items (it is denied: PrivateNetwork, AF_UNIX only)."""
    analyze = realparts.need_command("systemd-analyze")
    unit = helper_with_program(tmp_path, helper_program())
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    exposure = re.search(
        r"Overall exposure level for bwc-dock-mount\.service: (\d+\.\d)", result.stdout
    )
    assert exposure, result.stdout
    assert float(exposure.group(1)) <= MAX_HELPER_EXPOSURE
    assert not re.search(r"^✗ (PrivateNetwork|IPAddressDeny)=", result.stdout, re.MULTILINE)


def settings(unit_file: Path = UNIT) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in unit_file.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_declares_the_service_contract() -> None:
    """Notify type, watchdog, restart, reload by SIGHUP, stop timeout, state and credentials."""
    unit = settings()
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == [f"{INSTALLED_PROGRAM} run"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["WatchdogSec"] == ["60s"]
    assert unit["TimeoutStopSec"] == ["2min"]
    assert unit["KillMode"] == ["mixed"]
    assert unit["StateDirectory"] == ["bwc-dock"]
    assert unit["LoadCredential"] == ["aws-credentials:/etc/bwc-dock/aws-credentials"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_NETLINK AF_INET AF_INET6"]
    assert unit["DevicePolicy"] == ["closed"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["MemoryMax"] == ["1G"]  # a planted giant read back cannot eat the PC


def test_daemon_holds_no_privilege_to_mount() -> None:
    """The daemon unit has no capability, no @mount, no block device, no PID 1 private bus,
    no system D-Bus, no root user manager, and mounts through the helper's socket."""
    unit = settings()
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["AmbientCapabilities"] == [""]
    assert not any("@mount" in value.split() for value in unit["SystemCallFilter"])
    assert unit["DeviceAllow"] == ["char-usb_device rw"]
    # PID 1's private bus hidden with all of /run/systemd but what the daemon uses, the
    # system D-Bus and root's user manager with their whole folders
    assert unit["TemporaryFileSystem"] == ["/run/systemd:ro"]
    visible = " ".join(unit["BindReadOnlyPaths"]).split()
    assert "/run/systemd/private" not in {path.lstrip("-") for path in visible}
    inaccessible = " ".join(unit["InaccessiblePaths"]).split()
    assert {"-/run/dbus", "-/run/user"} <= set(inaccessible)
    assert "BWC_DOCK_MOUNT_HELPER_SOCKET=/run/bwc-dock-mount.sock" in unit["Environment"]
    # nothing it can plant in /dev (links, renamed nodes) or where the helper mounts: /run
    # is read-only under ProtectSystem=strict but for its own RuntimeDirectory=
    assert unit["ReadOnlyPaths"] == ["/dev"]
    assert unit["ProtectSystem"] == ["strict"]
    helper_root = settings(HELPER_UNIT)["ExecStart"][0].split("--mount-root ")[1]
    writable = [f"/run/{name}" for name in " ".join(unit["RuntimeDirectory"]).split()]
    writable += [path.lstrip("-") for path in " ".join(unit["ReadWritePaths"]).split()]
    assert not [path for path in writable if Path(helper_root).is_relative_to(path)]
    assert "bwc-dock-mount.socket" in " ".join(unit["Wants"])
    assert "bwc-dock-mount.service" in " ".join(unit["After"])


def test_helper_holds_mount_privilege_and_no_network() -> None:
    """The helper unit has CAP_SYS_ADMIN, @mount and the camera block devices, no network,
    and no setting that would give it a mount namespace of its own."""
    unit = settings(HELPER_UNIT)
    assert unit["ExecStart"] == [f"{INSTALLED_HELPER} --mount-root /run/bwc-dock-mount/cameras"]
    assert unit["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN"]
    assert "@system-service @mount" in unit["SystemCallFilter"]
    assert {"block-sd rw", "block-blkext rw", "block-loop rw", "/dev/fuse rw"} == set(
        unit["DeviceAllow"]
    )
    assert unit["DevicePolicy"] == ["closed"]
    assert unit["PrivateNetwork"] == ["yes"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert unit["PrivateMounts"] == ["no"]  # PrivateNetwork= would imply it
    namespace_settings = {
        "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
        "ProcSubset", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "BindPaths",
        "TemporaryFileSystem", "MountFlags", "RootDirectory",
    }
    assert not namespace_settings & set(unit)
    socket_unit = settings(HELPER_SOCKET_UNIT)
    assert socket_unit["ListenStream"] == ["/run/bwc-dock-mount.sock"]
    assert socket_unit["SocketMode"] == ["0600"]
    assert socket_unit["Accept"] == ["no"]
