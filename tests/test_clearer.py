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
