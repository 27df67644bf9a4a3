"""An instant command line: what `--help`, `status` and `clips` load, and the quick
sqlite3 reader that lets them skip SQLAlchemy giving the same answers as the ledger.

Real parts: the SQLite ledger file, the central-storage folder, `bwc-dock` run in its
own process (what it loaded is read from that process's ``sys.modules``), and a real
`bwc-dock run` daemon for the status a monitoring loop sees. No timing is asserted
here (the machine's speed varies); `scripts/bench cli` prints the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from bwc_dock.found import DockedVolume
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.db import _MIGRATIONS, create_ledger_engine, head_revision, migrate
from bwc_dock.ledger.leases import current_owner
from bwc_dock.ledger.quick import QuickReader
from bwc_dock.ledger.states import ClipState
from tests.dock import Dock, make_camera, wait_until
from tests.seaweedfs import SeaweedServer

HEAVY = (
    "alembic", "sqlalchemy", "rich", "structlog", "structlog.dev", "pydantic", "boto3", "botocore",
)
# The command in this process, then the heavy libraries it loaded, on the last line.
RUNNER = f"""
import json, sys
from bwc_dock.cli import main
sys.argv[0] = "bwc-dock"
try:
    main()
except SystemExit as done:
    code = done.code
else:
    code = 0
print(json.dumps({{"exit": code, "loaded": sorted(n for n in {HEAVY!r} if n in sys.modules)}}))
"""


def loaded_by(dock: Dock, *arguments: str) -> list[str]:
    """The heavy libraries ``bwc-dock ARGUMENTS`` imported, run in its own process."""
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *arguments],
        capture_output=True, text=True, env=dock.environment(), timeout=120, check=False,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["exit"] in (0, None), done.stderr
    return list(report["loaded"])


def test_help_loads_only_click(dock: Dock) -> None:
    """`bwc-dock --help` lists every command without loading any heavy library."""
    dock.write_config()
    assert loaded_by(dock, "--help") == []


def test_clips_and_status_read_without_sqlalchemy_or_alembic(dock: Dock) -> None:
    """On an up-to-date SQLite ledger, `clips --state staged --json` loads only the
    configuration's pydantic, and `status --json` with no daemon adds just what asking
    the store needs (never SQLAlchemy, alembic, or boto3 for a folder store)."""
    dock.write_config()
    make_camera(dock.root / "card", [1000], sidecars=False)
    dock.cli("ingest", str(dock.root / "card"), "--camera-serial", "CAM1")

    assert loaded_by(dock, "clips", "--state", "staged", "--json") == ["pydantic"]
    status = set(loaded_by(dock, "status", "--json"))
    assert not status & {"alembic", "sqlalchemy", "boto3", "botocore"}


def test_status_without_a_daemon_asks_the_folder_store_without_structlog_or_rich(
    dock: Dock,
) -> None:
    """With no daemon, `status --json` asks the folder store itself and still loads only
    the configuration's pydantic: no structlog (whose dev module pulls rich), no boto3."""
    dock.write_config()
    dock.cli("status", "--json")  # creates the ledger, so the quick reader answers
    assert loaded_by(dock, "status", "--json") == ["pydantic"]
    assert json.loads(dock.cli("status", "--json").stdout)["storage_reachable"] is True


def test_status_without_a_daemon_logs_every_event_its_level_asks_for(dock: Dock) -> None:
    """Logging set up only at the first event keeps that event: with `--log-level info
    --log-format json`, the store's `storage.root_opened` reaches stderr as JSON, and at
    the default level (warning) nothing is written there."""
    dock.write_config()
    dock.cli("status", "--json")
    quiet = dock.cli("status", "--json")
    assert quiet.stderr == ""
    told = dock.cli("--log-level", "info", "--log-format", "json", "status", "--json")
    events = [json.loads(line) for line in told.stderr.splitlines()]
    opened = [event for event in events if event["event"] == "storage.root_opened"]
    assert len(opened) == 1 and opened[0]["level"] == "info", told.stderr
    assert opened[0]["root"] == str(dock.nas) and "timestamp" in opened[0]
    assert json.loads(told.stdout)["storage_reachable"] is True


def test_status_without_a_daemon_writes_an_s3_warning_to_stderr_not_stdout(
    dock: Dock, seaweedfs: SeaweedServer, s3_bucket: str
) -> None:
    """Against a real S3 store on plain http (SeaweedFS on loopback), `status --json`
    keeps stdout one JSON document and logs the `s3.cleartext_endpoint` warning, set up
    as asked, on stderr: the backend's logger configures structlog at its first event."""
    dock.extra_environment.update(seaweedfs.environment())
    dock.write_config(storage={
        "backend": "s3", "endpoint_url": seaweedfs.endpoint_url, "bucket": s3_bucket,
        "allow_plaintext": True,
        "addressing_style": "path", "prefix": "bwc/",
    })
    dock.cli("status", "--json")
    done = dock.cli("--log-format", "json", "status", "--json")
    assert json.loads(done.stdout)["storage_reachable"] is True
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert [event["event"] for event in events] == ["s3.cleartext_endpoint"], done.stderr
    assert events[0]["level"] == "warning"


@pytest.mark.timeout(180)
def test_status_beside_a_running_daemon_loads_neither_rich_nor_structlog(dock: Dock) -> None:
    """With the daemon running, `status --json` takes its storage finding from the
    heartbeat and loads nothing but the configuration's pydantic."""
    dock.write_config()
    daemon = dock.start_daemon()
    try:
        wait_until(
            lambda: json.loads(dock.cli("status", "--json").stdout)["daemon_alive"],
            60, "the daemon never showed alive in status",
        )
        assert loaded_by(dock, "status", "--json") == ["pydantic"]
    finally:
        assert dock.stop_daemon(daemon) == 0


def test_an_up_to_date_ledger_opens_without_alembic(dock: Dock) -> None:
    """Commands going through the full ledger (here `cameras`) check the schema with
    one query and load alembic only to migrate."""
    dock.write_config()
    dock.cli("status", "--json")  # creates the ledger, migrated to the newest revision
    assert "alembic" not in loaded_by(dock, "cameras", "--json")


def test_an_old_ledger_is_migrated_then_listed(dock: Dock) -> None:
    """A ledger at an older revision is not read by the quick reader: `clips --json`
    migrates it first, then lists it."""
    dock.write_config()
    dock.state_dir.mkdir(parents=True)
    engine = create_ledger_engine(f"sqlite:///{dock.ledger_path}")
    migrate(engine, "0001")
    engine.dispose()
    assert QuickReader.open(f"sqlite:///{dock.ledger_path}") is None

    assert dock.clips() == []
    reader = QuickReader.open(f"sqlite:///{dock.ledger_path}")
    assert reader is not None
    reader.close()


def test_head_revision_read_from_the_scripts_is_alembics_head() -> None:
    """The newest revision found without alembic is the one alembic itself names."""
    alembic_config = AlembicConfig()
    alembic_config.set_main_option("script_location", str(_MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(alembic_config).get_current_head()


def test_quick_reader_gives_the_ledgers_answers(dock: Dock, tmp_path: Path) -> None:
    """The quick reader and the ledger facade agree on clips (with sidecars, by camera
    and by state), counts, the oldest pending clip, open dockings and the heartbeat."""
    dock.write_config()
    make_camera(dock.root / "a", [1000, 2000, 3000])  # with sidecars
    make_camera(dock.root / "b", [500], seed=2, sidecars=False)
    dock.cli("ingest", str(dock.root / "a"), "--camera-serial", "A1", "--wait")
    dock.cli("ingest", str(dock.root / "b"), "--camera-serial", "B2")  # staged, not uploaded
    from bwc_dock.config import load_config

    ledger = Ledger.open(load_config(dock.config_path), "test")
    ledger.record_docking(DockedVolume("ingest", "dev", tmp_path, "C3"), current_owner("t"))
    ledger.beat("elsewhere", 4242, ledger.active_dockings()[0].docked_at, status_line="ok")
    reader = QuickReader.open(f"sqlite:///{dock.ledger_path}")
    assert reader is not None
    try:
        assert reader.clips() == ledger.clips() and len(reader.clips()) == 4
        assert any(clip.sidecars for clip in reader.clips())
        assert reader.clips("A1") == ledger.clips("A1")
        assert reader.clips(None, "staged") == ledger.clips(None, "staged") != []
        assert reader.clips("B2", "uploaded") == ledger.clips("B2", "uploaded") == []
        assert reader.counts_by_state() == ledger.counts_by_state()
        assert reader.counts_by_state()[ClipState.UPLOADED] == 3
        assert reader.oldest_pending_at() == ledger.oldest_pending_at() is not None
        assert reader.active_dockings() == ledger.active_dockings() != []
        assert reader.heartbeat() == ledger.heartbeat() is not None
    finally:
        reader.close()
        ledger.close()


def test_quick_reader_leaves_other_databases_and_missing_ledgers_to_the_facade(
    tmp_path: Path,
) -> None:
    """No SQLite file yet, or another database URL: the facade answers (and creates)."""
    assert QuickReader.open(f"sqlite:///{tmp_path / 'none.sqlite3'}") is None
    assert QuickReader.open("postgresql://localhost/ledger") is None
    assert not os.path.exists(tmp_path / "none.sqlite3")
