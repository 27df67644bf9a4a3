"""udev-rules/99-bwc-dock.rules parses cleanly, loads in a real udevd, tags and protects cameras.

Real parts: systemd-udevd, loop devices given a USB identity by the harness's test rule.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.udevharness import CameraBay, UdevDaemon

pytest_plugins = ("tests.udevharness",)  # fixtures: udevd, clip_source, camera_bay

pytestmark = [pytest.mark.timeout(120), pytest.mark.realparts]
RULES = Path(__file__).resolve().parent.parent / "udev-rules" / "99-bwc-dock.rules"


def _properties(device: str) -> dict[str, str]:
    output = subprocess.run(["udevadm", "info", "--query=property", device], check=True,
                            capture_output=True, text=True, timeout=30).stdout
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def _settle() -> None:
    subprocess.run(["udevadm", "settle", "--timeout=20"], check=True, timeout=30)


def test_rules_parse_without_a_diagnostic(udevd: UdevDaemon, camera_bay: CameraBay) -> None:
    """udev's own rule checkers have nothing to say about our rules files: `udevadm verify`
    where this udev has it (systemd >= 253), and the parser behind `udevadm test` always."""
    has_verify = subprocess.run(["udevadm", "verify", "--help"], capture_output=True,
                                timeout=10, check=False).returncode == 0
    if has_verify:
        subprocess.run(["udevadm", "verify", str(RULES)], check=True, timeout=30)
    camera = camera_bay.make_camera("vfat")
    device = camera_bay.attach(camera)
    _settle()
    completed = subprocess.run(
        ["udevadm", "test", "--action=change", f"/sys/class/block/{Path(device).name}"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    output = completed.stdout + completed.stderr
    loaded = [path for path in udevd.rule_files if path.suffix == ".rules"]
    assert all(f"Reading rules file: {path}" in output for path in loaded)
    complaints = [line for line in output.splitlines()
                  if any(line.startswith(f"{path}:") for path in loaded)]
    assert complaints == []
    assert "BWC_CAMERA=1" in output


def test_camera_is_tagged_protected_and_named(camera_bay: CameraBay) -> None:
    """A camera of a shipped profile gets BWC_CAMERA=1, UDISKS_IGNORE=1 and /dev/bwc/<serial>."""
    camera = camera_bay.make_camera("exfat", serial="X81234567")
    device = camera_bay.attach(camera)
    _settle()
    properties = _properties(device)
    assert properties["ID_VENDOR_ID"] == "1234"  # from the harness's test rule
    assert properties["BWC_CAMERA"] == "1"
    assert properties["UDISKS_IGNORE"] == "1"
    link = Path("/dev/bwc/X81234567")
    assert link.is_symlink()
    assert link.resolve() == Path(device)

    camera_bay.detach(camera)
    _settle()
    assert not link.exists()
    assert "BWC_CAMERA" not in _properties(device)


def test_unknown_device_is_left_alone(camera_bay: CameraBay) -> None:
    """A USB disk with ids no shipped profile has: no tag, no automount block, no symlink."""
    camera = camera_bay.make_camera("vfat", serial="OTHER1", vendor_id="dead",
                                    product_id="beef")
    device = camera_bay.attach(camera)
    _settle()
    properties = _properties(device)
    assert properties["ID_VENDOR_ID"] == "dead"
    assert "BWC_CAMERA" not in properties
    assert "UDISKS_IGNORE" not in properties
    assert not Path("/dev/bwc/OTHER1").exists()


def test_camera_without_serial_gets_no_symlink(camera_bay: CameraBay) -> None:
    """No serial, no stable name: the tag and the automount block still apply."""
    camera = camera_bay.make_camera("vfat", serial=None)
    device = camera_bay.attach(camera)
    _settle()
    properties = _properties(device)
    assert properties["BWC_CAMERA"] == "1"
    assert "ID_SERIAL_SHORT" not in properties
    links = [Path(link) for link in properties.get("DEVLINKS", "").split()]
    assert not [link for link in links if link.is_relative_to("/dev/bwc")]


def test_rules_file_is_only_tagging(udevd: UdevDaemon) -> None:
    """The shipped rules run nothing and mount nothing (RUN, PROGRAM and IMPORT are absent)."""
    assert shutil.which("udevadm")
    keys = set()
    for line in RULES.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            for item in line.split(","):
                key = re.match(r"\s*([A-Z_]+)", item)
                assert key is not None, item
                keys.add(key.group(1))
    assert keys <= {"ACTION", "SUBSYSTEM", "ENV", "GOTO", "LABEL", "SYMLINK"}
    assert {"ENV", "SYMLINK"} <= keys
