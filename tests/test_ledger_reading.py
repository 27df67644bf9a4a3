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
