"""Read-only answers for ``status`` and ``clips`` over the stdlib sqlite3 driver.

IT staff run ``bwc-dock status --json`` in loops and monitoring scripts; importing
SQLAlchemy and the ORM models alone costs such a command a quarter of a second on a
dock PC. For a SQLite ledger whose schema is already at the newest revision, these
few questions are answered here with plain SQL instead, and return the same frozen
snapshots as the :class:`~bwc_dock.ledger.facade.Ledger` facade (a test holds both
to the same answers). Anything else (another database, a ledger to create or to
migrate) goes through the facade.

Nothing here writes: every question runs inside one read transaction, which in WAL
mode neither waits for nor blocks the daemon.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bwc_dock.errors import LedgerError
from bwc_dock.ledger.db import BUSY_TIMEOUT_MS, head_revision
from bwc_dock.ledger.snapshots import (
    ClipTime,
    ClipWork,
    DockingRecord,
    HeartbeatRecord,
    SidecarWork,
)
from bwc_dock.ledger.states import PENDING_STATES, ClipState

_SQLITE_PREFIX = "sqlite:///"
_SIDECAR_BATCH = 500  # below SQLite's limit on bound parameters
_CLIP_COLUMNS = (
    "id, camera_serial, docking_id, source_path_raw, source_path, name, size, mtime_ns, "
    "recorded_at, sha256, state, staged_path, remote_key, remote_sha256, duplicate_of, "
    "copy_attempts, upload_attempts, lease_owner, last_error, camera_time, time_source, "
    "time_flag, time_flag_rule, clock_offset_seconds, time_basis, staged_verified"
)
_SIDECAR_COLUMNS = (
    "clip_id, id, source_path_raw, source_path, name, size, sha256, remote_key, mtime_ns"
)


def _moment(value: str | None) -> datetime | None:
    """A ledger time as the ORM stores it (naive UTC text) back to an aware UTC time."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _required_moment(value: str) -> datetime:
    moment = _moment(value)
    assert moment is not None
    return moment


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
            row = connection.execute(
                "SELECT host, pid, started_at, beat_at, status_line, last_error, "
                "storage_reachable, staging_free_bytes FROM daemon_heartbeat WHERE id = 1"
            ).fetchone()
        if row is None:
            return None
        host, pid, started_at, beat_at, status_line, last_error, reachable, free = row
        return HeartbeatRecord(
            host=host,
            pid=pid,
            started_at=_required_moment(started_at),
            beat_at=_required_moment(beat_at),
            status_line=status_line,
            last_error=last_error,
            storage_reachable=reachable,
            staging_free_bytes=free,
        )

    def counts_by_state(self) -> dict[str, int]:
        """Clips per state, from the counts the ledger's triggers keep (as the facade)."""
        counts = {str(state): 0 for state in ClipState}
        with self._read() as connection:
            counts.update(
                {
                    state: count
                    for state, count in connection.execute(
                        "SELECT state, count FROM clip_state_counts"
                    )
                }
            )
        return counts

    def oldest_pending_at(self) -> datetime | None:
        pending = sorted(str(state) for state in PENDING_STATES)
        marks = ", ".join("?" for _ in pending)
        with self._read() as connection:
            row = connection.execute(
                f"SELECT min(discovered_at) FROM clips WHERE state IN ({marks})",  # noqa: S608 - placeholders only
                pending,
            ).fetchone()
        return _moment(row[0])

    def active_dockings(self) -> list[DockingRecord]:
        """Every docking not yet ended, oldest first."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT id, camera_serial, dock_id, source, device, volume_root, owner, "
                "docked_at, scanned_at, undocked_at FROM dockings "
                "WHERE undocked_at IS NULL ORDER BY id"
            ).fetchall()
        return [
            DockingRecord(
                id=row[0],
                camera_serial=row[1],
                dock_id=row[2],
                source=row[3],
                device=row[4],
                volume_root=row[5],
                owner=row[6],
                docked_at=_required_moment(row[7]),
                scanned_at=_moment(row[8]),
                undocked_at=_moment(row[9]),
            )
            for row in rows
        ]

    def clips(self, camera_serial: str | None = None, state: str | None = None) -> list[ClipWork]:
        """Clips in id order, narrowed by camera and state when given."""
        conditions: list[str] = []
        parameters: list[Any] = []
        if camera_serial is not None:
            conditions.append("camera_serial = ?")
            parameters.append(camera_serial)
        if state is not None:
            conditions.append("state = ?")
            parameters.append(state)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._read() as connection:
            rows = connection.execute(
                f"SELECT {_CLIP_COLUMNS} FROM clips{where} ORDER BY id",  # noqa: S608 - fixed columns, values bound
                parameters,
            ).fetchall()
            sidecars = self._sidecars(connection, [row[0] for row in rows])
        return [_clip(row, sidecars.get(row[0], ())) for row in rows]

    @staticmethod
    def _sidecars(
        connection: sqlite3.Connection, clip_ids: Sequence[int]
    ) -> dict[int, tuple[SidecarWork, ...]]:
        found: dict[int, list[SidecarWork]] = {}
        for start in range(0, len(clip_ids), _SIDECAR_BATCH):
            batch = clip_ids[start : start + _SIDECAR_BATCH]
            marks = ", ".join("?" for _ in batch)
            query = f"SELECT {_SIDECAR_COLUMNS} FROM sidecars WHERE clip_id IN ({marks})"  # noqa: S608 - placeholders only
            for row in connection.execute(f"{query} ORDER BY id", batch):
                clip_id, sidecar_id, raw, path, name, size, sha256, remote_key, mtime_ns = row
                found.setdefault(clip_id, []).append(
                    SidecarWork(sidecar_id, bytes(raw), path, name, size, sha256, remote_key,
                                mtime_ns)
                )
        return {clip_id: tuple(sidecars) for clip_id, sidecars in found.items()}


def _clip(row: Sequence[Any], sidecars: tuple[SidecarWork, ...]) -> ClipWork:
    (
        clip_id,
        camera_serial,
        docking_id,
        source_path_raw,
        source_path,
        name,
        size,
        mtime_ns,
        recorded_at,
        sha256,
        state,
        staged_path,
        remote_key,
        remote_sha256,
        duplicate_of,
        copy_attempts,
        upload_attempts,
        lease_owner,
        last_error,
        *time_columns,
        staged_verified,
    ) = row
    return ClipWork(
        id=clip_id,
        camera_serial=camera_serial,
        docking_id=docking_id,
        source_path_raw=bytes(source_path_raw),
        source_path=source_path,
        name=name,
        size=size,
        mtime_ns=mtime_ns,
        recorded_at=_required_moment(recorded_at),
        sha256=sha256,
        state=ClipState(state),
        staged_path=staged_path,
        remote_key=remote_key,
        remote_sha256=remote_sha256,
        duplicate_of=duplicate_of,
        copy_attempts=copy_attempts,
        upload_attempts=upload_attempts,
        sidecars=sidecars,
        volume_root=None,
        lease_owner=lease_owner,
        last_error=last_error,
        time=ClipTime(*time_columns),
        staged_verified=bool(staged_verified),
    )
