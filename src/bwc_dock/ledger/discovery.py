"""Discovery: registering the clips a scan of a docked camera found.

A clip is known by (camera serial, raw path, size, mtime); one seen again is left
alone, and a reused file name with new content is a new clip. Sidecars get names
unique within their clip, since staging and remote keys are built from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from bwc_dock.found import FoundClip
from bwc_dock.ledger.models import Clip, Docking, Sidecar, utc_now
from bwc_dock.ledger.states import ClipState
from bwc_dock.ledger.store import Store

log = structlog.get_logger(__name__)
_PATH_BATCH = 500  # paths per query, below SQLite's limit on bound parameters


def record_scan(
    store: Store, docking_id: int, found: Sequence[FoundClip], refused: int, priority: int = 0
) -> list[int]:
    """Register newly seen clips; clips already known by identity are left alone."""
    now = utc_now()
    new_ids: list[int] = []
    with store.transaction() as session:
        docking = session.get(Docking, docking_id)
        assert docking is not None
        docking.scanned_at = now
        docking.refused_entries = refused
        known = _known_identities(session, docking.camera_serial, found)
        for clip in found:
            video = clip.video
            if (video.source_path_raw, video.size, video.mtime_ns) in known:
                continue
            row = _new_clip(store, session, docking, clip, now, priority)
            new_ids.append(row.id)
    return new_ids


def present_clip_ids(store: Store, camera_serial: str, found: Sequence[FoundClip]) -> list[int]:
    """The ids of this camera's clips whose file is among ``found`` (new or seen before),
    oldest first: searched by path in the unique index, as the scan itself is, and not by
    reading every clip the camera ever had."""
    wanted = {(c.video.source_path_raw, c.video.size, c.video.mtime_ns) for c in found}
    paths = sorted({raw for raw, _size, _mtime in wanted})
    ids: list[int] = []
    with store.reading() as session:
        for start in range(0, len(paths), _PATH_BATCH):
            query = select(Clip.id, Clip.source_path_raw, Clip.size, Clip.mtime_ns).where(
                Clip.camera_serial == camera_serial,
                Clip.source_path_raw.in_(paths[start : start + _PATH_BATCH]),
            )
            ids.extend(
                row.id
                for row in session.execute(query)
                if (row.source_path_raw, row.size, row.mtime_ns) in wanted
            )
    return sorted(ids)


def _known_identities(
    session: Session, camera_serial: str, found: Sequence[FoundClip]
) -> set[tuple[bytes, int, int]]:
    """The identities of ``found`` that the ledger already holds for this camera.

    One query per batch of paths, not one per file: a watch folder is rescanned every
    minute and a camera may hold thousands of clips. And only the paths on the camera
    now, searched in the unique index: reading every clip the camera ever had grew with
    its history (an old camera's 2,500 clips were 17,500 SQLite steps per scan)."""
    paths = sorted({clip.video.source_path_raw for clip in found})
    known: set[tuple[bytes, int, int]] = set()
    for start in range(0, len(paths), _PATH_BATCH):
        query = select(Clip.source_path_raw, Clip.size, Clip.mtime_ns).where(
            Clip.camera_serial == camera_serial,
            Clip.source_path_raw.in_(paths[start : start + _PATH_BATCH]),
        )
        rows = session.execute(query)
        known.update((row.source_path_raw, row.size, row.mtime_ns) for row in rows)
    return known


def _new_clip(
    store: Store,
    session: Session,
    docking: Docking,
    found: FoundClip,
    now: datetime,
    priority: int,
) -> Clip:
    video = found.video
    clip = Clip(
        camera_serial=docking.camera_serial,
        docking_id=docking.id,
        source_path_raw=video.source_path_raw,
        source_path=video.source_path,
        name=video.name,
        size=video.size,
        mtime_ns=video.mtime_ns,
        recorded_at=found.recorded_at,
        state=ClipState.DISCOVERED,
        priority=priority,
        copy_attempts=0,
        upload_attempts=0,
        discovered_at=now,
        updated_at=now,
    )
    _set_clip_time(clip, found, docking.camera_clock_offset_seconds)
    session.add(clip)
    session.flush()
    used_names = {clip.name.lower()}
    for sidecar in found.sidecars:
        name = _unique_name(sidecar.name, used_names)
        session.add(
            Sidecar(
                clip_id=clip.id,
                source_path_raw=sidecar.source_path_raw,
                source_path=sidecar.source_path,
                name=name,
                size=sidecar.size,
                mtime_ns=sidecar.mtime_ns,
            )
        )
    store.audit(
        session,
        "clip.discovered",
        camera_serial=clip.camera_serial,
        clip_id=clip.id,
        details={
            "source_path": clip.source_path,
            "size": clip.size,
            "mtime_ns": clip.mtime_ns,
            "docking_id": docking.id,
            "recorded_at": clip.recorded_at.isoformat(),
            "camera_time": clip.camera_time,
            "time_flag": clip.time_flag,
            "clock_offset_seconds": clip.clock_offset_seconds,
            "sidecars": [s.source_path for s in found.sidecars],
        },
    )
    log.info(
        "clip.discovered",
        clip=clip.id,
        camera=clip.camera_serial,
        path=clip.source_path,
        size=clip.size,
    )
    return clip


def _set_clip_time(clip: Clip, found: FoundClip, offset_seconds: float | None) -> None:
    """The clip's time columns: the camera's reading, and the UTC time corrected by the
    docking's measured offset (camera minus dock) when there is one."""
    clip.time_basis = "profile"
    clip.clock_offset_seconds = offset_seconds
    if offset_seconds is not None:
        clip.recorded_at = found.recorded_at - timedelta(seconds=offset_seconds)
    camera_time = found.camera_time
    if camera_time is not None:
        clip.camera_time = camera_time.reading
        clip.time_source = camera_time.source
        clip.time_flag = camera_time.flag
        clip.time_flag_rule = camera_time.rule


def _unique_name(name: str, used: set[str]) -> str:
    candidate, counter = name, 1
    while candidate.lower() in used:
        stem, dot, extension = name.rpartition(".")
        candidate = f"{stem}-{counter}.{extension}" if dot else f"{name}-{counter}"
        counter += 1
    used.add(candidate.lower())
    return candidate
