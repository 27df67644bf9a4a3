"""Upload order: prioritised clips first, then the oldest recording first."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from bwc_dock.config import parse_config
from bwc_dock.copier import Copier
from bwc_dock.found import DockedVolume
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.leases import current_owner
from bwc_dock.scanning import scan_into_ledger
from bwc_dock.staging import StagingArea
from tests.dock import Dock


def test_prioritised_clip_first_then_oldest_recording(tmp_path: Path) -> None:
    """A clip marked priority is uploaded first; the rest go oldest recording first."""
    camera = tmp_path / "camera" / "DCIM"
    camera.mkdir(parents=True)
    for name, mtime in (("NEW.MP4", 3_000_000), ("OLD.MP4", 1_000_000), ("MID.MP4", 2_000_000)):
        (camera / name).write_bytes(name.encode())
        os.utime(camera / name, (mtime, mtime))
    config = parse_config({"dock": {"state_dir": str(tmp_path / "state")},
                           "storage": {"path": str(tmp_path / "nas")}})
    ledger = Ledger.open(config, "test")
    volume = DockedVolume("ingest", str(camera.parent), camera.parent, "CAM1")
    scan_into_ledger(ledger, config, ledger.record_docking(volume, current_owner("t")), volume)
    copier = Copier(ledger, StagingArea(config.staging_dir, 0), current_owner("copier"))
    while copier.copy_next(threading.Event()):
        pass
    newest = next(c for c in ledger.clips() if c.source_path == "DCIM/NEW.MP4")
    assert ledger.set_priority(newest.id, 100)

    order = []
    owner = current_owner("uploader")
    while (work := ledger.claim_for_upload(owner)) is not None:
        order.append(work.source_path)
    assert order == ["DCIM/NEW.MP4", "DCIM/OLD.MP4", "DCIM/MID.MP4"]
    ledger.close()


def test_cameras_docked_together_take_turns_at_uploading(tmp_path: Path) -> None:
    """Two cameras with staged clips: uploads alternate cameras, each oldest recording first,
    even though one camera's whole shift is older than the other's."""
    config = parse_config({"dock": {"state_dir": str(tmp_path / "state")},
                           "storage": {"path": str(tmp_path / "nas")}})
    ledger = Ledger.open(config, "test")
    copier = Copier(ledger, StagingArea(config.staging_dir, 0), current_owner("copier"))
    for serial, first_mtime in (("EARLY", 1_000_000), ("LATE", 5_000_000)):
        camera = tmp_path / serial / "DCIM"
        camera.mkdir(parents=True)
        for number in range(3):
            clip = camera / f"{number}.MP4"
            clip.write_bytes(f"{serial}{number}".encode())
            os.utime(clip, (first_mtime + number, first_mtime + number))
        volume = DockedVolume("ingest", str(camera.parent), camera.parent, serial)
        docking = ledger.record_docking(volume, current_owner("t"))
        scan_into_ledger(ledger, config, docking, volume)
    while copier.copy_next(threading.Event()):
        pass

    order = []
    owner = current_owner("uploader")
    while (work := ledger.claim_for_upload(owner)) is not None:
        order.append(f"{work.camera_serial}/{work.source_path}")
    assert order == ["EARLY/DCIM/0.MP4", "LATE/DCIM/0.MP4", "EARLY/DCIM/1.MP4",
                     "LATE/DCIM/1.MP4", "EARLY/DCIM/2.MP4", "LATE/DCIM/2.MP4"]
    ledger.close()


def test_clips_prioritize_puts_a_staged_clip_first_in_the_upload_queue(dock: Dock) -> None:
    """`clips --prioritize ID` makes that clip the first uploaded, ahead of older recordings;
    an unknown id is an error."""
    card = dock.root / "card"
    (card / "DCIM").mkdir(parents=True)
    for name, mtime in (("NEW.MP4", 3_000_000), ("OLD.MP4", 1_000_000), ("MID.MP4", 2_000_000)):
        (card / "DCIM" / name).write_bytes(name.encode() * 100)
        os.utime(card / "DCIM" / name, (mtime, mtime))
    dock.cli("ingest", str(card), "--camera-serial", "P1")  # copies only: all three staged
    ids = {clip["source_path"]: clip["id"] for clip in dock.clips()}
    assert {clip["state"] for clip in dock.clips()} == {"staged"}

    result = dock.cli("clips", "--prioritize", str(ids["DCIM/NEW.MP4"]))
    assert f"clip {ids['DCIM/NEW.MP4']} will be uploaded first" in result.stdout
    dock.cli("ingest", str(card), "--camera-serial", "P1", "--wait")

    with sqlite3.connect(dock.ledger_path) as connection:
        prioritized = connection.execute(
            "SELECT clip_id FROM audit_log WHERE event = 'clip.prioritized'").fetchall()
        # the order uploads are claimed in: with two upload threads they may finish in
        # either order, but each is started in queue order
        claimed = [row[0] for row in connection.execute(
            "SELECT clip_id FROM audit_log WHERE event = 'clip.uploading' ORDER BY id")]
    assert prioritized == [(ids["DCIM/NEW.MP4"],)]  # the operator's choice is audited
    assert claimed == [ids["DCIM/NEW.MP4"], ids["DCIM/OLD.MP4"], ids["DCIM/MID.MP4"]]
    unknown = dock.cli("clips", "--prioritize", "9999", check=False)
    assert unknown.returncode == 1
    assert "no clip 9999" in unknown.stderr
