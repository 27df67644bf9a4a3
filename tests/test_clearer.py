"""Clear after upload deletes only camera files that are still what was copied (a real
ledger, a real camera folder)."""

from __future__ import annotations

import os

from bwc_dock.clearer import clear_camera
from bwc_dock.config import load_config
from bwc_dock.ledger import Ledger
from tests.dock import Dock, make_camera


def test_a_clip_rewritten_with_its_old_size_is_not_cleared(dock: Dock) -> None:
    """A verified clip whose file got a new mtime (same size) since it was copied stays
    on the camera; its unchanged neighbour is deleted."""
    camera = dock.root / "card"
    make_camera(camera, [1000, 1000], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    first, second = sorted(camera.rglob("*.MP4"))
    os.utime(first, ns=(1_800_000_000_000_000_000, 1_800_000_000_000_000_000))
    ledger = Ledger.open(load_config(dock.config_path), "test")
    try:
        assert clear_camera(ledger, "X1", camera, "test-device") == 2
    finally:
        ledger.close()
    assert first.exists()
    assert not second.exists()


def test_a_sidecar_rewritten_with_its_old_size_is_not_cleared(dock: Dock) -> None:
    """A sidecar whose file got a new mtime (same size) after it was copied stays on the
    camera; its clip and the clip's unchanged sidecar are deleted."""
    camera = dock.root / "card"
    make_camera(camera, [1000, 1000])  # the second clip has a .JPG and a .GPS
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    folder = camera / "DCIM" / "100BWC"
    changed = folder / "20261124_000002_0002.GPS"
    unchanged = folder / "20261124_000002_0002.JPG"
    os.utime(changed, ns=(1_800_000_000_000_000_000, 1_800_000_000_000_000_000))
    ledger = Ledger.open(load_config(dock.config_path), "test")
    try:
        assert clear_camera(ledger, "X1", camera, "test-device") == 2
    finally:
        ledger.close()
    assert changed.exists()
    assert not unchanged.exists()
    assert not (folder / "20261124_000002_0002.MP4").exists()
