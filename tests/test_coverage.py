"""Coverage review: each CAD (event, officer) with its clips across the fleet, or why none.

Real parts: docks are real ``bwc-dock`` processes with SQLite ledgers offloading camera
folders (``ingest --wait``) into one shared central-storage folder; the review reads
only what is in that folder.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tempfile
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from bwc_dock.config import CoverageConfig
from bwc_dock.coverage.cad import parse_cad
from tests.dock import Dock

RECORDED_PATTERN = (
    r"(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2})_(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})"
)
PROFILE = {
    "name": "bwc",
    "serial_source": "folder",
    "clips": ["DCIM/*.MP4"],
    "recorded_pattern": RECORDED_PATTERN,
}


def test_cad_rows_that_cannot_be_used_are_listed_with_line_and_reason() -> None:
    """Bad CAD rows are set aside with their line number and reason; the rest are read."""
    text = textwrap.dedent(
        """\
        event_id,officer_badge_id,officer_dispatched_datetime,officer_cleared_datetime,call_type
        E1,B1,2026-11-24T08:00:00Z,2026-11-24T08:30:00Z,THEFT
        E2,B2,2026-11-24T09:00:00+01:00,2026-11-24T09:20:00+01:00,ALARM
        E3,,2026-11-24T08:00:00Z,2026-11-24T08:30:00Z,THEFT
        E4,B1,2026-11-24T08:00:00Z,2026-11-24T08:00:00Z,THEFT
        E5,B1,2026-11-24T08:00:00Z,2026-11-24T17:00:01Z,THEFT

        E6,B1,2026-11-24 08:00:00,2026-11-24T08:30:00Z,THEFT
        E7,B1,yesterday,2026-11-24T08:30:00Z,THEFT
        """
    )
    cad = parse_cad(text.splitlines(keepends=True), CoverageConfig())
    assert [(c.line, c.event, c.officer, c.dispatched.isoformat()) for c in cad.calls] == [
        (2, "E1", "B1", "2026-11-24T08:00:00+00:00"),
        (3, "E2", "B2", "2026-11-24T08:00:00+00:00"),
    ]
    assert [(item.line, item.reason) for item in cad.invalid] == [
        (4, "missing value: Officer Badge ID"),
        (5, "Officer Cleared DateTime is not after Officer Dispatched DateTime"),
        (6, "call longer than max_call_hours (8 h)"),
        (8, "Officer Dispatched DateTime: '2026-11-24 08:00:00' has no time zone "
            "(add Z or an offset, or set [coverage] timezone)"),
        (9, "Officer Dispatched DateTime: not an ISO 8601 time: 'yesterday'"),
    ]


def test_cad_naive_times_are_read_in_the_configured_zone() -> None:
    """With [coverage] timezone, a time without an offset is read in that zone."""
    text = (
        "Event ID,Officer Badge ID,Officer Dispatched DateTime,Officer Cleared DateTime\n"
        "E1,B1,2026-07-01 08:00:00,2026-07-01 08:30:00\n"
    )
    cad = parse_cad(text.splitlines(keepends=True), CoverageConfig(timezone="America/Chicago"))
    assert [c.dispatched.isoformat() for c in cad.calls] == ["2026-07-01T13:00:00+00:00"]
    assert cad.invalid == ()


def test_a_clearance_code_listed_in_the_configuration_excludes_the_row() -> None:
    """A row whose clearance code [coverage] excludes is excluded; headings can be mapped."""
    from datetime import UTC, datetime

    from bwc_dock.config import CoverageHeadings
    from bwc_dock.coverage.review import Fleet, review

    config = CoverageConfig(
        excluded_clearance_codes=("UNFOUNDED",),
        headings=CoverageHeadings(event_id="Incident", clearance_code="Disposition"),
    )
    text = (
        "Incident,Officer_Badge_ID,Officer_Dispatched_DateTime,Officer_Cleared_DateTime,"
        "Disposition\n"
        "E1,B1,2026-11-10T08:00:00Z,2026-11-10T08:30:00Z,unfounded\n"
        "E2,B1,2026-11-10T09:00:00Z,2026-11-10T09:30:00Z,ARREST\n"
    )
    cad = parse_cad(text.splitlines(keepends=True), config)
    rows = review(cad.calls, Fleet(), config, datetime(2026, 12, 1, tzinfo=UTC))
    assert [(row.event, row.status, row.cause) for row in rows] == [
        ("E1", "excluded", None), ("E2", "no_video", "no_camera_assigned")
    ]


def clip_file(camera: Path, recorded: str, counter: int) -> str:
    """A small clip named as the profile names it: BWC_<YYYYmmdd_HHMMSS>_<counter>.MP4."""
    name = f"BWC_{recorded}_{counter:04d}.MP4"
    path = camera / "DCIM" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"{camera.name} {recorded} {counter}\n".encode() * 10)
    return name


def write_cad(path: Path, rows: str) -> Path:
    header = (
        "Event ID,Officer Badge ID,Officer Dispatched DateTime,Officer Cleared DateTime,"
        "Call Type\n"
    )
    path.write_text(header + textwrap.dedent(rows))
    return path


def coverage(dock: Dock, *arguments: str, check: bool = False) -> tuple[int, dict[str, Any]]:
    result = dock.cli("coverage", *arguments, "--json", check=check)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def outcome(document: dict[str, Any]) -> list[tuple[str, str, str, str | None, str | None, int]]:
    return [
        (row["event"], row["officer"], row["status"], row["cause"], row["rule"], len(row["clips"]))
        for row in document["rows"]
    ]


@pytest.fixture
def one_dock(tmp_path: Path) -> Dock:
    dock = Dock(tmp_path / "dock-a")
    dock.write_config(
        dock={"id": "dock-a"},
        camera=[PROFILE],
        coverage={"excluded_call_types": ["Traffic Stop"], "grace_days": 3},
    )
    return dock


def test_review_of_one_dock_gives_each_row_its_status(one_dock: Dock, tmp_path: Path) -> None:
    """Each row gets video (with its rule), excluded, pending or a no-video cause; exit 1."""
    camera = tmp_path / "CAM1"
    clip_file(camera, "20261110_081000", 1)
    clip_file(camera, "20261110_084200", 2)  # 2 min after clearance: inside the buffer
    one_dock.cli("cameras", "assign", "CAM1", "B1", "--at", "2026-11-01T00:00:00Z")
    one_dock.cli("ingest", str(camera), "--camera-serial", "CAM1", "--wait")
    cad = write_cad(
        tmp_path / "cad.csv",
        """\
        E1,B1,2026-11-10T09:05:00+01:00,2026-11-10T09:40:00+01:00,Theft
        E2,B1,2026-11-10T08:41:00Z,2026-11-10T08:50:00Z,Alarm
        E3,B9,2026-11-10T08:00:00Z,2026-11-10T08:30:00Z,Theft
        E4,B1,2026-11-10T10:00:00Z,2026-11-10T10:30:00Z,TRAFFIC STOP
        E5,B1,2026-11-11T10:00:00Z,2026-11-11T10:30:00Z,Theft
        E6,B1,2099-01-01T10:00:00Z,2099-01-01T10:30:00Z,Theft
        E7,B1,2026-11-10T10:00:00Z,2026-11-10T09:30:00Z,Theft
        """,
    )
    code, document = coverage(one_dock, "--cad", str(cad), "--as-of", "2099-01-02T00:00:00Z")
    assert code == 1
    assert outcome(document) == [
        ("E3", "B9", "no_video", "no_camera_assigned", None, 0),
        ("E1", "B1", "video", None, "recorded_during_call", 2),
        ("E2", "B1", "video", None, "recorded_during_call", 1),
        ("E4", "B1", "excluded", None, None, 0),
        ("E5", "B1", "no_video", "none_recorded", None, 0),
        ("E6", "B1", "pending", None, None, 0),
    ]
    assert document["rows"][1]["clips"] == [
        "CAM1/2026/11/10/BWC_20261110_081000_0001.c32f3119728ed240.MP4",
        "CAM1/2026/11/10/BWC_20261110_084200_0002.42b41b78cef81049.MP4",
    ]
    assert document["invalid"] == [
        {"line": 8, "reason": "Officer Cleared DateTime is not after Officer Dispatched DateTime"}
    ]
    _, one_day = coverage(one_dock, "--cad", str(cad), "--from", "2026-11-11", "--to",
                          "2026-11-11")
    assert [row["event"] for row in one_day["rows"]] == ["E5"]
    _, later = coverage(one_dock, "--cad", str(cad), "--as-of", "2099-01-05T00:00:00Z")
    assert [row["cause"] for row in later["rows"] if row["event"] == "E6"] == ["camera_not_docked"]


def test_review_output_is_byte_identical_for_the_same_inputs(
    one_dock: Dock, tmp_path: Path
) -> None:
    """The same store and CAD file give the same --json and --csv bytes; all-video exits 0."""
    camera = tmp_path / "CAM1"
    clip_file(camera, "20261110_081000", 1)
    one_dock.cli("cameras", "assign", "CAM1", "B1", "--at", "2026-11-01T00:00:00Z")
    one_dock.cli("ingest", str(camera), "--camera-serial", "CAM1", "--wait")
    cad = write_cad(tmp_path / "cad.csv", "E1,B1,2026-11-10T08:05:00Z,2026-11-10T08:20:00Z,X\n")
    outputs = [
        one_dock.cli("coverage", "--cad", str(cad), form).stdout
        for form in ("--json", "--csv", "--json", "--csv")
    ]
    assert outputs[0] == outputs[2]
    assert outputs[1] == outputs[3]
    assert outputs[1].splitlines()[1] == (
        "E1,B1,X,2026-11-10T08:05:00Z,2026-11-10T08:20:00Z,video,,recorded_during_call,"
        "CAM1/2026/11/10/BWC_20261110_081000_0001.c32f3119728ed240.MP4,CAM1,,2"
    )


def two_docks(root: Path, **sections: Any) -> tuple[Dock, Dock]:
    """Two docks with ledgers of their own and one central-storage folder."""
    shared = root / "central"
    shared.mkdir(parents=True, exist_ok=True)
    (shared / ".bwc-dock-store").touch()  # the share's marker file
    docks = []
    for name in ("dock-a", "dock-b"):
        dock = Dock(root / name)
        dock.write_config(dock={"id": name}, storage={"path": str(shared)}, camera=[PROFILE],
                          **sections)
        docks.append(dock)
    return docks[0], docks[1]


def audit_events(dock: Dock, event: str) -> list[dict[str, Any]]:
    """The details of every audit row of ``event`` in the dock's ledger file, oldest first."""
    with sqlite3.connect(dock.ledger_path) as connection:
        rows = connection.execute(
            "SELECT details FROM audit_log WHERE event = ? ORDER BY id", (event,)
        ).fetchall()
    return [json.loads(details) for (details,) in rows]


def manifest_officers(central: Path) -> dict[str, str | None]:
    """{manifest file name: officer it names}, for every custody record in the folder."""
    return {
        path.name: json.loads(path.read_text())["officer"]
        for path in central.rglob("*.clip-*.json")
    }


def test_an_assignment_made_at_one_dock_names_the_officer_at_another(tmp_path: Path) -> None:
    """Dock A's assignment names the officer of dock B's clips; a back-dated one is refused."""
    dock_a, dock_b = two_docks(tmp_path)
    dock_a.cli("cameras", "assign", "CAM2", "B2", "--at", "2026-11-01T00:00:00Z")
    assert sorted(p.parent.name for p in (tmp_path / "central/_assignments").rglob("*.json")) == [
        "CAM2"
    ]
    camera = tmp_path / "CAM2"
    clip_file(camera, "20261112_100000", 1)
    dock_b.cli("ingest", str(camera), "--camera-serial", "CAM2", "--wait")
    assert list(manifest_officers(tmp_path / "central").values()) == ["B2"]
    cameras_b = json.loads(dock_b.cli("cameras", "--json").stdout)
    assert [(c["serial"], c["officer_id"]) for c in cameras_b] == [("CAM2", "B2")]

    # made at dock A, back-dated over a clip dock B delivered: dock A has no such clip and
    # records it, dock B refuses it at its next pick-up and says so in its audit log
    dock_a.cli("cameras", "assign", "CAM2", "B3", "--at", "2026-11-10T00:00:00Z")
    dock_b.cli("cameras", "assign", "CAM9", "B9")  # any assignment picks up the others
    refusals = audit_events(dock_b, "camera.fleet_assignment_refused")
    assert [details["reason"].split(" would ")[0] for details in refusals] == [
        "camera CAM2 issued to B3 from 2026-11-10T00:00:00+00:00"
    ]
    cameras_b = json.loads(dock_b.cli("cameras", "--json").stdout)
    assert [(c["serial"], c["officer_id"]) for c in cameras_b] == [
        ("CAM2", "B2"), ("CAM9", "B9")
    ]
    cameras_a = json.loads(dock_a.cli("cameras", "--json").stdout)
    assert [(c["serial"], c["officer_id"]) for c in cameras_a] == [("CAM2", "B3")]


def test_an_explanation_lasts_and_a_correction_names_the_one_it_corrects(
    tmp_path: Path,
) -> None:
    """An explanation is seen by every review; a correction is a new record naming it."""
    dock_a, dock_b = two_docks(tmp_path)
    dock_a.cli("cameras", "assign", "CAM1", "B1", "--at", "2026-11-01T00:00:00Z")
    cad = write_cad(tmp_path / "cad.csv", "E5,B1,2026-11-11T10:00:00Z,2026-11-11T10:30:00Z,X\n")
    camera = tmp_path / "CAM1"
    clip_file(camera, "20261112_100000", 1)
    dock_b.cli("ingest", str(camera), "--camera-serial", "CAM1", "--wait")
    code, document = coverage(dock_b, "--cad", str(cad))
    assert (code, outcome(document)) == (1, [("E5", "B1", "no_video", "none_recorded", None, 0)])

    wrong = dock_a.cli("coverage", "explain", "E5", "B1", "--reason", "sunspots",
                       "--note", "n", check=False)
    assert wrong.returncode == 2
    assert "not a reason code" in wrong.stderr
    first = dock_a.cli("coverage", "explain", "E5", "B1", "--reason", "officer_error",
                       "--note", "forgot to press record").stdout.split(": ", 1)[1].strip()
    code, document = coverage(dock_b, "--cad", str(cad))
    assert (code, outcome(document)) == (0, [("E5", "B1", "explained", None, None, 0)])
    assert document["rows"][0]["explanation"] == {
        "key": first, "reason": "officer_error", "note": "forgot to press record"
    }

    second = dock_b.cli("coverage", "explain", "E5", "B1", "--reason", "equipment_failure",
                        "--note", "battery died", "--corrects", first).stdout
    second_key = second.split(": ", 1)[1].strip()
    _, document = coverage(dock_a, "--cad", str(cad))
    assert document["rows"][0]["explanation"] == {
        "key": second_key, "reason": "equipment_failure", "note": "battery died"
    }
    stored = sorted((tmp_path / "central/_coverage/explanations/E5/B1").iterdir())
    corrects = [json.loads(path.read_text())["corrects"] for path in stored]
    assert sorted(corrects, key=str) == sorted([None, first], key=str)  # both kept
    assert [d["key"] for d in audit_events(dock_a, "coverage.explained")] == [first]
    assert [d["corrects"] for d in audit_events(dock_b, "coverage.explained")] == [first]


# -- the fleet scenario: two docks, three cameras, four officers over time ---------------

COUNTER_PROFILE = PROFILE | {"counter_pattern": r"_(?P<counter>\d{4})\.MP4$"}
SCENARIO_CAD = """\
    E100,B1,2026-11-10T08:05:00Z,2026-11-10T08:30:00Z,Theft
    E101,B1,2026-11-10T09:55:00+01:00,2026-11-10T10:20:00+01:00,Alarm
    E102,B1,2026-11-11T13:50:00Z,2026-11-11T14:30:00Z,Theft
    E103,B1,2026-11-12T09:58:00Z,2026-11-12T10:20:00Z,Assault
    E103,B2,2026-11-12T09:58:00Z,2026-11-12T10:20:00Z,Assault
    E104,B3,2026-11-22T10:00:00Z,2026-11-22T10:30:00Z,Theft
    E105,B2,2026-11-22T10:00:00Z,2026-11-22T10:30:00Z,Theft
    E106,B3,2026-11-21T09:56:00Z,2026-11-21T10:10:00Z,Theft
    E107,B3,2026-11-23T10:03:00Z,2026-11-23T10:30:00Z,Theft
    E108,B4,2026-11-15T11:50:00Z,2026-11-15T12:30:00Z,Theft
    E109,B4,2026-11-16T11:50:00Z,2026-11-16T12:30:00Z,Theft
    E110,B4,2099-06-01T10:00:00Z,2099-06-01T10:30:00Z,Theft
    E111,B4,2099-06-09T10:00:00Z,2099-06-09T10:30:00Z,Theft
    E112,B5,2026-11-12T10:00:00Z,2026-11-12T10:30:00Z,Theft
    E113,B1,2026-11-13T10:00:00Z,2026-11-13T10:30:00Z,Traffic Stop
    E114,B1,2026-11-14T10:00:00Z,2026-11-14T10:30:00Z,Theft
    E115,B1,2026-11-14T10:00:00Z,2026-11-14T09:00:00Z,Theft
    E116,,2026-11-14T10:00:00Z,2026-11-14T10:30:00Z,Theft
    E117,B2,2026-11-14 10:00:00,2026-11-14T10:30:00Z,Theft
    E118,B3,2026-11-25T08:55:00Z,2026-11-25T09:10:00Z,Theft
    """
# (event, officer, status, cause, rule, clips), in the review's order (by dispatch time)
SCENARIO_EXPECTED = [
    ("E100", "B1", "video", None, "recorded_during_call", 1),
    ("E101", "B1", "video", None, "recorded_during_call", 1),
    ("E102", "B1", "no_video", "clip_vanished", None, 0),
    ("E103", "B1", "video", None, "recorded_during_call", 1),
    ("E103", "B2", "video", None, "recorded_during_call", 1),
    ("E112", "B5", "no_video", "no_camera_assigned", None, 0),
    ("E113", "B1", "excluded", None, None, 0),
    ("E114", "B1", "explained", None, None, 0),
    ("E108", "B4", "video", None, "recorded_during_call", 1),
    ("E109", "B4", "no_video", "none_recorded", None, 0),
    ("E106", "B3", "video", None, "recorded_during_call", 1),
    ("E104", "B3", "no_video", "sequence_gap", None, 0),
    ("E105", "B2", "no_video", "no_camera_assigned", None, 0),
    ("E107", "B3", "video", None, "recorded_within_buffer", 1),
    ("E118", "B3", "video", None, "recorded_during_call", 1),
    ("E110", "B4", "no_video", "camera_not_docked", None, 0),
    ("E111", "B4", "pending", None, None, 0),
]
SCENARIO_INVALID = [
    {"line": 18, "reason": "Officer Cleared DateTime is not after Officer Dispatched DateTime"},
    {"line": 19, "reason": "missing value: Officer Badge ID"},
    {"line": 20, "reason": "Officer Dispatched DateTime: '2026-11-14 10:00:00' has no time zone "
                           "(add Z or an offset, or set [coverage] timezone)"},
]


def scan_without_copying(dock: Dock, camera: Path, serial: str) -> None:
    """A docking cut short after the scan: the clips are in the ledger, none copied off."""
    from bwc_dock.config import load_config
    from bwc_dock.found import DockedVolume
    from bwc_dock.ledger import Ledger
    from bwc_dock.scanning import scan_into_ledger

    config = load_config(dock.config_path)
    ledger = Ledger.open(config, "test")
    try:
        volume = DockedVolume("ingest", str(camera), camera, serial, profile_name="bwc")
        docking = ledger.record_docking(volume, None)
        scan_into_ledger(ledger, config, docking, volume)
        ledger.end_docking(docking, "undocked before copying")
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dock, Dock, Path]:
    """The scenario, played once: assignments at dock A, offloads at both docks."""
    root = tmp_path_factory.mktemp("fleet")
    dock_a, dock_b = two_docks(
        root, coverage={"excluded_call_types": ["traffic stop"], "grace_days": 3}
    )
    for dock in (dock_a, dock_b):
        dock.write_config(**{**dock.settings, "camera": [COUNTER_PROFILE]})
    for serial, officer, since in (
        ("CAM1", "B1", "2026-11-01"), ("CAM2", "B2", "2026-11-01"),
        ("CAM2", "B3", "2026-11-20"), ("CAM3", "B4", "2026-11-01"),
    ):
        dock_a.cli("cameras", "assign", serial, officer, "--at", f"{since}T00:00:00Z")

    cam1 = root / "CAM1"
    for recorded, counter in (("20261110_081000", 1), ("20261110_090000", 2),
                              ("20261111_140000", 3)):
        clip_file(cam1, recorded, counter)
    scan_without_copying(dock_a, cam1, "CAM1")
    (cam1 / "DCIM" / "BWC_20261111_140000_0003.MP4").unlink()  # gone before it was copied
    clip_file(cam1, "20261112_100000", 4)
    dock_a.cli("ingest", str(cam1), "--camera-serial", "CAM1", "--wait")

    cam2 = root / "CAM2"
    for recorded, counter in (("20261112_100000", 1), ("20261121_100000", 2),
                              ("20261123_100000", 4)):  # number 3 is missing
        clip_file(cam2, recorded, counter)
    dock_b.cli("ingest", str(cam2), "--camera-serial", "CAM2", "--wait")
    cam2_after_format = root / "CAM2-formatted"
    clip_file(cam2_after_format, "20261125_090000", 1)
    dock_b.cli("ingest", str(cam2_after_format), "--camera-serial", "CAM2", "--wait")

    cam3 = root / "CAM3"
    clip_file(cam3, "20261115_120000", 1)
    dock_b.cli("ingest", str(cam3), "--camera-serial", "CAM3", "--wait")

    dock_b.cli("coverage", "explain", "E114", "B1", "--reason", "equipment_failure",
               "--note", "camera would not power on")
    bad = root / "central/CAM3/2026/11/01/x.MP4.dock-z.clip-1.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00not json")
    cad = write_cad(root / "cad.csv", SCENARIO_CAD)
    return dock_a, dock_b, cad


def test_fleet_review_gives_every_row_its_expected_result(fleet: tuple[Dock, Dock, Path]) -> None:
    """Every scenario row gets the result written out here; bad rows and records listed."""
    dock_a, _dock_b, cad = fleet
    code, document = coverage(dock_a, "--cad", str(cad), "--as-of", "2099-06-10T00:00:00Z")
    assert code == 1
    assert outcome(document) == SCENARIO_EXPECTED
    assert document["invalid"] == SCENARIO_INVALID
    assert document["unreadable"] == [
        {"key": "CAM3/2026/11/01/x.MP4.dock-z.clip-1.json",
         "reason": "malformed: not JSON (JSONDecodeError)"}
    ]
    by_subject = {(row["event"], row["officer"]): row for row in document["rows"]}
    assert by_subject[("E103", "B2")]["cameras"] == ["CAM2"]
    assert by_subject[("E104", "B3")]["cameras"] == ["CAM2"]
    assert by_subject[("E114", "B1")]["explanation"]["reason"] == "equipment_failure"


def test_dockings_record_gaps_resets_and_vanished_files(fleet: tuple[Dock, Dock, Path]) -> None:
    """A missing file number, a restarted counter and a vanished file are audit events."""
    dock_a, dock_b, _cad = fleet
    assert [(d["missing"], d["runs"]) for d in audit_events(dock_b, "clip.sequence_gap")] == [
        ([3], [{"first": 3, "last": 3,
                "between": ["2026-11-21T10:00:00+00:00", "2026-11-23T10:00:00+00:00"]}])
    ]
    assert [(d["previous_highest"], d["restarted_at"])
            for d in audit_events(dock_b, "clip.counter_reset")] == [(4, 1)]
    assert [(d["source_path"], d["offloaded"])
            for d in audit_events(dock_a, "clip.vanished_on_camera")] == [
        ("DCIM/BWC_20261111_140000_0003.MP4", False)
    ]
    assert sorted((d["source_path"], d["offloaded"])
                  for d in audit_events(dock_b, "clip.vanished_on_camera")) == [
        ("DCIM/BWC_20261112_100000_0001.MP4", True),
        ("DCIM/BWC_20261121_100000_0002.MP4", True),
        ("DCIM/BWC_20261123_100000_0004.MP4", True),
    ]
    assert audit_events(dock_a, "clip.sequence_gap") == []


def test_a_vanished_file_and_a_gap_are_alarms_at_the_dock_that_found_them(
    fleet: tuple[Dock, Dock, Path],
) -> None:
    """A recent gap or vanished file raises its alarm, naming the numbers or the file."""
    from datetime import UTC, datetime

    from bwc_dock.alarms import AlarmBoard, Observation
    from bwc_dock.config import AlarmsConfig, load_config
    from bwc_dock.coverage.docking import recent_camera_findings
    from bwc_dock.ledger import Ledger

    now = datetime.now(UTC)
    details = []
    for dock in fleet[:2]:
        ledger = Ledger.open(load_config(dock.config_path), "test")
        try:
            findings = recent_camera_findings(ledger, now)
        finally:
            ledger.close()
        board = AlarmBoard(AlarmsConfig())
        board.observe(Observation(now, None, 1 << 40, 0, camera_findings=findings))
        details += [(alarm.kind.value, alarm.camera, alarm.detail) for alarm in board.active]
    assert details == [
        ("clip_vanished", "CAM1",
         "camera CAM1: files gone without bwc-dock clearing them: "
         "DCIM/BWC_20261111_140000_0003.MP4"),
        ("clip_sequence_gap", "CAM2", "camera CAM2: file numbers missing: 3"),
        ("clip_vanished", "CAM2",
         "camera CAM2: files gone without bwc-dock clearing them: "
         "DCIM/BWC_20261112_100000_0001.MP4; DCIM/BWC_20261121_100000_0002.MP4; "
         "DCIM/BWC_20261123_100000_0004.MP4"),
    ]


def test_fleet_cameras_lists_each_cameras_last_docking_anywhere(
    fleet: tuple[Dock, Dock, Path], tmp_path: Path
) -> None:
    """fleet cameras names each camera's last docking anywhere; one too old exits 1."""
    dock_a, _dock_b, _cad = fleet
    fresh = dock_a.cli("fleet", "cameras", "--json", "--stale-days", "30")
    assert [(c["camera"], c["dock"], c["stale"]) for c in json.loads(fresh.stdout)["cameras"]] == [
        ("CAM1", "dock-a", False), ("CAM2", "dock-b", False), ("CAM3", "dock-b", False),
    ]
    # a camera another dock last saw in October, as that dock recorded it; and a record
    # whose name claims a later docking than its content: not believed, listed
    dockings = Path(dock_a.settings["storage"]["path"]) / "_coverage/dockings"
    written = [dockings / "CAM7/20261001T080000Z.0.json", dockings / "CAM8/20991231T000000Z.0.json"]
    for path, camera in zip(written, ("CAM7", "CAM8"), strict=True):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({
            "schema": "bwc-dock/camera-evidence/1", "camera": camera, "kind": "docking",
            "dock": "dock-c", "at": "2026-10-01T08:00:00+00:00",
        }))
    try:
        stale = dock_a.cli("fleet", "cameras", "--json", "--stale-days", "30", check=False)
        assert stale.returncode == 1
        document = json.loads(stale.stdout)
        assert [(c["camera"], c["last_docked_at"], c["dock"], c["stale"])
                for c in document["cameras"]][-1] == (
            "CAM7", "2026-10-01T08:00:00+00:00", "dock-c", True
        )
        assert document["unreadable"] == [{
            "key": "_coverage/dockings/CAM8/20991231T000000Z.0.json",
            "reason": "malformed: its name does not match its camera and time",
        }]
    finally:
        for path in written:
            path.unlink()


class _Numbers(HTMLParser):
    """The numbers a page shows, by their data-* names, as the browser left the DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, str] = {}
        self._open: list[str | None] = []
        self._group: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        name = None
        for attribute in ("data-count", "data-rate"):
            if named.get(attribute):
                name = f"{attribute[5:]}:{named[attribute]}"
        for attribute in ("data-month", "data-officer", "data-cause"):
            if named.get(attribute):
                self._group = f"{attribute[5:]}:{named[attribute]}"
        if "data-value" in named:
            name = self._group
        self._open.append(name)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1] and data.strip():
            self.found[self._open[-1]] = data.strip()


def browser_dom(page: Path) -> str:
    """The page as headless Chromium rendered it (no network, a throwaway profile)."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        )
    return result.stdout


def percent_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def test_html_page_shows_the_same_numbers_as_json(
    fleet: tuple[Dock, Dock, Path], tmp_path: Path
) -> None:
    """The --html page, rendered by headless Chromium, shows the numbers --json reports."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed")
    dock_a, _dock_b, cad = fleet
    page = tmp_path / "coverage.html"
    as_of = ("--as-of", "2099-06-10T00:00:00Z")
    _, document = coverage(dock_a, "--cad", str(cad), *as_of, "--html", str(page))
    public_page = tmp_path / "public.html"
    _, monthly = coverage(dock_a, "--cad", str(cad), *as_of, "--aggregate", "month",
                          "--html", str(public_page))
    for published in (json.dumps(monthly), public_page.read_text()):
        assert not any(name in published for name in ("B1", "B4", "E100", "E118", "CAM1"))
    dom = browser_dom(page)
    assert "http://" not in dom.replace('xmlns="http://www.w3.org/2000/svg"', "")
    parser = _Numbers()
    parser.feed(dom)
    shown = parser.found
    total = document["summary"]
    assert total["by_status"] == {"video": 8, "excluded": 1, "explained": 1, "pending": 1,
                                  "no_video": 6}
    assert total["by_cause"] == {"no_camera_assigned": 2, "camera_not_docked": 1,
                                 "sequence_gap": 1, "clip_vanished": 1, "none_recorded": 1}
    for status, count in total["by_status"].items():
        assert shown[f"count:status:{status}"] == str(count)
    for cause, count in total["by_cause"].items():
        assert shown[f"count:cause:{cause}"] == str(count)
        assert shown[f"cause:{cause}"] == str(count)
    assert shown["rate:all"] == percent_text(total["video_rate"]) == "53.3%"  # 8 of 15
    assert [(m["month"], m["video_rate"]) for m in monthly["months"]] == [
        ("2026-11", 0.5714), ("2099-06", 0.0)  # 8 of 14; 0 of 1 (one pending)
    ]
    for month in monthly["months"]:
        assert shown[f"month:{month['month']}"] == percent_text(month["video_rate"])
    assert {key: value for key, value in shown.items() if key.startswith("officer:")} == {
        "officer:B1": "60.0%", "officer:B2": "50.0%", "officer:B3": "75.0%",
        "officer:B4": "33.3%", "officer:B5": "0.0%",
    }


@pytest.mark.parametrize("store", ["folder", "s3"])
def test_records_are_read_bounded_and_listed_whole_on_both_stores(
    store: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded reads and the flat listing behave alike on the folder backend and on S3."""
    from bwc_dock.storage.base import DocumentTooLarge, StorageBackend
    from bwc_dock.storage.filesystem import FileBackend
    from bwc_dock.storage.s3 import S3Backend

    backend: StorageBackend
    if store == "folder":
        (tmp_path / "nas").mkdir()
        backend = FileBackend(tmp_path / "nas", "dock-test")
    else:
        server = request.getfixturevalue("seaweedfs")
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        backend = S3Backend.from_config(server.storage_config(server.create_bucket()))
    try:
        for key, data in (("a/b/c.json", b"x" * 100), ("a/b-c/d.json", b"{}"), ("e.json", b"")):
            backend.put_bytes(key, data, {})
        with pytest.raises(DocumentTooLarge):  # 100 bytes against a bound of 10
            backend.read_bytes("a/b/c.json", 10)
        assert backend.read_bytes("a/b-c/d.json", 10) == b"{}"
        assert backend.read_bytes("e.json", 10) == b""
        assert backend.read_bytes("missing.json", 10) is None
        assert sorted(backend.list_keys_unordered("")) == ["a/b-c/d.json", "a/b/c.json", "e.json"]
        assert sorted(backend.list_keys_unordered("a/b/")) == ["a/b/c.json"]
    finally:
        backend.close()
