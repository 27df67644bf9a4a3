"""Indexes of an aged ledger: a migration adds them to an old ledger, and the hot-path
statements use them instead of reading rows in proportion to the ledger's history."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from bwc_dock.config import Config, parse_config
from bwc_dock.found import DockedVolume, FoundClip, FoundFile
from bwc_dock.handrun import ingest_folder
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.assignments import Assignment, officer_at
from bwc_dock.ledger.db import create_ledger_engine, migrate, schema_revision
from bwc_dock.ledger.leases import current_owner
from bwc_dock.ledger.models import Base
from bwc_dock.ledger.quick import QuickReader
from tests.dock import make_camera, utc_datetime

# Enough uploaded clips that reading them all is thousands of times the work of the
# few index searches the hot path needs, and few enough to build in about a second.
OLD_CLIPS = 50_000
OLD_CAMERAS = 400
# one camera docked daily for years: its own history is long
BUSY_CAMERA = "BUSY"
BUSY_CLIPS = 5_000
NEW_INDEXES = {  # migration 0004
    "ix_clips_camera_state",
    "ix_clips_state_discovered",
    "ix_audit_log_camera_event",
}


def _config(tmp_path: Path) -> Config:
    return parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state")},
                         "storage": {"path": str(tmp_path / "nas")}})


def _serial(number: int) -> str:
    return BUSY_CAMERA if number == OLD_CAMERAS else f"OLD{number:03d}"


def _camera_of_clip(number: int) -> int:
    return OLD_CAMERAS if number < BUSY_CLIPS else number % OLD_CAMERAS


def _fill_with_history(ledger_path: Path, *, analyze: bool = True) -> None:
    """Years of uploaded clips with three audit entries each, written as the ledger
    stores them, then ANALYZE (unless not ``analyze``): the statistics then say that
    nearly every clip is ``uploaded``, as on a real old dock. The busy camera was issued
    to one officer."""
    moment = "2024-01-01 00:00:00.000000"
    cameras = OLD_CAMERAS + 1
    connection = sqlite3.connect(ledger_path)
    with connection:
        connection.executemany(
            "INSERT INTO cameras (serial, first_seen_at) VALUES (?, ?)",
            ((_serial(number), moment) for number in range(cameras)))
        connection.executemany(
            "INSERT INTO dockings (id, camera_serial, dock_id, source, device, volume_root,"
            " docked_at, undocked_at, refused_entries) VALUES (?, ?, 't', 'udev', '/dev/sdb1',"
            " '/mnt', ?, ?, 0)",
            ((number + 1, _serial(number), moment, moment) for number in range(cameras)))
        connection.execute(
            "INSERT INTO audit_log (at, dock_id, actor, event, camera_serial, details,"
            " prev_hash, hash) VALUES (?, 't', 'cli', 'camera.assigned', ?, ?, '', '')",
            (moment, BUSY_CAMERA, '{"assigned_at": "2024-01-01T00:00:00+00:00",'
             ' "officer_id": "O-1", "previous_officer_id": null}'))
        connection.executemany(
            "INSERT INTO audit_log (at, dock_id, actor, event, camera_serial, clip_id,"
            " details, prev_hash, hash) VALUES (?, 't', 'daemon', ?, ?, ?, '{}', '', '')",
            ((moment, ("clip.staged", "clip.uploading", "clip.uploaded")[number % 3],
              _serial(_camera_of_clip(number // 3)), number // 3 + 1)
             for number in range(OLD_CLIPS * 3)))
        connection.executemany(
            "INSERT INTO clips (camera_serial, docking_id, source_path_raw, source_path, name,"
            " size, mtime_ns, recorded_at, sha256, state, priority, copy_attempts,"
            " upload_attempts, discovered_at, updated_at) VALUES (?, ?, ?, ?, ?, 1000, ?, ?, ?,"
            " 'uploaded', 0, 1, 1, ?, ?)",
            ((_serial(_camera_of_clip(number)), _camera_of_clip(number) + 1,
              f"DCIM/{number}.MP4".encode(), f"DCIM/{number}.MP4", f"{number}.MP4", number,
              moment, f"{number:064x}", moment, moment) for number in range(OLD_CLIPS)))
        columns = {row[1] for row in connection.execute("PRAGMA table_info(clips)")}
        if "gone_from_camera_at" in columns:  # a ledger at 0009 or later
            # each old file left its camera long ago, and the docking after that said so
            # (clip.vanished_on_camera): the ledger believes none is on a camera now
            connection.execute("UPDATE clips SET gone_from_camera_at = ?", (moment,))
    if analyze:
        connection.execute("ANALYZE")
    connection.close()


@contextmanager
def _statements(ledger: Ledger) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Every statement the ledger sends while the block runs, with its parameters."""
    sent: list[tuple[str, tuple[Any, ...]]] = []

    def record(_connection: Any, _cursor: Any, statement: str, parameters: Any,
               _context: Any, _executemany: bool) -> None:
        sent.append((statement, tuple(parameters or ())))

    event.listen(ledger.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(ledger.engine, "before_cursor_execute", record)


def _work(ledger_path: Path, statement: str, parameters: tuple[Any, ...]) -> int:
    """SQLite virtual-machine steps one run of the statement takes (rolled back): a
    count of the rows it reads, which does not depend on the machine's speed."""
    connection = sqlite3.connect(ledger_path, isolation_level=None)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    connection.set_progress_handler(count, 100)
    connection.execute("BEGIN")
    connection.execute(statement, parameters).fetchall()
    connection.execute("ROLLBACK")
    connection.close()
    return steps * 100


def _plan(ledger_path: Path, statement: str, parameters: tuple[Any, ...]) -> list[str]:
    connection = sqlite3.connect(ledger_path)
    plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    connection.close()
    return plan


def _old_ledger_with_history(
    tmp_path: Path, *, revision: str = "0003", analyze: bool = True
) -> tuple[Config, Path]:
    """A dock's ledger at schema ``revision`` holding years of uploaded clips."""
    config = _config(tmp_path)
    config.dock.state_dir.mkdir(parents=True)
    engine = create_ledger_engine(config.ledger_url)
    migrate(engine, revision)
    engine.dispose()
    ledger_path = config.dock.state_dir / "ledger.sqlite3"
    _fill_with_history(ledger_path, analyze=analyze)
    return config, ledger_path


def _copy_without_new_indexes(ledger_path: Path, tmp_path: Path) -> Path:
    """A copy of the old ledger with the newest tables' columns but its own old indexes:
    today's statements run on it, with the plans the old indexes allow."""
    copy = tmp_path / "before-upgrade.sqlite3"
    shutil.copyfile(ledger_path, copy)
    connection = sqlite3.connect(copy)
    for table in Base.metadata.sorted_tables:
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({table.name})")}
        for column in table.columns:
            if column.name not in present:
                connection.execute(f"ALTER TABLE {table.name} ADD COLUMN {column.name}")
    connection.commit()
    connection.close()
    return copy


def test_the_upgrade_adds_the_indexes_declared_in_the_models(tmp_path: Path) -> None:
    """Opening a 0003 ledger migrates it to 0004, which adds the new indexes (and drops
    ix_audit_log_camera_serial, the new audit index's prefix), and the migrated ledger
    has exactly the indexes the models declare."""
    config, ledger_path = _old_ledger_with_history(tmp_path)
    ledger = Ledger.open(config, "upgraded")
    assert schema_revision(ledger.engine) == "0010"
    with ledger.engine.connect() as connection:
        indexes = set(connection.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name IN ('clips', 'audit_log') AND name NOT LIKE 'sqlite_autoindex_%'"
        )).scalars())
    ledger.close()
    declared = {index.name for table in ("clips", "audit_log")
                for index in Base.metadata.tables[table].indexes}
    assert indexes >= NEW_INDEXES
    assert indexes == declared
    database = sqlite3.connect(ledger_path)
    assert database.execute("SELECT count(*) FROM clips").fetchone() == (OLD_CLIPS,)
    database.close()


def test_upload_claim_and_oldest_pending_do_not_read_the_history(tmp_path: Path) -> None:
    """On a ledger of 50,000 uploaded clips the daemon's upload claim and the oldest
    pending clip (the read model of facade and quick reader) search the 0004 indexes,
    before and after ANALYZE; the same statements on the ledger before the upgrade read
    every clip, which shows the data set is big enough to tell the two apart."""
    config, ledger_path = _old_ledger_with_history(tmp_path)
    before_upgrade = _copy_without_new_indexes(ledger_path, tmp_path)
    ledger = Ledger.open(config, "upgraded")
    with _statements(ledger) as sent:
        assert ledger.claim_for_upload(current_owner("uploader")) is None  # nothing staged
        assert ledger.oldest_pending_at() is None
    ledger.close()
    reader = QuickReader.open(config.ledger_url)
    assert reader is not None
    quick_sent: list[str] = []
    reader.connection.set_trace_callback(quick_sent.append)
    assert reader.oldest_pending_at() is None
    reader.close()

    claim = next(pair for pair in sent if "last_upload_claimed_at" in pair[0]
                 and pair[0].lstrip().startswith("SELECT"))
    # the facade and the quick reader ask the one read model (read_model.py)
    oldest = (next(line for line in quick_sent if "min(discovered_at)" in line), ())
    checks = [claim, oldest]
    for statement, parameters in checks:
        assert _work(before_upgrade, statement, parameters) > OLD_CLIPS, statement
    for analyzed in (False, True):  # statistics as upgraded, and once the new indexes have them
        if analyzed:
            connection = sqlite3.connect(ledger_path)
            connection.execute("ANALYZE")
            connection.close()
        for statement, parameters in checks:
            plan = _plan(ledger_path, statement, parameters)
            assert any(name in step for step in plan for name in NEW_INDEXES), plan
            assert _work(ledger_path, statement, parameters) < OLD_CLIPS // 4, plan


def test_an_old_cameras_scan_and_custody_do_not_read_its_history(tmp_path: Path) -> None:
    """For a camera with 5,000 clips and 15,000 audit entries behind it, registering a
    scan of 20 files, finding the officer of a clip (every custody record) and asking
    whether the camera is still needed (every turn of the daemon's main loop) read about
    the 20 files and the one assignment; the officer lookup on the ledger before the
    upgrade read all of the camera's audit entries."""
    config, ledger_path = _old_ledger_with_history(tmp_path)
    before_upgrade = _copy_without_new_indexes(ledger_path, tmp_path)
    ledger = Ledger.open(config, "upgraded")
    volume = DockedVolume("ingest", str(tmp_path), tmp_path, BUSY_CAMERA)
    docking = ledger.record_docking(volume, current_owner("test"))
    found = [FoundClip(FoundFile(f"DCIM/NEW_{number}.MP4".encode(), 10, number), utc_datetime())
             for number in range(20)]
    with _statements(ledger) as sent:
        assert len(ledger.record_scan(docking, found, 0)) == 20
        with ledger.transaction() as session:
            assert officer_at(session, BUSY_CAMERA, utc_datetime()) == "O-1"
        assert ledger.record_scan(docking, found, 0) == []  # seen again: the same clips
        assert ledger.needing_camera(BUSY_CAMERA) == 20
    ledger.close()

    known = next(pair for pair in sent if pair[0].lstrip().startswith(
        "SELECT clips.source_path_raw"))
    officer = next(pair for pair in sent if "audit_log.details" in pair[0])
    needed = next(pair for pair in sent if pair[0].lstrip().startswith("SELECT count")
                  and "staged_verified" in pair[0])
    assert _work(before_upgrade, *officer) > BUSY_CLIPS * 3
    for statement, parameters in (known, officer, needed):
        assert _work(ledger_path, statement, parameters) < BUSY_CLIPS // 5, _plan(
            ledger_path, statement, parameters)


def _partial_indexes(ledger_path: Path) -> set[str]:
    connection = sqlite3.connect(ledger_path)
    names = {name for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'")}
    connection.close()
    return names


def _scans_clips(plan: list[str], partial_indexes: set[str]) -> bool:
    """A step reading the clips table (or a whole index of it) from end to end; a partial
    index holds only the few rows it names (the leased clips, say)."""
    return any(step.startswith("SCAN clips")
               and not any(step.endswith(f"INDEX {name}") for name in partial_indexes)
               for step in plan)


def test_an_ingest_on_a_ledger_without_statistics_searches_its_indexes(tmp_path: Path) -> None:
    """On a ledger of 50,000 uploaded clips that was never analyzed (no sqlite_stat1, as
    every ledger grows), each statement of a hand ingest of an old camera, the staging
    purge and the oldest pending clip SEARCHes an index, none SCANs clips, and none reads
    more than a fraction of the history."""
    config, ledger_path = _old_ledger_with_history(tmp_path, revision="head", analyze=False)
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas/.bwc-dock-store").touch()  # the share's marker file
    card = tmp_path / "card"
    make_camera(card, [1000] * 3, sidecars=False)
    ledger = Ledger.open(config, "ingest")
    with _statements(ledger) as sent:
        report = ingest_folder(config, ledger, card, BUSY_CAMERA, wait=True, timeout_seconds=120)
        assert len(ledger.purgeable(utc_datetime())) == 3  # the new clips, staged copies kept
        assert ledger.oldest_pending_at() is None
    ledger.close()
    assert report.ok and report.new == 3, report.problems
    database = sqlite3.connect(ledger_path)
    assert database.execute(
        "SELECT count(*) FROM sqlite_master WHERE name LIKE 'sqlite_stat%'").fetchone() == (0,)
    database.close()

    partial = _partial_indexes(ledger_path)
    reading = sorted({pair for pair in sent if pair[0].lstrip().upper().startswith(
        ("SELECT", "UPDATE", "DELETE")) and " clips" in pair[0]})
    assert len(reading) > 10  # the ingest's claims, finishes, counts and lists were seen
    for statement, parameters in reading:
        plan = _plan(ledger_path, statement, parameters)
        assert not _scans_clips(plan, partial), (plan, statement)
        assert any(step.startswith("SEARCH clips") for step in plan), (plan, statement)
        assert _work(ledger_path, statement, parameters) < OLD_CLIPS // 4, (plan, statement)
    purge = next(pair for pair in reading if "staged_purged_at IS NULL" in pair[0])
    assert _plan(ledger_path, *purge) == [
        "SEARCH clips USING INDEX ix_clips_staged_copies (uploaded_at<?)"]


def test_the_fleet_records_a_dock_handled_are_found_without_reading_the_audit_log(
    tmp_path: Path,
) -> None:
    """Which fleet assignment records this dock applied or refused (asked by every ingest
    and every daemon start) is read through the partial index of those audit rows, with
    or without statistics; on the ledger before migration 0010 the same statement read
    all 150,000 audit rows."""
    config, ledger_path = _old_ledger_with_history(tmp_path, revision="0009", analyze=False)
    before_upgrade = _copy_without_new_indexes(ledger_path, tmp_path)
    ledger = Ledger.open(config, "upgraded")
    applied = Assignment("OLD001", "O-2", utc_datetime(), record_key="assignments/OLD001/a",
                         record={"camera": "OLD001", "officer_id": "O-2"})
    ledger.assign_cameras([applied])
    ledger.record_fleet_assignment_refusal("OLD002", "assignments/OLD002/b", "back-dated")
    with _statements(ledger) as sent:
        handled = ledger.fleet_assignment_records()
    ledger.close()
    assert handled == {"assignments/OLD001/a": {"camera": "OLD001", "officer_id": "O-2"},
                       "assignments/OLD002/b": None}
    [statement] = [pair for pair in sent if "audit_log.details" in pair[0]]
    assert _work(before_upgrade, *statement) > OLD_CLIPS * 3
    for analyzed in (False, True):
        if analyzed:
            connection = sqlite3.connect(ledger_path)
            connection.execute("ANALYZE")
            connection.close()
        plan = _plan(ledger_path, *statement)
        assert any("ix_audit_log_fleet_records" in step for step in plan), plan
        assert _work(ledger_path, *statement) < 1_000, plan
