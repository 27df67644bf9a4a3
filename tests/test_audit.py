"""The audit log: a tampered row named, a rewritten chain caught by central anchors, and
a chain-of-custody export that matches the ledger row for row.

Real parts: the SQLite ledger file (edited with sqlite3 the way an intruder would),
the central-storage folder, and the ``bwc-dock`` console script.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from bwc_dock.ledger.audit import HASHED_COLUMNS, row_hash
from tests.dock import Dock, make_camera


def offload(dock: Dock, serial: str = "X1", sizes: tuple[int, ...] = (1000, 2000, 3000)) -> None:
    camera = dock.root / f"card-{serial}"
    make_camera(camera, sizes, sidecars=True)
    dock.cli("ingest", str(camera), "--camera-serial", serial, "--wait")


def audit_rows(dock: Dock) -> list[dict[str, Any]]:
    with sqlite3.connect(dock.ledger_path) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM audit_log ORDER BY id")]


def rewrite_chain_from(dock: Dock, row_id: int, **changes: Any) -> None:
    """What a careful intruder does: change a row, then recompute every hash after it."""
    rows = audit_rows(dock)
    previous = rows[row_id - 2]["hash"] if row_id > 1 else "0" * 64
    with sqlite3.connect(dock.ledger_path) as connection:
        for row in rows[row_id - 1 :]:
            if row["id"] == row_id:
                row.update(changes)
            row["prev_hash"] = previous
            row["hash"] = row_hash({name: row[name] for name in HASHED_COLUMNS})
            connection.execute(
                "UPDATE audit_log SET details = ?, sha256 = ?, prev_hash = ?, hash = ? "
                "WHERE id = ?",
                (row["details"], row["sha256"], row["prev_hash"], row["hash"], row["id"]),
            )
            previous = row["hash"]


def test_a_tampered_row_is_named_by_audit_verify(dock: Dock) -> None:
    """Editing one row's content with sqlite3 makes audit verify exit 1 naming that row."""
    offload(dock)
    assert dock.cli("audit", "verify").returncode == 0
    target = next(r for r in audit_rows(dock) if r["event"] == "clip.staged")
    with sqlite3.connect(dock.ledger_path) as connection:
        connection.execute("UPDATE audit_log SET sha256 = ? WHERE id = ?", ("f" * 64, target["id"]))

    result = dock.cli("audit", "verify", check=False)
    assert result.returncode == 1
    assert f"broken at row {target['id']}" in result.stderr
    document = json.loads(dock.cli("audit", "verify", "--json", check=False).stdout)
    assert document["first_broken_row"] == target["id"]
    assert document["reason"] == "row content does not match its hash"


def test_a_rewritten_chain_is_caught_by_the_anchors_in_central_storage(dock: Dock) -> None:
    """A chain edited and re-hashed from row N verifies locally, but audit verify --remote
    finds it from central storage alone and bounds where the edit was."""
    offload(dock)
    intact = dock.cli("audit", "verify", "--remote", check=False)
    assert intact.returncode == 0, intact.stderr
    target = next(r for r in audit_rows(dock) if r["event"] == "clip.staged")
    forged = json.loads(target["details"])
    forged["staged_path"] = "clips/elsewhere"
    rewrite_chain_from(
        dock, target["id"], details=json.dumps(forged, sort_keys=True, separators=(",", ":"))
    )

    assert dock.cli("audit", "verify").returncode == 0  # the local chain alone is fooled
    result = dock.cli("audit", "verify", "--remote", "--json", check=False)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["local_break"] is None and report["problems"]
    assert report["changed_after_row"] < target["id"] <= report["changed_at_or_before_row"]
    human = dock.cli("audit", "verify", "--remote", check=False)
    assert human.returncode == 1
    assert "changed after the fact" in human.stderr


def test_a_truncated_ledger_is_caught_by_the_anchors(dock: Dock) -> None:
    """Deleting the newest audit rows leaves a valid-looking chain; anchors name the gap."""
    offload(dock)
    newest_anchor = max(
        json.loads(path.read_text())["audit_chain_head"]["id"]
        for path in dock.nas.rglob("*.clip-*.json")  # custody records only
    )
    intact = dock.cli("audit", "verify", "--remote", "--json", check=False)
    assert intact.returncode == 0, intact.stderr
    assert json.loads(intact.stdout)["problems"] == []
    with sqlite3.connect(dock.ledger_path) as connection:
        connection.execute("DELETE FROM audit_log WHERE id >= ?", (newest_anchor,))
    assert dock.cli("audit", "verify").returncode == 0
    result = dock.cli("audit", "verify", "--remote", "--json", check=False)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert any("missing from the local ledger" in p["problem"] for p in report["problems"])
    assert dock.cli("audit", "verify", "--remote", check=False).returncode == 1


def manifests(dock: Dock) -> dict[int, tuple[str, int]]:
    """clip id -> (manifest key, anchored audit row), read from central storage."""
    found: dict[int, tuple[str, int]] = {}
    for path in dock.nas.rglob("*.clip-*.json"):  # custody records only
        document = json.loads(path.read_text())
        found[document["clip_id"]] = (str(path.relative_to(dock.nas)),
                                      document["audit_chain_head"]["id"])
    return found


def test_rows_rewritten_and_clips_hidden_as_duplicates_are_caught(dock: Dock) -> None:
    """The attack: rows after the first clip's anchor rewritten, the chain
    recomputed, and the later clips marked duplicate_of so the ledger would not ask
    for their manifests; audit verify --remote still finds those manifests by listing
    central storage and fails, naming them."""
    offload(dock)
    anchored = manifests(dock)
    assert sorted(anchored) == [1, 2, 3]
    # Two upload workers: any clip may be anchored first, and two custody records may
    # anchor the same chain head (no audit row came between them). The attack starts
    # after the earliest anchor; the clips anchored there are left alone. A clip claimed
    # after another's upload was recorded is anchored after it, so one is always later.
    first_anchor = min(anchor for _key, anchor in anchored.values())
    first = sorted(clip_id for clip_id in anchored if anchored[clip_id][1] == first_anchor)
    later = sorted(clip_id for clip_id in anchored if anchored[clip_id][1] > first_anchor)
    assert later and len(first) + len(later) == 3
    target = next(r for r in audit_rows(dock) if r["id"] > first_anchor)
    forged = json.loads(target["details"])
    forged["forged"] = True
    rewrite_chain_from(dock, target["id"],
                       details=json.dumps(forged, sort_keys=True, separators=(",", ":")))
    with sqlite3.connect(dock.ledger_path) as connection:
        connection.execute(
            f"UPDATE clips SET duplicate_of = ? WHERE id IN ({', '.join('?' * len(later))})",
            (first[0], *later))

    assert dock.cli("audit", "verify").returncode == 0  # the local chain alone is fooled
    result = dock.cli("audit", "verify", "--remote", "--json", check=False)
    assert result.returncode == 1, result.stdout
    report = json.loads(result.stdout)
    named = {problem["anchor_key"] for problem in report["problems"]}
    assert {anchored[clip_id][0] for clip_id in later} <= named
    assert not {anchored[clip_id][0] for clip_id in first} & named
    human = dock.cli("audit", "verify", "--remote", check=False)
    assert human.returncode == 1
    assert anchored[later[0]][0] in human.stderr
    assert "differs from the chain head" in human.stderr


def test_a_manifest_of_a_clip_the_ledger_lost_is_named(dock: Dock) -> None:
    """A clip row deleted from the ledger (and its audit rows left as they are): its
    manifest in central storage is an anchor the ledger cannot explain."""
    offload(dock)
    anchored = manifests(dock)
    with sqlite3.connect(dock.ledger_path) as connection:
        connection.execute("DELETE FROM sidecars WHERE clip_id = 3")
        connection.execute("DELETE FROM clips WHERE id = 3")
    result = dock.cli("audit", "verify", "--remote", "--json", check=False)
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert [p["anchor_key"] for p in problems if "does not have" in p["problem"]] == [
        anchored[3][0]]


def test_a_docking_list_is_never_replaced_and_a_planted_one_is_named(dock: Dock) -> None:
    """A SHA256SUMS already under the docking's list name (planted, or an older list)
    is left as it is: the dock's list goes beside it as .v2 and checks with
    sha256sum --strict -c; audit verify --remote names the list the ledger cannot
    explain, and accepts an older list that is a part of the real one."""
    camera = dock.root / "card"
    make_camera(camera, [1000, 2000], sidecars=False)
    for path in camera.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))  # recorded 2023-11-14 UTC
    folder = dock.nas / "X1/2023/11/14"
    folder.mkdir(parents=True)
    planted = folder / "SHA256SUMS.dock-test.docking-000001"
    planted.write_text(f"{'0' * 64}  not-delivered.mp4\n")
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")

    assert planted.read_text() == f"{'0' * 64}  not-delivered.mp4\n"
    written = folder / "SHA256SUMS.dock-test.docking-000001.v2"
    # its two objects, after the "#" header lines on how the docking's times were read
    listed = [line for line in written.read_text().splitlines() if not line.startswith("#")]
    assert len(listed) == 2
    checked = subprocess.run(["sha256sum", "--strict", "-c", written.name], cwd=folder,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = dock.cli("audit", "verify", "--remote", "--json", check=False)
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert [p["anchor_key"] for p in problems] == [str(planted.relative_to(dock.nas))]
    assert "not-delivered.mp4" in problems[0]["problem"]

    planted.write_text(listed[0] + "\n")  # now an older, shorter list of the same docking
    assert dock.cli("audit", "verify", "--remote", check=False).returncode == 0


def test_a_forged_list_for_a_docking_the_ledger_lacks_is_named(dock: Dock) -> None:
    """A SHA256SUMS in this dock's name for a docking the ledger never delivered fails
    the check, naming it."""
    offload(dock)
    forged = dock.nas / "X1" / "SHA256SUMS.dock-test.docking-000099"
    forged.write_text(f"{'1' * 64}  clip.mp4\n")
    other_dock = dock.nas / "X1" / "SHA256SUMS.dock-other.docking-000099"
    other_dock.write_text(f"{'1' * 64}  clip.mp4\n")  # another dock's: not ours to check
    result = dock.cli("audit", "verify", "--remote", "--json", check=False)
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert [p["anchor_key"] for p in problems] == ["X1/SHA256SUMS.dock-test.docking-000099"]


def test_csv_export_rows_match_the_ledger(dock: Dock) -> None:
    """Every audit row of every clip appears once in the CSV, with the clip's facts."""
    offload(dock, "X1")
    offload(dock, "X2", sizes=(1500,))
    # back-dated over uploaded clips: refused unless forced
    dock.cli("cameras", "assign", "X1", "officer-1", "--at", "2000-01-01T00:00:00Z", "--force")
    result = dock.cli("audit", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))

    with sqlite3.connect(dock.ledger_path) as connection:
        connection.row_factory = sqlite3.Row
        ledger_steps = [
            dict(row)
            for row in connection.execute(
                "SELECT a.id, a.at, a.event, a.actor, a.dock_id, a.sha256, a.hash, a.clip_id, "
                "c.camera_serial, c.source_path, c.sha256 AS clip_sha256, c.remote_key, c.state "
                "FROM audit_log a JOIN clips c ON c.id = a.clip_id ORDER BY a.id"
            )
        ]
    assert len(rows) == len(ledger_steps)
    by_audit_id = {int(row["audit_id"]): row for row in rows}
    for step in ledger_steps:
        row = by_audit_id[step["id"]]
        assert int(row["clip_id"]) == step["clip_id"]
        assert row["event"] == step["event"] and row["at"] == step["at"]
        assert row["actor"] == step["actor"] and row["dock_id"] == step["dock_id"]
        assert row["sha256"] == (step["sha256"] or "")
        assert row["audit_hash"] == step["hash"]
        assert row["camera_serial"] == step["camera_serial"]
        assert row["source_path"] == step["source_path"]
        assert row["clip_sha256"] == step["clip_sha256"]
        assert row["remote_key"] == step["remote_key"]
        assert row["officer_id"] == ("officer-1" if step["camera_serial"] == "X1" else "")
    staged = [r for r in rows if r["event"] == "clip.staged"]
    assert staged and all(r["device"] and r["outcome"] == "ok" for r in staged)
    assert {r["step"] for r in rows} >= {
        "seen on camera",
        "read off camera and staged",
        "uploaded, verified by storage",
    }


def test_json_export_filters_by_camera_and_recording_time(dock: Dock) -> None:
    """--camera, --since and --until select clips by camera and recording time."""
    camera = dock.root / "card"
    for name, when in (("OLD.MP4", 1_600_000_000), ("NEW.MP4", 1_700_000_000)):
        path = camera / "DCIM" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        os.utime(path, (when, when))  # 2020-09-13 and 2023-11-14
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    offload(dock, "X2", sizes=(100,))

    def exported(*arguments: str) -> list[str]:
        result = dock.cli("audit", "export", "--format", "json", *arguments)
        return sorted(clip["source_path"] for clip in json.loads(result.stdout)["clips"])

    assert exported("--camera", "X1") == ["DCIM/NEW.MP4", "DCIM/OLD.MP4"]
    assert exported("--camera", "X1", "--since", "2023-01-01") == ["DCIM/NEW.MP4"]
    assert exported("--camera", "X1", "--until", "2023-01-01") == ["DCIM/OLD.MP4"]
    document = json.loads(dock.cli("audit", "export", "--format", "json").stdout)
    assert document["audit_chain"]["intact"] is True
    assert len(document["clips"]) == 3
    assert dock.cli("audit", "export", "--since", "yesterday", check=False).returncode == 2


def test_export_defuses_spreadsheet_formulas_in_camera_names(dock: Dock, tmp_path: Path) -> None:
    """A camera file named like a formula is written as text, never as a formula."""
    camera = tmp_path / "card"
    camera.mkdir()
    (camera / "=HYPERLINK(1).MP4").write_bytes(b"x")
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    [clip] = dock.clips()
    assert clip["source_path"].startswith("=")
    rows = list(csv.DictReader(io.StringIO(dock.cli("audit", "export", "--format", "csv").stdout)))
    assert rows
    assert {row["source_path"] for row in rows} == {"'" + clip["source_path"]}


def test_a_fresh_ledger_under_a_renamed_dock_does_not_pass_with_no_anchors(
    dock: Dock,
) -> None:
    """The ledger thrown away and the dock renamed: audit verify --remote finds no anchor
    of the new name, says so with the docks whose anchors are there, and exits 1."""
    offload(dock)
    dock.ledger_path.unlink()
    dock.write_config(dock={"id": "dock-renamed"})

    result = dock.cli("audit", "verify", "--remote", "--json", check=False)

    assert result.returncode == 1, result.stdout + result.stderr
    [problem] = json.loads(result.stdout)["problems"]
    assert "holds no anchor of dock dock-renamed" in problem["problem"]
    assert "'dock-test'" in problem["problem"]


def test_a_change_to_any_column_of_an_audited_row_breaks_the_chain(dock: Dock) -> None:
    """Every column of audit_log, as the ledger file has them (not the product's list
    of hashed columns), is covered: changing any one of a row's makes audit verify
    exit 1 naming that row, so a column added later cannot be left out of the hash."""
    offload(dock, sizes=(1000,))
    target = next(r for r in audit_rows(dock) if r["event"] == "clip.staged")
    row_id = target["id"]
    with sqlite3.connect(dock.ledger_path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(audit_log)")]
    assert "details" in columns and "hash" in columns  # the table was read, not guessed
    expected = {"id": (row_id + 1, f"row {row_id} is missing"),
                "prev_hash": (row_id, "prev_hash does not match the previous row's hash")}
    for column in columns:
        original = target[column]
        changed = (10_000 if column == "id" else original + 1 if isinstance(original, int)
                   else "tampered" if original is None else original + "0")
        _set_column(dock, row_id, column, changed)
        document = json.loads(dock.cli("audit", "verify", "--json", check=False).stdout)
        _set_column(dock, 10_000 if column == "id" else row_id, column, original)
        assert (document["first_broken_row"], document["reason"]) == expected.get(
            column, (row_id, "row content does not match its hash")), column
    assert dock.cli("audit", "verify").returncode == 0  # every change was put back


def _set_column(dock: Dock, row_id: int, column: str, value: Any) -> None:
    with sqlite3.connect(dock.ledger_path) as connection:
        connection.execute(f"UPDATE audit_log SET {column} = ? WHERE id = ?",
                           (value, row_id))
