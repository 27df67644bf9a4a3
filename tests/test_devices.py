"""``bwc-dock devices`` lists attached USB storage with its ids and the profile it matches.

Real parts: systemd-udevd, loop-device cameras given a USB identity by the harness's test
rule (udevharness.py), the real ``bwc-dock`` command reading udev's database.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.dock import BWC_DOCK

if TYPE_CHECKING:
    from tests.udevharness import CameraBay

pytest_plugins = ("tests.udevharness",)  # fixtures: udevd, clip_source, camera_bay

pytestmark = [pytest.mark.timeout(180), pytest.mark.realparts]

CONFIG = """\
[storage]
backend = "file"
path = "/mnt/evidence"

[[camera]]
name = "patrol-cam"
usb_vendor_id = "0x1234"
usb_product_id = "0x5678"

[[camera]]
name = "exfat-only-cam"
usb_vendor_id = "0x2f0d"
usb_product_id = "0x0101"
filesystem_types = ["exfat"]
"""


def devices(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BWC_DOCK, "--config", str(config), "devices", *arguments],
                          capture_output=True, text=True, timeout=60, check=True)


def test_devices_names_each_usb_volume_and_the_profile_it_matches(
    camera_bay: CameraBay, tmp_path: Path
) -> None:
    """A camera of a profile, one claimed but unreadable, and an unknown stick, each shown."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    cameras = {
        "patrol": camera_bay.make_camera("vfat", serial="X81234567", label="PATROL",
                                         clip_count=1),
        "claimed": camera_bay.make_camera("vfat", serial="CAM2", vendor_id="2f0d",
                                          product_id="0101", label="BODYCAM", clip_count=1),
        "stick": camera_bay.make_camera("vfat", serial="STICK1", vendor_id="dead",
                                        product_id="beef", label="STICK", clip_count=1),
    }
    nodes = {name: camera_bay.attach(camera) for name, camera in cameras.items()}
    camera_bay.settle()

    listed: dict[str, dict[str, Any]] = {
        entry["device"]: entry for entry in json.loads(devices(config, "--json").stdout)
    }
    shown = {name: listed[node] for name, node in nodes.items()}
    picked = {
        name: (entry["vendor_id"], entry["product_id"], entry["serial"], entry["fs_type"],
               entry["fs_label"], entry["profile"], entry["readable"])
        for name, entry in shown.items()
    }
    assert picked == {
        "patrol": ("1234", "5678", "X81234567", "vfat", "PATROL", "patrol-cam", True),
        "claimed": ("2f0d", "0101", "CAM2", "vfat", "BODYCAM", "exfat-only-cam", False),
        "stick": ("dead", "beef", "STICK1", "vfat", "STICK", None, False),
    }

    table = devices(config).stdout.splitlines()
    rows = {name: next(line.split() for line in table if line.startswith(node + " "))
            for name, node in nodes.items()}
    assert rows["patrol"][-1] == "patrol-cam"
    assert rows["claimed"][-5:] == ["exfat-only-cam", "(filesystem", "vfat", "not", "readable)"]
    assert rows["stick"][-1] == "none"
    assert rows["stick"][1:4] == ["dead", "beef", "STICK1"]
