"""resync with no daemon runs the daemon's worker loops: a docked camera larger than
staging is offloaded whole (a real tmpfs as staging, the real command)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.dock import Dock, central_objects, make_camera
from tests.test_staging_full import small_staging  # noqa: F401 - the 40 MiB tmpfs fixture

MIB = 1024 * 1024


def test_resync_offloads_a_docked_camera_larger_than_staging(
    dock: Dock,
    small_staging: Path,  # noqa: F811 - the fixture imported above
) -> None:
    """Eight 10 MiB clips the ledger never saw, on a docked camera, through 40 MiB of
    staging: resync records, copies and uploads all of them, making room as it goes."""
    dock.write_config(dock={"staging_dir": str(small_staging), "staging_reserve_mb": 4})
    expected = make_camera(dock.watch_dir / "BIG1", [10 * MIB + n for n in range(8)],
                           sidecars=False)

    result = dock.cli("resync", "--json")

    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert (report["copied"], report["uploaded"]) == (8, 8)
    assert [c["state"] for c in dock.clips()] == ["uploaded"] * 8
    assert sorted(central_objects(dock.nas).values()) == sorted(expected.values())
