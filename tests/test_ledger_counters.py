"""The ledger's counters (clips per state, byte totals, sums_due) follow every state."""

from __future__ import annotations

import sqlite3
from collections import deque
from pathlib import Path

from sqlalchemy import update

from bwc_dock.config import Config, parse_config
from bwc_dock.found import DockedVolume, FoundClip, FoundFile
from bwc_dock.ledger import ClipState, Ledger, counters
from bwc_dock.ledger.leases import current_owner
from bwc_dock.ledger.models import Clip, Docking
from bwc_dock.ledger.states import ALLOWED_TRANSITIONS, ONLY_UNVERIFIED
from bwc_dock.ledger.transitions import move
from tests.dock import utc_datetime

CLIP_SIZE = 1000
MIGRATIONS = Path(__file__).resolve().parent.parent / "src" / "bwc_dock" / "migrations"


def _config(tmp_path: Path) -> Config:
    return parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state")},
                         "storage": {"path": str(tmp_path / "nas")}})


def _ledger_with_clip(tmp_path: Path) -> Ledger:
    ledger = Ledger.open(_config(tmp_path), "test")
    volume = DockedVolume("ingest", str(tmp_path), tmp_path, "CAM1")
    docking = ledger.record_docking(volume, current_owner("test"))
    ledger.record_scan(docking, [FoundClip(FoundFile(b"DCIM/1.MP4", CLIP_SIZE, 1),
                                           utc_datetime())], 0)
    return ledger


def _path_to(target: ClipState) -> list[ClipState]:
    """The shortest walk through the allowed transitions from discovered to ``target``."""
    came_from: dict[ClipState, ClipState | None] = {ClipState.DISCOVERED: None}
    frontier = deque([ClipState.DISCOVERED])
    while frontier:
        state = frontier.popleft()
        for following in sorted(ALLOWED_TRANSITIONS[state]):
            if following not in came_from:
                came_from[following] = state
                frontier.append(following)
    walk: list[ClipState] = []
    step: ClipState | None = target
    while step is not None and step != ClipState.DISCOVERED:
        walk.append(step)
        step = came_from[step]
    return walk[::-1]


def _move(ledger: Ledger, target: ClipState) -> None:
    """One real transition of clip 1, its docking's flag cleared first."""
    with ledger.transaction() as session:
        session.execute(update(Docking).values(sums_due=0))
    with ledger.transaction() as session:
        clip = session.get(Clip, 1)
        assert clip is not None
        # a change only an unverified staged copy may make needs one (ONLY_UNVERIFIED)
        clip.staged_verified = (ClipState(clip.state), target) not in ONLY_UNVERIFIED
        move(ledger.store, session, clip, target, owner=None)


def _counters(ledger: Ledger) -> tuple[dict[str, int], dict[str, int], int]:
    """(nonzero clips per state, bytes per kind, the docking's sums_due), read as stored."""
    assert ledger.engine.url.database is not None
    with sqlite3.connect(ledger.engine.url.database) as connection:
        counts = dict(connection.execute(
            "SELECT state, count FROM clip_state_counts WHERE count != 0").fetchall())
        totals = dict(connection.execute("SELECT kind, bytes FROM clip_byte_totals").fetchall())
        (due,) = connection.execute("SELECT sums_due FROM dockings WHERE id = 1").fetchone()
    return counts, totals, due


def test_every_state_is_counted_on_the_way_in_and_out(tmp_path: Path) -> None:
    """For every state in states.py, a real transition into it and one out of it leave
    exactly one clip counted, in its new state, and flag its docking's SHA256SUMS."""
    for state in ClipState:
        ledger = _ledger_with_clip(tmp_path / str(state))
        assert _counters(ledger)[0] == {"discovered": 1}
        for step in _path_to(state):
            _move(ledger, step)
            counts, _, due = _counters(ledger)
            assert counts == {str(step): 1}, f"into {step}"
            assert due == 1, f"into {step}"
        leaving = sorted(ALLOWED_TRANSITIONS[state])[0]
        _move(ledger, leaving)
        counts, _, due = _counters(ledger)
        assert counts == {str(leaving): 1}, f"out of {state} to {leaving}"
        assert due == 1, f"out of {state}"
        ledger.close()


def test_byte_totals_follow_the_copy_and_upload_times(tmp_path: Path) -> None:
    """Bytes count as copied while staged_at is set and as uploaded while uploaded_at is
    set; a clip sent back (times cleared) or deleted takes its bytes away again."""
    ledger = _ledger_with_clip(tmp_path)
    assert _counters(ledger)[1] == {"copied": 0, "uploaded": 0}
    stamps = (("staged_at", {"copied": 1000, "uploaded": 0}),
              ("uploaded_at", {"copied": 1000, "uploaded": 1000}))
    for column, expected in stamps:
        with ledger.transaction() as session:
            setattr(session.get(Clip, 1), column, utc_datetime())
        assert _counters(ledger)[1] == expected, column
    with ledger.transaction() as session:
        clip = session.get(Clip, 1)
        assert clip is not None
        clip.uploaded_at = None
    assert _counters(ledger)[1] == {"copied": 1000, "uploaded": 0}
    with ledger.transaction() as session:
        session.delete(session.get(Clip, 1))
    counts, totals, _ = _counters(ledger)
    assert counts == {} and totals == {"copied": 0, "uploaded": 0}
    ledger.close()


def test_the_ledger_has_exactly_the_generated_triggers(tmp_path: Path) -> None:
    """A ledger at the newest revision carries the counter triggers ledger/counters.py
    generates, word for word, and no other trigger on clips."""
    ledger = _ledger_with_clip(tmp_path)
    assert ledger.engine.url.database is not None
    with sqlite3.connect(ledger.engine.url.database) as connection:
        stored = dict(connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'clips'"
        ).fetchall())
    assert stored == counters.triggers()
    assert set(stored) == {
        "clips_counted_insert", "clips_counted_delete", "clips_counted_state",
        "clips_flag_docking", "clips_copied_bytes", "clips_copied_bytes_insert",
        "clips_copied_bytes_delete", "clips_uploaded_bytes", "clips_uploaded_bytes_insert",
        "clips_uploaded_bytes_delete",
    }
    ledger.close()


def test_an_upgrade_recounts_counters_that_drifted(tmp_path: Path) -> None:
    """The step to the generated triggers recounts from the clips: counts edited by hand
    at revision 0007 are right again after the upgrade."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from bwc_dock.ledger.db import create_ledger_engine

    ledger = _ledger_with_clip(tmp_path)
    ledger.close()
    engine = create_ledger_engine(_config(tmp_path).ledger_url)
    alembic_config = AlembicConfig()
    alembic_config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        alembic_config.attributes["connection"] = connection
        command.downgrade(alembic_config, "0007")
    engine.dispose()
    assert engine.url.database is not None
    with sqlite3.connect(engine.url.database) as connection:
        connection.execute("UPDATE clip_state_counts SET count = 99")
    ledger = Ledger.open(_config(tmp_path), "test")
    assert _counters(ledger)[0] == {"discovered": 1}
    ledger.close()
