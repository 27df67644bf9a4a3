"""A reload's new camera profiles reach the udev source: a device no profile claimed is
docked once a new profile claims it (real udevd, a loop-device camera, a real mount)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bwc_dock.config import parse_config
from bwc_dock.sources.udev import UdevSource
from tests.test_udev_source import QUIET_SECONDS, RecordingListener, make_config

if TYPE_CHECKING:
    from tests.udevharness import CameraBay

pytest_plugins = ("tests.udevharness",)  # fixtures: udevd, clip_source, camera_bay

pytestmark = pytest.mark.timeout(120)


@pytest.mark.realparts
def test_new_profile_docks_a_camera_no_profile_claimed(
    tmp_path: Path, camera_bay: CameraBay
) -> None:
    """USB storage no profile matched stays undocked; after use_profiles with a profile
    for its ids (what a SIGHUP reload hands the source) it is docked and named."""
    config = make_config(tmp_path)
    listener = RecordingListener()
    source = UdevSource(config, rescan_interval_seconds=60)
    source.start(listener)
    try:
        camera = camera_bay.make_camera("vfat", serial="LATE0042", vendor_id="dead",
                                        product_id="beef")
        camera_bay.attach(camera)
        time.sleep(QUIET_SECONDS)
        assert listener.events == []  # no profile claims it yet
        reloaded = parse_config({
            "dock": {"id": "dock-test", "state_dir": str(tmp_path / "state")},
            "storage": {"backend": "file", "path": str(tmp_path / "central")},
            "camera": [{"name": "new-model", "usb_vendor_id": "0xdead",
                        "usb_product_id": "0xbeef"}],
        })
        source.use_profiles(reloaded.camera)
        listener.wait_for("docked", 1)
    finally:
        source.stop()
    [volume] = listener.volumes
    assert (volume.camera_serial, volume.profile_name) == ("LATE0042", "new-model")
