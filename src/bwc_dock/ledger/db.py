"""Opening the ledger: engine, SQLite durability settings, migrations.

SQLite runs in WAL mode with ``synchronous=FULL`` so that a committed ``uploaded``
survives a power cut, with foreign keys on and a busy timeout so hand-run commands
and the daemon share the file. Every transaction starts with ``BEGIN IMMEDIATE``:
taking the write lock up front makes a lease claim (read, then update) atomic
between processes instead of failing late with "database is locked".

Alembic loads only when the schema is behind: one SELECT on ``alembic_version``
against the newest revision named in ``migrations/versions`` decides it, so an
up-to-date ledger opens without it (alembic alone costs a command ~0.2 s at start).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bwc_dock.errors import LedgerError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import Connection

BUSY_TIMEOUT_MS = 30_000
# The execution option (and connection info key) that marks a read-only transaction.
READING_OPTION = "bwc_dock_reading"
# The ledger holds evidence metadata and the audit chain: root and the daemon alone may
# read it, also when it was first created by a command run by hand under umask 022.
LEDGER_FILE_MODE = 0o600
LEDGER_DIRECTORY_MODE = 0o700
_SQLITE_FILES = ("", "-wal", "-shm")
_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# `revision = "0003"` / `down_revision: str | None = "0002"` in a migration script
_REVISION_LINE = re.compile(
    r"^(down_)?revision\s*(?::[^=]*)?=\s*(?:None|[\"']([^\"']+)[\"'])", re.MULTILINE
)


def create_ledger_engine(url: str) -> Engine:
    """An engine with the durability settings; the SQLite file's folder is created."""
    from sqlalchemy import create_engine  # lazy, like every SQLAlchemy import here

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(mode=LEDGER_DIRECTORY_MODE, parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_pre_ping=False,
        )
        _install_sqlite_hooks(engine, path)
        return engine
    return create_engine(url, pool_pre_ping=True)


def restrict_ledger_files(path: Path) -> None:
    """The ledger, its WAL and shared-memory files at :data:`LEDGER_FILE_MODE`."""
    for suffix in _SQLITE_FILES:
        try:
            path.with_name(path.name + suffix).chmod(LEDGER_FILE_MODE)
        except FileNotFoundError:
            continue  # no WAL yet, or already checkpointed away
        except PermissionError:
            continue  # another user's file (its owner's process restricts it)


def _install_sqlite_hooks(engine: Engine, path: Path) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()
        restrict_ledger_files(path)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A reading transaction (Store.reading) takes no write lock: in WAL mode it
        # neither waits for writers nor holds them up. query_only makes a write slipped
        # into one fail loudly rather than upgrade the lock (which SQLite would refuse,
        # without waiting, whenever another writer is busy). It is set per connection,
        # only when a connection changes between reading and writing.
        reading = bool(connection.get_execution_options().get(READING_OPTION))
        if connection.info.get(READING_OPTION, False) != reading:
            connection.exec_driver_sql(f"PRAGMA query_only={int(reading)}")
            connection.info[READING_OPTION] = reading
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


def check_durability(engine: Engine) -> None:
    """Refuse a SQLite ledger that a crash could roll back (not WAL, not synchronous=FULL)."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as connection:
        journal_mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar()
    if str(journal_mode).lower() != "wal" or synchronous != 2:  # 2 = FULL
        raise LedgerError(
            f"ledger {engine.url.database}: journal_mode={journal_mode}, synchronous="
            f"{synchronous}; bwc-dock needs WAL with synchronous=FULL (is it on a network "
            "filesystem? keep the ledger on a local disk)"
        )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision``, the newest by default; a dock upgraded in
    place keeps its history. (Tests name an older revision to build an old dock's ledger.)"""
    if revision == "head" and schema_revision(engine) == head_revision():
        return  # up to date: no need to load alembic at all
    from alembic import command
    from alembic.config import Config as AlembicConfig

    alembic_config = AlembicConfig()
    alembic_config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        alembic_config.attributes["connection"] = connection
        command.upgrade(alembic_config, revision)


def schema_revision(engine: Engine) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    with engine.connect() as connection:
        try:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except OperationalError:  # no table yet: no revision
            return None


@cache
def head_revision() -> str:
    """The newest migration: the one revision no other names as its ``down_revision``.
    Read from the scripts' text, so that checking a ledger needs no alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (_MIGRATIONS / "versions").glob("*.py"):
        for down, name in _REVISION_LINE.findall(script.read_text(encoding="utf-8")):
            if name:
                (parents if down else revisions).add(name)
    heads = revisions - parents
    if len(heads) != 1:
        raise LedgerError(f"migrations: expected one head revision, found {sorted(heads)}")
    return heads.pop()
