"""Reading the ledger takes no write lock: questions about clips never hold up the workers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bwc_dock.config import parse_config
from bwc_dock.found import DockedVolume
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.leases import current_owner

# Far longer than any commit takes; only a writer held up by the reader waits it out.
WRITER_TIMEOUT_SECONDS = 60.0


def _ledger(tmp_path: Path) -> Ledger:
    config = parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state")},
                           "storage": {"path": str(tmp_path / "nas")}})
    return Ledger.open(config, "test")


def _record_a_docking(ledger: Ledger, tmp_path: Path) -> int:
    volume = DockedVolume("ingest", str(tmp_path), tmp_path, "CAM1")
    return ledger.record_docking(volume, current_owner("test"))


def test_a_writer_commits_while_a_reading_transaction_is_open(tmp_path: Path) -> None:
    """A write transaction begins and commits in the middle of an open read (a status poll,
    an uploader's look at the folder's clips), and the reader keeps its snapshot. Were
    reads to take the write lock, the writer would wait for the reader, which waits here
    for the writer: the writer's event would never be set."""
    ledger = _ledger(tmp_path)
    committed = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            _record_a_docking(ledger, tmp_path)
            committed.set()
        except BaseException as error:  # reported by the assertions below
            failures.append(error)

    try:
        with ledger.store.reading() as session:
            before = session.execute(text("SELECT count(*) FROM dockings")).scalar_one()
            writer = threading.Thread(target=write)
            writer.start()
            assert committed.wait(WRITER_TIMEOUT_SECONDS), f"writer held up: {failures}"
            during = session.execute(text("SELECT count(*) FROM dockings")).scalar_one()
        writer.join()
        with ledger.store.reading() as session:
            after = session.execute(text("SELECT count(*) FROM dockings")).scalar_one()
    finally:
        ledger.close()
    assert failures == []
    assert (before, during, after) == (0, 0, 1)  # the reader's snapshot did not move


def test_a_write_slipped_into_a_reading_transaction_fails_and_leaves_writers_working(
    tmp_path: Path,
) -> None:
    """A write inside a reading transaction is refused outright (it would otherwise try to
    upgrade its lock, which SQLite refuses whenever another writer is busy). The pooled
    connection then serves a writing transaction as before."""
    ledger = _ledger(tmp_path)
    try:
        with pytest.raises(OperationalError, match="readonly"), ledger.store.reading() as session:
            session.execute(text("DELETE FROM dockings"))
        docking = _record_a_docking(ledger, tmp_path)
        with ledger.store.reading() as session:
            ids = session.execute(text("SELECT id FROM dockings")).scalars().all()
    finally:
        ledger.close()
    assert ids == [docking]


def test_the_quick_reader_and_the_facade_share_one_read_model(tmp_path: Path) -> None:
    """An open docking with its clocks measured reads the same, clocks included, through
    the quick reader and the facade; the facade's lists by docking and by ids come from
    the same read model."""
    from bwc_dock.found import FoundClip, FoundFile
    from bwc_dock.ledger.quick import QuickReader
    from bwc_dock.ledger.snapshots import DockingClocks
    from tests.dock import utc_datetime

    ledger = _ledger(tmp_path)
    docking = _record_a_docking(ledger, tmp_path)
    clocks = DockingClocks(-2.5, "file", True, 0.25, "adjtimex")
    ledger.record_clocks(docking, clocks, {})
    ledger.record_scan(docking, [FoundClip(FoundFile(f"DCIM/{n}.MP4".encode(), 10, n),
                                           utc_datetime()) for n in range(3)], 0)
    reader = QuickReader.open(str(ledger.engine.url))
    assert reader is not None
    try:
        assert [d.clocks for d in reader.active_dockings()] == [clocks]
        assert reader.active_dockings() == ledger.active_dockings()
        assert [c.id for c in ledger.clips(docking_id=docking)] == [1, 2, 3]
        assert [c.id for c in ledger.clips(ids=[3, 1, 99])] == [1, 3]
        assert ledger.clips(ids=[2]) == [reader.clips()[1]]
        assert ledger.counts_by_state("CAM1")["discovered"] == 3
        assert ledger.counts_by_state("NONE")["discovered"] == 0
    finally:
        reader.close()
        ledger.close()


def _clips_in_every_state_that_needs_the_camera(ledger: Ledger, docking: int) -> None:
    """Five clips of CAM1: discovered, copying, staged unverified, staged verified, and
    uploading unverified (one more that left its camera behind: uploaded)."""
    from bwc_dock.found import FoundClip, FoundFile
    from tests.dock import utc_datetime

    ledger.record_scan(docking, [FoundClip(FoundFile(f"DCIM/{n}.MP4".encode(), 10, n),
                                           utc_datetime()) for n in range(6)], 0)
    owner = current_owner("test")

    def staged(*, verified: bool) -> int:
        work = ledger.claim_for_copy(owner, docking)
        assert work is not None
        ledger.finish_copy(work, owner, f"{work.id:064x}", f"s/{work.id}", {}, verified=verified)
        return work.id

    staged(verified=False)
    staged(verified=True)
    uploading = staged(verified=False)
    uploaded = staged(verified=True)
    for wanted in (uploading, uploaded):
        work = ledger.claim_for_upload(owner, only=[wanted])
        assert work is not None
        if wanted == uploaded:
            ledger.finish_upload(work, owner, f"k/{work.id}", f"{work.id:064x}", {}, None)
    assert ledger.claim_for_copy(owner, docking) is not None  # one copying, one discovered


def test_a_camera_is_needed_while_a_clip_is_unstaged_or_its_staged_copy_unverified(
    tmp_path: Path,
) -> None:
    """What keeps a camera docked, counted in one snapshot: the discovered and copying
    clips and the staged or uploading ones whose copy is not yet verified; not a verified
    staged copy, nor one in central storage."""
    ledger = _ledger(tmp_path)
    try:
        _clips_in_every_state_that_needs_the_camera(ledger, _record_a_docking(ledger, tmp_path))
        by_state = ledger.counts_by_state("CAM1")
        assert (ledger.needing_camera("CAM1"), ledger.needing_camera("CAM2")) == (4, 0)
    finally:
        ledger.close()
    assert {s: n for s, n in by_state.items() if n} == {
        "discovered": 1, "copying": 1, "staged": 2, "uploading": 1, "uploaded": 1}


def test_the_daemons_questions_at_every_turn_never_wait_for_a_writer(tmp_path: Path) -> None:
    """While another process holds the ledger's write lock (a copier committing), the
    main loop's questions at every turn (dockings to adopt, whether a camera is still
    needed, the status and alarm readings) and the scan's and custody record's reads are
    answered at once. Were one to take the write lock, it would wait for this test to
    let go, which it does only after the wait below."""
    import sqlite3
    from datetime import timedelta

    from bwc_dock.ledger.models import utc_now

    ledger = _ledger(tmp_path)
    docking = _record_a_docking(ledger, tmp_path)
    _clips_in_every_state_that_needs_the_camera(ledger, docking)
    answered = threading.Event()
    failures: list[BaseException] = []

    def ask() -> None:
        try:
            assert ledger.adopt_dockings("daemon:other", frozenset({"ingest"})) == []
            assert ledger.needing_camera("CAM1") == 4
            assert ledger.copy_pending("CAM1") == 2
            assert ledger.unverified_staged("CAM1") == 2
            assert ledger.pending_in_docking(docking) == 5
            assert ledger.counts_by_state()["staged"] == 2
            assert ledger.latest_camera_offsets() == {"CAM1": None}
            assert ledger.camera_evidence_since(utc_now() - timedelta(days=1)) == []
            assert ledger.docking_facts(docking).camera_serial == "CAM1"
            record = ledger.docking(docking)
            assert record is not None and record.camera_serial == "CAM1"
            assert ledger.manifest_facts(1).times["staged_at"] is not None
            answered.set()
        except BaseException as error:  # reported by the assertions below
            failures.append(error)

    assert ledger.engine.url.database is not None
    writer = sqlite3.connect(ledger.engine.url.database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        asking = threading.Thread(target=ask)
        asking.start()
        was_answered = answered.wait(WRITER_TIMEOUT_SECONDS)
        writer.execute("ROLLBACK")
        asking.join()
    finally:
        writer.close()
        ledger.close()
    assert failures == []
    assert was_answered, "a question waited for the write lock"
