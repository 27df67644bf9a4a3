"""Cameras the dock has seen and who they are issued to.

Real parts: the SQLite ledger file, the central-storage folder and the ``bwc-dock``
console script.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from tests.dock import Dock, make_camera


def cameras(dock: Dock) -> dict[str, dict[str, Any]]:
    return {c["serial"]: c for c in json.loads(dock.cli("cameras", "--json").stdout)}


def assignment_events(dock: Dock) -> list[dict[str, Any]]:
    with sqlite3.connect(dock.ledger_path) as connection:
        return [
            {"serial": serial, "actor": actor, **json.loads(details)}
            for serial, actor, details in connection.execute(
                "SELECT camera_serial, actor, details FROM audit_log "
                "WHERE event = 'camera.assigned' ORDER BY id"
            )
        ]


def test_cameras_lists_every_camera_with_its_pending_clips(dock: Dock) -> None:
    """cameras --json: serial, profile, last docked and clips not yet uploaded."""
    make_camera(dock.root / "a", [1000, 2000], sidecars=False)
    make_camera(dock.root / "b", [1000], sidecars=False, seed=2)
    # B2 first: an `ingest --wait` while other clips sit staged spins on them (handrun
    # releases clips not its own and claims them again; reported to the lead)
    dock.cli("ingest", str(dock.root / "b"), "--camera-serial", "B2", "--wait")
    dock.cli("ingest", str(dock.root / "a"), "--camera-serial", "A1")  # copied, not uploaded

    listed = cameras(dock)

    assert set(listed) == {"A1", "B2"}
    assert listed["A1"]["pending_clips"] == 2 and listed["A1"]["clips"] == 2
    assert listed["B2"]["pending_clips"] == 0 and listed["B2"]["clips"] == 1
    assert listed["A1"]["profile"] == "folder" and listed["A1"]["last_docked_at"]
    table = dock.cli("cameras").stdout
    assert "A1" in table and "B2" in table


def test_a_folder_camera_records_its_device_identity_as_absent(dock: Dock) -> None:
    """An ingested folder has no USB ids or filesystem of its own: its custody record and
    `cameras --json` name the profile and leave the rest null, never invented."""
    make_camera(dock.root / "card", [500], sidecars=False)
    dock.cli("ingest", str(dock.root / "card"), "--camera-serial", "F4", "--wait")
    [clip] = dock.clips()
    manifest = json.loads((dock.nas / dock.manifest_key(clip)).read_text())
    assert manifest["device"] == {
        "profile": "folder", "usb_vendor_id": None, "usb_product_id": None,
        "fs_type": None, "fs_label": None, "fs_uuid": None,
    }
    assert cameras(dock)["F4"]["device"] == {
        "usb_vendor_id": None, "usb_product_id": None,
        "fs_type": None, "fs_label": None, "fs_uuid": None,
    }


def test_assign_is_an_audit_event_and_reaches_the_manifest(dock: Dock) -> None:
    """cameras assign records who, to whom and since when; the next upload's manifest
    names the officer."""
    dock.cli("cameras", "assign", "C3", "badge-1001", "--at", "2020-01-01T08:00:00Z")
    assert cameras(dock)["C3"]["officer_id"] == "badge-1001"
    [event] = assignment_events(dock)
    assert event["officer_id"] == "badge-1001" and event["previous_officer_id"] is None
    assert event["assigned_at"] == "2020-01-01T08:00:00+00:00"
    assert event["actor"].startswith("user:")

    make_camera(dock.root / "card", [500], sidecars=False)
    dock.cli("ingest", str(dock.root / "card"), "--camera-serial", "C3", "--wait")
    [clip] = dock.clips()
    manifest = json.loads((dock.nas / dock.manifest_key(clip)).read_text())
    assert manifest["officer"] == "badge-1001"
    assert dock.cli("audit", "verify").returncode == 0


def test_each_clip_carries_the_officer_assigned_when_it_was_recorded(dock: Dock) -> None:
    """A camera reissued later: older clips keep the officer who carried it back then."""
    card = dock.root / "card"
    for name, when in (("EARLY.MP4", 1_600_000_000), ("LATE.MP4", 1_700_000_000)):
        path = card / "DCIM" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        os.utime(path, (when, when))  # 2020-09-13 and 2023-11-14
    dock.cli("cameras", "assign", "C4", "first-officer", "--at", "2020-01-01")
    dock.cli("cameras", "assign", "C4", "second-officer", "--at", "2022-01-01")

    dock.cli("ingest", str(card), "--camera-serial", "C4", "--wait")

    officers = {}
    for clip in dock.clips():
        manifest = json.loads((dock.nas / dock.manifest_key(clip)).read_text())
        officers[clip["source_path"]] = manifest["officer"]
    assert officers == {"DCIM/EARLY.MP4": "first-officer", "DCIM/LATE.MP4": "second-officer"}
    export = json.loads(dock.cli("audit", "export", "--format", "json").stdout)
    assert {c["source_path"]: c["officer_id"] for c in export["clips"]} == officers
    assert cameras(dock)["C4"]["officer_id"] == "second-officer"


def test_import_records_every_row_or_none(dock: Dock, tmp_path: Path) -> None:
    """cameras import takes a CSV; one bad row rejects the whole file (exit 2)."""
    good = tmp_path / "good.csv"
    good.write_text("serial,officer_id,assigned_at\nD1,o-1,2024-05-01T00:00:00Z\nD2,o-2,\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("serial,officer_id\nE1,o-3\nbad serial!,o-4\n")

    assert "2 assignments recorded" in dock.cli("cameras", "import", str(good)).stdout
    rejected = dock.cli("cameras", "import", str(bad), check=False)

    assert rejected.returncode == 2
    assert "line 3" in rejected.stderr
    listed = cameras(dock)
    assert {serial: c["officer_id"] for serial, c in listed.items()} == {"D1": "o-1", "D2": "o-2"}
    assert [e["serial"] for e in assignment_events(dock)] == ["D1", "D2"]


def test_assign_refuses_bad_input(dock: Dock) -> None:
    """A serial with unsafe characters or an empty officer id is bad usage (exit 2)."""
    dock.cli("cameras", "assign", "X9", "o-9")
    assert dock.cli("cameras", "assign", "../x", "o", check=False).returncode == 2
    assert dock.cli("cameras", "assign", "X9", "  ", check=False).returncode == 2
    assert dock.cli("cameras", "assign", "X9", "o", "--at", "noon", check=False).returncode == 2
    assert [e["officer_id"] for e in assignment_events(dock)] == ["o-9"]


def _uploaded_clips_recorded_in_2020_and_2023(dock: Dock) -> dict[str, int]:
    """C5 issued to officer-a since 2019; two clips (2020, 2023) uploaded; {path: id}."""
    card = dock.root / "card"
    for name, when in (("EARLY.MP4", 1_600_000_000), ("LATE.MP4", 1_700_000_000)):
        path = card / "DCIM" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        os.utime(path, (when, when))  # 2020-09-13 and 2023-11-14
    dock.cli("cameras", "assign", "C5", "officer-a", "--at", "2019-01-01")
    dock.cli("ingest", str(card), "--camera-serial", "C5", "--wait")
    return {clip["source_path"]: clip["id"] for clip in dock.clips()}


def reattribution_events(dock: Dock) -> list[dict[str, Any]]:
    with sqlite3.connect(dock.ledger_path) as connection:
        return [
            json.loads(details)
            for (details,) in connection.execute(
                "SELECT details FROM audit_log WHERE event = 'camera.clips_reattributed'"
            )
        ]


def test_backdated_import_refuses_to_reattribute_uploaded_clips(
    dock: Dock, tmp_path: Path
) -> None:
    """A CSV back-dating C5 to officer-b from 2022 would change the officer of the
    uploaded 2023 clip: refused (exit 2) naming that clip, and nothing is recorded."""
    ids = _uploaded_clips_recorded_in_2020_and_2023(dock)
    backdated = tmp_path / "backdated.csv"
    backdated.write_text("serial,officer_id,assigned_at\nZ1,o-1,\nC5,officer-b,2022-01-01T00:00:00Z\n")

    refused = dock.cli("cameras", "import", str(backdated), check=False)

    assert refused.returncode == 2
    assert f"{ids['DCIM/LATE.MP4']} (officer-a)" in refused.stderr
    assert f"{ids['DCIM/EARLY.MP4']} (" not in refused.stderr
    assert "--force" in refused.stderr
    assert [e["officer_id"] for e in assignment_events(dock)] == ["officer-a"]  # all or none
    export = json.loads(dock.cli("audit", "export", "--format", "json").stdout)
    assert {c["officer_id"] for c in export["clips"]} == {"officer-a"}


def test_forced_backdated_assignment_is_audited_with_the_clips_it_moves(dock: Dock) -> None:
    """With --force the back-dated assignment is recorded, and an audit event lists the
    re-attributed clip with its previous officer; the chain stays intact."""
    ids = _uploaded_clips_recorded_in_2020_and_2023(dock)
    refused = dock.cli("cameras", "assign", "C5", "officer-b", "--at", "2022-01-01", check=False)
    assert refused.returncode == 2

    forced = dock.cli("cameras", "assign", "C5", "officer-b", "--at", "2022-01-01", "--force")

    assert "1 delivered clip(s) re-attributed" in forced.stdout
    [event] = reattribution_events(dock)
    assert event["officer_id"] == "officer-b" and event["forced"] is True
    assert event["clips"] == [
        {"clip_id": ids["DCIM/LATE.MP4"], "previous_officer_id": "officer-a"}
    ]
    export = json.loads(dock.cli("audit", "export", "--format", "json").stdout)
    officers = {c["source_path"]: c["officer_id"] for c in export["clips"]}
    assert officers == {"DCIM/EARLY.MP4": "officer-a", "DCIM/LATE.MP4": "officer-b"}
    assert dock.cli("audit", "verify").returncode == 0


def test_an_assignment_touching_no_delivered_clip_needs_no_force(dock: Dock) -> None:
    """Issuing the camera from now on, or back-dating over clips not yet uploaded, is
    recorded without --force."""
    _uploaded_clips_recorded_in_2020_and_2023(dock)
    dock.cli("cameras", "assign", "C5", "officer-c")  # from now: no clip recorded since
    card = dock.root / "card2" / "DCIM" / "NEW.MP4"
    card.parent.mkdir(parents=True)
    card.write_bytes(b"new")
    os.utime(card, (1_750_000_000, 1_750_000_000))  # 2025
    dock.cli("ingest", str(dock.root / "card2"), "--camera-serial", "C6")  # staged only
    dock.cli("cameras", "assign", "C6", "officer-d", "--at", "2024-01-01")
    assert reattribution_events(dock) == []
