"""The ledger: state machine, durability settings, leases across processes, audit chain."""

from __future__ import annotations

import ast
import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text

from bwc_dock.config import Config, parse_config
from bwc_dock.errors import IllegalTransition, LeaseLost, LedgerError
from bwc_dock.found import DockedVolume, FoundClip, FoundFile
from bwc_dock.ledger import ClipState, Ledger
from bwc_dock.ledger.audit import find_break
from bwc_dock.ledger.db import check_durability, create_ledger_engine, migrate, schema_revision
from bwc_dock.ledger.leases import current_owner, owner_is_dead
from bwc_dock.ledger.states import (
    ALLOWED_TRANSITIONS,
    LEASED_STATES,
    PENDING_STATES,
    check_transition,
)
from tests.dock import utc_datetime

SOURCE_ROOT = Path(__file__).resolve().parent.parent / "src"


def _config(tmp_path: Path) -> Config:
    return parse_config({"dock": {"id": "t", "state_dir": str(tmp_path / "state")},
                         "storage": {"path": str(tmp_path / "nas")}})


def _ledger_with_clips(tmp_path: Path, count: int) -> Ledger:
    ledger = Ledger.open(_config(tmp_path), "test")
    volume = DockedVolume("ingest", str(tmp_path), tmp_path, "CAM1")
    docking = ledger.record_docking(volume, current_owner("test"))
    found = [FoundClip(FoundFile(f"DCIM/{n}.MP4".encode(), n, n), utc_datetime())
             for n in range(count)]
    ledger.record_scan(docking, found, 0)
    return ledger


# The clip life cycle written out from docs/design.md, independently of the product's
# table, so a wrong edit of ALLOWED_TRANSITIONS fails here (checking the product against
# its own table could not). Each edge names the design sentence that allows it.
DESIGNED_STATES = ("discovered", "copying", "staged", "uploading", "uploaded", "cleared",
                   "quarantined")
DESIGNED_TRANSITIONS: dict[str, set[str]] = {
    # a copier claims a clip seen on a camera
    "discovered": {"copying"},
    # staged: copied and verified by re-reading; discovered: "a camera undocked mid-copy
    # leaves its clip discovered"; quarantined: an integrity failure retries did not cure
    "copying": {"staged", "discovered", "quarantined"},
    # discovered: resync re-queues a clip whose staged copy is missing or damaged
    "staged": {"uploading", "quarantined", "discovered"},
    # staged: "upload failures never end a clip: it stays staged"; quarantined: "a key
    # that holds other content is an integrity conflict"; discovered: a staged copy left
    # for the upload to verify (the one read for verify and upload) was damaged,
    # and the camera is read again as a copy whose verify failed is
    "uploading": {"uploaded", "staged", "quarantined", "discovered"},
    # cleared: deleted from the camera after storage confirmed the hash; staged or
    # discovered: resync "re-queues what is missing" centrally; quarantined: verify
    # --remote finds the central copy wrong
    "uploaded": {"cleared", "staged", "discovered", "quarantined"},
    # the central copy of a clip already cleared from its camera is found wrong
    "cleared": {"quarantined"},
    # only an operator's resync releases a quarantined clip to be redone (the design says
    # a quarantined clip is never deleted; it does not forbid redoing it)
    "quarantined": {"staged", "discovered"},
}
DESIGNED_PENDING = {"discovered", "copying", "staged", "uploading"}  # bytes not yet central
DESIGNED_LEASE_FALLBACK = {"copying": "discovered", "uploading": "staged"}  # kill -9 resumes


def test_the_states_are_the_designed_ones_in_order() -> None:
    """The ledger knows exactly the seven designed states, in pipeline order."""
    assert tuple(str(state) for state in ClipState) == DESIGNED_STATES


def test_every_state_pair_follows_the_designed_life_cycle() -> None:
    """check_transition allows exactly the designed transitions and refuses every other pair."""
    for current in DESIGNED_STATES:
        for target in DESIGNED_STATES:
            if target in DESIGNED_TRANSITIONS[current]:
                check_transition(ClipState(current), ClipState(target))
            else:
                with pytest.raises(IllegalTransition):
                    check_transition(ClipState(current), ClipState(target))
    assert {str(state): {str(target) for target in targets}
            for state, targets in ALLOWED_TRANSITIONS.items()} == DESIGNED_TRANSITIONS


def test_only_an_unverified_staged_copy_is_sent_back_to_the_camera() -> None:
    """A damaged copy no re-read verified is read again; a verified one never leaves
    uploading for discovered (it is quarantined)."""
    check_transition(ClipState.UPLOADING, ClipState.DISCOVERED, staged_verified=False)
    with pytest.raises(IllegalTransition):
        check_transition(ClipState.UPLOADING, ClipState.DISCOVERED, staged_verified=True)
    check_transition(ClipState.UPLOADING, ClipState.QUARANTINED, staged_verified=True)


def test_pending_and_leased_states_are_the_designed_ones() -> None:
    """Pending means not yet in central storage; a dead worker's lease falls back one step."""
    assert {str(state) for state in PENDING_STATES} == DESIGNED_PENDING
    assert {str(held): str(fallback) for held, fallback in LEASED_STATES.items()} == (
        DESIGNED_LEASE_FALLBACK)


def test_ledger_file_runs_wal_with_synchronous_full(tmp_path: Path) -> None:
    """The SQLite ledger is in WAL mode with synchronous=FULL and foreign keys on."""
    ledger = _ledger_with_clips(tmp_path, 1)
    with ledger.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    ledger.close()


def test_a_ledger_a_crash_could_roll_back_is_refused(tmp_path: Path) -> None:
    """A ledger connection not in WAL/synchronous=FULL makes the daemon refuse to start."""
    path = tmp_path / "rollback.sqlite3"
    sqlite3.connect(path).execute("PRAGMA journal_mode=DELETE").close()
    with pytest.raises(LedgerError, match="WAL with synchronous=FULL"):
        check_durability(create_engine(f"sqlite:///{path}"))


def test_reopening_keeps_history_and_schema_revision(tmp_path: Path) -> None:
    """Opening an existing ledger migrates in place and keeps every row."""
    _ledger_with_clips(tmp_path, 3).close()
    ledger = Ledger.open(_config(tmp_path), "test")
    assert len(ledger.clips()) == 3
    with ledger.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    ledger.close()


def _claim_all(
    config_document: dict[str, object], worker: int, results: multiprocessing.Queue[list[int]],
) -> None:
    ledger = Ledger.open(parse_config(config_document), f"worker-{worker}")
    owner = current_owner(f"worker-{worker}")
    claimed = []
    while (work := ledger.claim_for_copy(owner)) is not None:
        claimed.append(work.id)
    results.put(claimed)
    ledger.close()


def test_each_clip_is_claimed_by_exactly_one_process(tmp_path: Path) -> None:
    """Four processes race to claim 200 clips; every clip goes to exactly one of them."""
    _ledger_with_clips(tmp_path, 200).close()
    document = {"dock": {"id": "t", "state_dir": str(tmp_path / "state")},
                "storage": {"path": str(tmp_path / "nas")}}
    results: multiprocessing.Queue[list[int]] = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_claim_all, args=(document, n, results))
                 for n in range(4)]
    for process in processes:
        process.start()
    claimed = [clip for _ in processes for clip in results.get(timeout=120)]
    for process in processes:
        process.join(timeout=60)
    assert sorted(claimed) == list(range(1, 201))


def test_a_lost_lease_cannot_record_a_result(tmp_path: Path) -> None:
    """A worker whose clip was taken back cannot write its result over the new owner's."""
    ledger = _ledger_with_clips(tmp_path, 1)
    work = ledger.claim_for_copy("elsewhere/1/1/old-worker")
    assert work is not None
    with ledger.transaction() as session:  # the lease ran out long ago
        session.execute(text("UPDATE clips SET lease_expires_at = '2000-01-01 00:00:00'"))
    assert ledger.recover_leases() == {"discovered": 1}
    with pytest.raises(LeaseLost):
        ledger.finish_copy(work, "elsewhere/1/1/old-worker", "0" * 64, "clips/1", {})
    assert ledger.clips()[0].state is ClipState.DISCOVERED
    ledger.close()


def test_audit_chain_detects_an_edited_row(tmp_path: Path) -> None:
    """Changing any audited column breaks the chain at that row."""
    ledger = _ledger_with_clips(tmp_path, 3)
    assert find_break(ledger.audit_entries()) is None
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as connection:
        connection.execute("UPDATE audit_log SET details = '{}' WHERE id = 3")
    broken = find_break(ledger.audit_entries())
    assert broken is not None and broken.entry_id == 3
    ledger.close()


def test_a_ledger_from_the_first_release_is_upgraded_in_place(tmp_path: Path) -> None:
    """A dock's ledger at schema 0001 keeps its camera, clips and audit chain when opened."""
    config = _config(tmp_path)
    config.dock.state_dir.mkdir(parents=True)
    engine = create_ledger_engine(config.ledger_url)
    migrate(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO cameras (serial, first_seen_at) "
                                "VALUES ('OLD1', '2026-01-02 03:04:05.000000')"))
    engine.dispose()

    ledger = Ledger.open(config, "upgraded")
    assert schema_revision(ledger.engine) == "0010"
    with ledger.engine.connect() as connection:
        indexes = set(connection.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'index'")).scalars())
    assert {"ix_clips_docking_state", "ix_dockings_open", "ix_clips_leased",
            "ix_clips_staged_copies"} <= indexes  # 0003
    assert [camera.serial for camera in ledger.cameras()] == ["OLD1"]
    volume = DockedVolume("ingest", str(tmp_path), tmp_path, "OLD1")
    docking = ledger.record_docking(volume, current_owner("test"))
    ledger.record_scan(docking, [FoundClip(FoundFile(b"DCIM/A.MP4", 1, 1), utc_datetime())], 0)
    assert ledger.claim_for_upload(current_owner("uploader")) is None  # nothing staged yet
    assert len(ledger.clips()) == 1
    ledger.close()


def test_clips_staged_before_migration_0007_count_as_verified(tmp_path: Path) -> None:
    """A staged clip of a ledger at 0006 (before the column) is verified after the upgrade:
    its copy was verified, or the rule of its time (quarantine if damaged) applies."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    ledger = _ledger_with_clips(tmp_path, 1)
    alembic_config = AlembicConfig()
    alembic_config.set_main_option("script_location", str(SOURCE_ROOT / "bwc_dock/migrations"))
    with ledger.engine.begin() as connection:
        connection.execute(text("UPDATE clips SET state = 'staged', staged_path = 'x'"))
        alembic_config.attributes["connection"] = connection
        command.downgrade(alembic_config, "0006")
    ledger.close()

    ledger = Ledger.open(_config(tmp_path), "upgraded")
    (clip,) = ledger.clips()
    assert (clip.state, clip.staged_verified) == (ClipState.STAGED, True)
    ledger.close()


def test_adopting_a_staged_copy_is_checked_and_audited(tmp_path: Path) -> None:
    """A staged copy goes back only to an unleased, already copied clip, and is audited."""
    ledger = _ledger_with_clips(tmp_path, 1)
    with pytest.raises(IllegalTransition):  # never read off the camera: nothing to adopt
        ledger.adopt_staged_copy(1, "clips/00000001", "/stray", "/target")
    work = ledger.claim_for_copy("elsewhere/1/1/worker")
    assert work is not None
    with pytest.raises(LeaseLost):  # a worker holds it
        ledger.adopt_staged_copy(work.id, "clips/00000001", "/stray", "/target")
    ledger.finish_copy(work, "elsewhere/1/1/worker", "a" * 64, "clips/1", {})

    ledger.adopt_staged_copy(work.id, "clips/00000001", "/stray", "/target")

    adopted = ledger.get(work.id)
    assert adopted is not None
    assert adopted.staged_path == "clips/00000001" and adopted.state is ClipState.STAGED
    entries = ledger.audit_entries()
    [entry] = [e for e in entries if e.event == "clip.staging_adopted"]
    assert entry.clip_id == work.id and json.loads(entry.details) == {
        "from": "/stray",
        "to": "/target",
    }
    assert find_break(entries) is None
    ledger.close()


def _bwc_dock_imports(path: Path) -> set[str]:
    """The bwc_dock modules (or packages) a source file imports, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bwc_dock"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bwc_dock"))
    return found


def test_no_sql_outside_the_ledger() -> None:
    """Only the ledger package (and its migrations) imports SQLAlchemy."""
    package = SOURCE_ROOT / "bwc_dock"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).parts
        if relative[0] in ("ledger", "migrations"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(name.split(".")[0] in ("sqlalchemy", "alembic") for name in names):
                offenders.append(str(path.relative_to(package)))
    assert offenders == []


def test_the_ledger_imports_nothing_that_imports_it() -> None:
    """What the ledger package imports from bwc_dock never leads back to the ledger."""
    package = SOURCE_ROOT / "bwc_dock"
    modules = {
        ".".join(("bwc_dock", *path.relative_to(package).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): path
        for path in package.rglob("*.py")
    }
    imports = {name: _bwc_dock_imports(path) & modules.keys() for name, path in modules.items()}
    outside = {
        dependency
        for name in modules
        if name.startswith("bwc_dock.ledger")
        for dependency in imports[name]
        if not dependency.startswith("bwc_dock.ledger")
    }
    assert "bwc_dock.cameras" not in outside  # the officer lookup that used to loop back
    reached, frontier = set(outside), list(outside)
    while frontier:
        for dependency in imports[frontier.pop()] - reached:
            reached.add(dependency)
            frontier.append(dependency)
    assert not {name for name in reached if name.startswith("bwc_dock.ledger")}


def _counted_by_scan(ledger: Ledger) -> tuple[dict[str, int], tuple[int, int]]:
    """What the trigger-kept tables must equal: the counts and sums over every clip."""
    with ledger.engine.connect() as connection:
        counts: dict[str, int] = dict(connection.execute(text(
            "SELECT state, count(*) FROM clips GROUP BY state")).all())
        copied, uploaded = connection.execute(text(
            "SELECT coalesce(sum(CASE WHEN staged_at IS NOT NULL THEN size END), 0),"
            " coalesce(sum(CASE WHEN uploaded_at IS NOT NULL THEN size END), 0) FROM clips"
        )).one()
    return {state: counts.get(state, 0) for state in map(str, ClipState)}, (copied, uploaded)


def _copy_and_upload(ledger: Ledger, clip_id: int) -> None:
    copier, uploader = current_owner("copier"), current_owner("uploader")
    work = ledger.claim_for_copy(copier)
    assert work is not None and work.id == clip_id
    ledger.finish_copy(work, copier, "ab" * 32, f"{clip_id}.MP4", {})
    staged = ledger.claim_for_upload(uploader, only=[clip_id])
    assert staged is not None
    ledger.finish_upload(staged, uploader, f"CAM1/{clip_id}.MP4", "ab" * 32, {}, None)


def test_counts_and_byte_totals_kept_by_triggers_match_a_full_count(tmp_path: Path) -> None:
    """`status` reads counts by state and the metrics' byte totals from tables that
    triggers keep: after copies, uploads, a quarantine and a release they equal a count
    over every clip."""
    ledger = _ledger_with_clips(tmp_path, 4)
    _copy_and_upload(ledger, 1)
    _copy_and_upload(ledger, 2)
    copier = current_owner("copier")
    third = ledger.claim_for_copy(copier)
    assert third is not None
    ledger.quarantine(third, copier, "test: camera returned different bytes")
    fourth = ledger.claim_for_copy(copier)
    assert fourth is not None
    ledger.release(fourth, copier, error="test: yanked", retry_at=None)

    counts, totals = _counted_by_scan(ledger)
    assert counts == ledger.counts_by_state()
    assert counts["uploaded"] == 2 and counts["quarantined"] == 1 and counts["discovered"] == 1
    assert totals == ledger.byte_totals() == (0 + 1, 0 + 1)  # clips 1 and 2: sizes 0 and 1
    ledger.close()


def test_only_dockings_whose_clips_changed_are_looked_at_for_anchoring(tmp_path: Path) -> None:
    """A docking is due for its SHA256SUMS once all its clips are stored; once written it
    is no longer due, and a later upload of one of its clips makes it due again."""
    ledger = _ledger_with_clips(tmp_path, 2)
    docking = ledger.active_dockings()[0].id
    _copy_and_upload(ledger, 1)
    assert ledger.dockings_to_anchor() == []  # clip 2 still pending
    _copy_and_upload(ledger, 2)
    assert ledger.dockings_to_anchor() == [docking]

    ledger.mark_sums_written(docking, utc_datetime())
    assert ledger.dockings_to_anchor() == []
    with ledger.engine.connect() as connection:
        flagged = connection.execute(text(
            "SELECT id FROM dockings INDEXED BY ix_dockings_sums_due WHERE sums_due = 1")).all()
    assert flagged == []  # settled: the anchorer reads no row of it any more

    ledger.requeue(1, ClipState.STAGED, "test: central copy found missing")
    assert ledger.dockings_to_anchor() == []  # pending again: nothing to write yet
    staged = ledger.claim_for_upload(current_owner("uploader"), only=[1])
    assert staged is not None
    ledger.finish_upload(staged, current_owner("uploader"), "CAM1/1.MP4", "ab" * 32, {}, None)
    assert ledger.dockings_to_anchor() == [docking]  # uploaded after its list: stale
    ledger.close()


def test_a_lease_from_an_earlier_boot_is_dead_even_with_this_pid_and_start_tick() -> None:
    """After a power cut the daemon may start with the same pid at the same tick; the
    boot in the owner name still tells the dead daemon's lease from its own."""
    owner = current_owner("uploader-1")
    host, pid, identity, thread = owner.split("/", 3)
    ticks, boot = identity.split(":")
    assert len(boot) == 8 and int(boot, 16) >= 0  # read from /proc or BWC_DOCK_BOOT_ID
    assert not owner_is_dead(owner)
    other_boot = f"{int(boot, 16) ^ 1:08x}"
    assert owner_is_dead(f"{host}/{pid}/{ticks}:{other_boot}/{thread}")
    assert owner_is_dead(f"{host}/{pid}/{ticks}/{thread}")  # an owner named before boots


def test_two_ledgers_on_one_file_append_to_one_unbroken_chain(tmp_path: Path) -> None:
    """A daemon and a hand-run command (two ledgers, two chain heads in memory) append in
    turns; every row links to the row before it, whoever wrote that."""
    first = _ledger_with_clips(tmp_path, 1)
    second = Ledger.open(_config(tmp_path), "hand")
    for turn in range(6):
        (first if turn % 2 else second).record_event("test.turn", details={"turn": turn})
        first.record_event("test.again", details={"turn": turn})
    entries = first.audit_entries()
    assert find_break(entries) is None
    assert [entry.id for entry in entries] == list(range(1, len(entries) + 1))
    first.close()
    second.close()


def test_an_audit_row_rolled_back_is_not_linked_to(tmp_path: Path) -> None:
    """A transaction that fails after writing an audit row leaves no row the next one
    links to: the chain goes on from the last committed row."""
    ledger = _ledger_with_clips(tmp_path, 1)
    with pytest.raises(RuntimeError), ledger.transaction() as session:
        ledger.store.audit(session, "test.rolled_back")
        raise RuntimeError("the transaction fails")
    ledger.record_event("test.after")
    entries = ledger.audit_entries()
    assert "test.rolled_back" not in [entry.event for entry in entries]
    assert entries[-1].event == "test.after"
    assert find_break(entries) is None
    ledger.close()


def test_finishing_a_copy_claims_the_next_clip_in_the_same_transaction(tmp_path: Path) -> None:
    """finish_copy_and_claim stages clip N and leases clip N+1 with one commit."""
    ledger = _ledger_with_clips(tmp_path, 2)
    owner = current_owner("copier")
    first = ledger.claim_for_copy(owner)
    assert first is not None
    commits: list[int] = []
    event.listen(ledger.engine, "commit", lambda _connection: commits.append(1))
    second = ledger.finish_copy_and_claim(first, owner, "a" * 64, "clips/1", {}, None)
    assert len(commits) == 1
    assert second is not None and second.id != first.id
    states = {work.id: work.state for work in ledger.clips()}
    assert states == {first.id: ClipState.STAGED, second.id: ClipState.COPYING}
    assert ledger.finish_copy_and_claim(second, owner, "b" * 64, "clips/2", {}, None) is None
    assert find_break(ledger.audit_entries()) is None
    ledger.close()


def test_a_docking_reads_only_the_clips_still_on_its_camera(tmp_path: Path) -> None:
    """A clip reported gone from its camera and a clip cleared by bwc-dock are not read
    again at the next docking; with a file counter to follow, the clips of the dockings
    since the counter's restart are read whole."""
    from bwc_dock.ledger.evidence import VANISHED_EVENT, EvidenceEvent

    ledger = _ledger_with_clips(tmp_path, 3)
    _copy_and_upload(ledger, 1)
    uploaded = ledger.get(1)
    assert uploaded is not None
    ledger.mark_cleared(uploaded, {})
    ledger.record_camera_evidence([EvidenceEvent(VANISHED_EVENT, "CAM1", 2, {"docking": 1})])
    later = ledger.record_docking(DockedVolume("ingest", "b", tmp_path, "CAM1"), None)

    assert [clip.id for clip in ledger.camera_clips("CAM1")] == [3]
    assert [clip.id for clip in ledger.camera_clips("CAM1", counted_since=1)] == [1, 2, 3]
    assert [clip.id for clip in ledger.camera_clips("CAM1", counted_since=later)] == [3]
    ledger.close()
