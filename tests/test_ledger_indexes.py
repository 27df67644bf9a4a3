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
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.db import create_ledger_engine, migrate, schema_revision
from bwc_dock.ledger.leases import current_owner
from bwc_dock.ledger.models import Base
from bwc_dock.ledger.quick import QuickReader

# Enough uploaded clips that reading them all is thousands of times the work of the
# few index searches the hot path needs, and few enough to build in about a second.
OLD_CLIPS = 50_000
OLD_CAMERAS = 400
NEW_INDEXES = {"ix_clips_camera_state", "ix_clips_state_discovered"}  # migration 0004


def _config(tmp_path: Path) -> Config:
    return parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state")},
                         "storage": {"path": str(tmp_path / "nas")}})


def _fill_with_history(ledger_path: Path) -> None:
    """Years of uploaded clips, written as the ledger stores them, then ANALYZE: the
    statistics then say that nearly every clip is ``uploaded``, as on a real old dock."""
    moment = "2024-01-01 00:00:00.000000"
    connection = sqlite3.connect(ledger_path)
    with connection:
        connection.executemany(
            "INSERT INTO cameras (serial, first_seen_at) VALUES (?, ?)",
            ((f"OLD{number:03d}", moment) for number in range(OLD_CAMERAS)))
        connection.executemany(
            "INSERT INTO dockings (id, camera_serial, dock_id, source, device, volume_root,"
            " docked_at, undocked_at, refused_entries) VALUES (?, ?, 't', 'udev', '/dev/sdb1',"
            " '/mnt', ?, ?, 0)",
            ((number + 1, f"OLD{number:03d}", moment, moment) for number in range(OLD_CAMERAS)))
        connection.executemany(
            "INSERT INTO clips (camera_serial, docking_id, source_path_raw, source_path, name,"
            " size, mtime_ns, recorded_at, sha256, state, priority, copy_attempts,"
            " upload_attempts, discovered_at, updated_at) VALUES (?, ?, ?, ?, ?, 1000, ?, ?, ?,"
            " 'uploaded', 0, 1, 1, ?, ?)",
            ((f"OLD{number % OLD_CAMERAS:03d}", number % OLD_CAMERAS + 1,
              f"DCIM/{number}.MP4".encode(), f"DCIM/{number}.MP4", f"{number}.MP4", number,
              moment, f"{number:064x}", moment, moment) for number in range(OLD_CLIPS)))
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


def _old_ledger_with_history(tmp_path: Path) -> tuple[Config, Path]:
    """A dock's ledger at schema 0003 holding years of uploaded clips."""
    config = _config(tmp_path)
    config.dock.state_dir.mkdir(parents=True)
    engine = create_ledger_engine(config.ledger_url)
    migrate(engine, "0003")
    engine.dispose()
    ledger_path = config.dock.state_dir / "ledger.sqlite3"
    _fill_with_history(ledger_path)
    return config, ledger_path


def test_the_upgrade_adds_the_indexes_declared_in_the_models(tmp_path: Path) -> None:
    """Opening a 0003 ledger migrates it to 0004, which adds the new indexes, and the
    migrated ledger has exactly the indexes the models declare."""
    config, ledger_path = _old_ledger_with_history(tmp_path)
    ledger = Ledger.open(config, "upgraded")
    assert schema_revision(ledger.engine) == "0004"
    with ledger.engine.connect() as connection:
        indexes = set(connection.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'clips'"
            " AND name NOT LIKE 'sqlite_autoindex_%'")).scalars())
    ledger.close()
    declared = {index.name for index in Base.metadata.tables["clips"].indexes}
    assert indexes >= NEW_INDEXES
    assert indexes == declared
    database = sqlite3.connect(ledger_path)
    assert database.execute("SELECT count(*) FROM clips").fetchone() == (OLD_CLIPS,)
    database.close()


def test_upload_claim_and_oldest_pending_do_not_read_the_history(tmp_path: Path) -> None:
    """On a ledger of 50,000 uploaded clips the daemon's upload claim and the oldest
    pending clip (facade and quick reader) search the 0004 indexes, before and after
    ANALYZE; the same statements on the ledger before the upgrade read every clip, which
    shows the data set is big enough to tell the two apart."""
    config, ledger_path = _old_ledger_with_history(tmp_path)
    before_upgrade = tmp_path / "before-upgrade.sqlite3"
    shutil.copyfile(ledger_path, before_upgrade)
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
    oldest = next(pair for pair in sent if "min(clips.discovered_at)" in pair[0])
    quick_oldest = (next(line for line in quick_sent if "min(discovered_at)" in line), ())
    checks = [claim, oldest, quick_oldest]
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
