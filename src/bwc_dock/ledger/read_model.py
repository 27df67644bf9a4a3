"""The read model of ``status`` and ``clips``, written once: the daemon's heartbeat, clips
per state, the oldest pending clip, the open dockings and lists of clips.

Each question is plain SQL over a DB-API connection to the SQLite ledger, inside a read
transaction its caller opened. Two callers share it: the :class:`Ledger` facade passes its
own reading transaction (``Store.plain_reading``), and the quick reader (``quick.py``)
passes a stdlib sqlite3 connection, so that ``bwc-dock status`` and ``clips`` answer
without loading SQLAlchemy (a quarter of a second on a dock PC) and still give the
facade's answers. Only the standard library and the snapshot types load here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from bwc_dock.ledger.snapshots import (
    ClipTime,
    ClipWork,
    DockingClocks,
    DockingRecord,
    HeartbeatRecord,
    SidecarWork,
)
from bwc_dock.ledger.states import PENDING_STATES, ClipState

BATCH = 500  # ids bound per statement, below SQLite's limit on bound parameters
_CLIP_COLUMNS = (
    "id, camera_serial, docking_id, source_path_raw, source_path, name, size, mtime_ns, "
    "recorded_at, sha256, state, staged_path, remote_key, remote_sha256, duplicate_of, "
    "copy_attempts, upload_attempts, lease_owner, last_error, camera_time, time_source, "
    "time_flag, time_flag_rule, clock_offset_seconds, time_basis, staged_verified"
)
_SIDECAR_COLUMNS = (
    "clip_id, id, source_path_raw, source_path, name, size, sha256, remote_key, mtime_ns"
)
_DOCKING_COLUMNS = (
    "id, camera_serial, dock_id, source, device, volume_root, owner, docked_at, scanned_at, "
    "undocked_at, camera_clock_offset_seconds, camera_clock_source, dock_clock_synchronized, "
    "dock_clock_error_seconds, dock_clock_source"
)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Sequence[Any]: ...


class Connection(Protocol):
    """What is asked of the connection: sqlite3's ``execute`` with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...


def moment(value: str | None) -> datetime | None:
    """A ledger time as the ORM stores it (naive UTC text) back to an aware UTC time."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _required_moment(value: str) -> datetime:
    found = moment(value)
    assert found is not None
    return found


def heartbeat(connection: Connection) -> HeartbeatRecord | None:
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


def counts_by_state(connection: Connection, camera_serial: str | None = None) -> dict[str, int]:
    """Clips per state: dock-wide from the counts the triggers keep (ledger/counters.py),
    for one camera counted over its clips."""
    counts = {str(state): 0 for state in ClipState}
    if camera_serial is None:
        rows = connection.execute("SELECT state, count FROM clip_state_counts").fetchall()
    else:
        rows = connection.execute(
            "SELECT state, count(*) FROM clips WHERE camera_serial = ? GROUP BY state",
            (camera_serial,),
        ).fetchall()
    counts.update({state: count for state, count in rows})
    return counts


def oldest_pending_at(connection: Connection) -> datetime | None:
    pending = sorted(str(state) for state in PENDING_STATES)
    marks = ", ".join("?" for _ in pending)
    row = connection.execute(
        f"SELECT min(discovered_at) FROM clips WHERE state IN ({marks})",  # noqa: S608 - placeholders only
        pending,
    ).fetchone()
    return moment(row[0])


def active_dockings(connection: Connection) -> list[DockingRecord]:
    """Every docking not yet ended, oldest first."""
    rows = connection.execute(
        f"SELECT {_DOCKING_COLUMNS} FROM dockings WHERE undocked_at IS NULL ORDER BY id"  # noqa: S608 - fixed columns
    ).fetchall()
    return [_docking(row) for row in rows]


def clips(
    connection: Connection,
    camera_serial: str | None = None,
    state: str | None = None,
    docking_id: int | None = None,
    ids: Collection[int] | None = None,
) -> list[ClipWork]:
    """Clips in id order, narrowed by whichever filters are given."""
    conditions: list[str] = []
    parameters: list[Any] = []
    for column, value in (("camera_serial", camera_serial), ("state", state),
                          ("docking_id", docking_id)):
        if value is not None:
            conditions.append(f"{column} = ?")
            parameters.append(value)
    if ids is None:
        rows = _clip_rows(connection, conditions, parameters)
    else:
        wanted = sorted(set(ids))
        rows = []
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start : start + BATCH]
            among = f"id IN ({', '.join('?' for _ in batch)})"
            rows += _clip_rows(connection, [*conditions, among], [*parameters, *batch])
    sidecars = _sidecars(connection, [row[0] for row in rows])
    return [_clip(row, sidecars.get(row[0], ())) for row in rows]


def _clip_rows(
    connection: Connection, conditions: list[str], parameters: list[Any]
) -> list[Any]:
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return list(connection.execute(
        f"SELECT {_CLIP_COLUMNS} FROM clips{where} ORDER BY id",  # noqa: S608 - fixed columns, values bound
        parameters,
    ).fetchall())


def _sidecars(
    connection: Connection, clip_ids: Sequence[int]
) -> dict[int, tuple[SidecarWork, ...]]:
    found: dict[int, list[SidecarWork]] = {}
    for start in range(0, len(clip_ids), BATCH):
        batch = clip_ids[start : start + BATCH]
        marks = ", ".join("?" for _ in batch)
        query = f"SELECT {_SIDECAR_COLUMNS} FROM sidecars WHERE clip_id IN ({marks})"  # noqa: S608 - placeholders only
        for row in connection.execute(f"{query} ORDER BY id", batch).fetchall():
            clip_id, sidecar_id, raw, path, name, size, sha256, remote_key, mtime_ns = row
            found.setdefault(clip_id, []).append(
                SidecarWork(sidecar_id, bytes(raw), path, name, size, sha256, remote_key, mtime_ns)
            )
    return {clip_id: tuple(sidecars) for clip_id, sidecars in found.items()}


def _docking(row: Sequence[Any]) -> DockingRecord:
    offset, camera_source, synchronized, error_seconds, dock_source = row[10:]
    return DockingRecord(
        id=row[0],
        camera_serial=row[1],
        dock_id=row[2],
        source=row[3],
        device=row[4],
        volume_root=row[5],
        owner=row[6],
        docked_at=_required_moment(row[7]),
        scanned_at=moment(row[8]),
        undocked_at=moment(row[9]),
        clocks=DockingClocks(
            offset,
            camera_source,
            None if synchronized is None else bool(synchronized),
            error_seconds,
            dock_source,
        ),
    )


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
