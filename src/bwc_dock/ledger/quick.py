"""The read model of ``status`` and ``clips`` over the stdlib sqlite3 driver.

IT staff run ``bwc-dock status --json`` in loops and monitoring scripts; importing
SQLAlchemy and the ORM models alone costs such a command a quarter of a second on a
dock PC. For a SQLite ledger whose schema is already at the newest revision, this
reader opens a plain sqlite3 connection and asks the same questions the
:class:`~bwc_dock.ledger.facade.Ledger` facade asks, through the one read model
(``read_model.py``). Anything else (a ledger to create or to migrate) goes through
the facade.

Nothing here writes: every question runs inside one read transaction, which in WAL
mode neither waits for nor blocks the daemon.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from bwc_dock.errors import LedgerError
from bwc_dock.ledger import read_model
from bwc_dock.ledger.db import BUSY_TIMEOUT_MS, head_revision
from bwc_dock.ledger.snapshots import ClipWork, DockingRecord, HeartbeatRecord

_SQLITE_PREFIX = "sqlite:///"


class QuickReader:
    """One read-only sqlite3 connection to an up-to-date SQLite ledger."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    @classmethod
    def open(cls, ledger_url: str) -> QuickReader | None:
        """A reader, or None when the facade must answer: not SQLite, no ledger yet, or
        a schema to migrate first."""
        if not ledger_url.startswith(_SQLITE_PREFIX):
            return None
        path = Path(ledger_url.removeprefix(_SQLITE_PREFIX))
        if not path.is_file():
            return None
        try:
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as error:
            raise LedgerError(f"ledger {path}: cannot open: {error}") from error
        reader = cls(connection)
        try:
            current = reader._revision()
            journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        except sqlite3.Error as error:
            connection.close()
            raise LedgerError(f"ledger {path}: cannot read: {error}") from error
        if current != head_revision() or str(journal_mode).lower() != "wal":
            # the facade migrates, or refuses a ledger a crash could roll back
            connection.close()
            return None
        return reader

    def _revision(self) -> str | None:
        try:
            row = self.connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:  # no table yet: no revision
            return None
        return None if row is None else str(row[0])

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot of the ledger for the question asked."""
        try:
            self.connection.execute("BEGIN")
            try:
                yield self.connection
            finally:
                self.connection.execute("COMMIT")
        except sqlite3.Error as error:
            raise LedgerError(f"ledger: cannot read: {error}") from error

    def heartbeat(self) -> HeartbeatRecord | None:
        with self._read() as connection:
            return read_model.heartbeat(connection)

    def counts_by_state(self) -> dict[str, int]:
        with self._read() as connection:
            return read_model.counts_by_state(connection)

    def oldest_pending_at(self) -> datetime | None:
        with self._read() as connection:
            return read_model.oldest_pending_at(connection)

    def active_dockings(self) -> list[DockingRecord]:
        with self._read() as connection:
            return read_model.active_dockings(connection)

    def clips(self, camera_serial: str | None = None, state: str | None = None) -> list[ClipWork]:
        with self._read() as connection:
            return read_model.clips(connection, camera_serial, state)
