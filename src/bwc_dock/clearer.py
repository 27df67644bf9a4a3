"""Clear after upload: delete from the camera exactly the clips central storage vouches for.

Only for profiles that ask for it. A camera with any quarantined clip, or any clip
whose upload is not verified, keeps everything. A clip is deleted only when it is
``uploaded`` and the SHA-256 central storage confirmed equals the one taken when it was
first read off the camera; each deletion is an audit event and the clip becomes
``cleared``. Files are unlinked relative to directory descriptors without following
links, and only when they still are the size and mtime that was copied.
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

from bwc_dock.errors import BwcDockError
from bwc_dock.found import DockedVolume, display_path
from bwc_dock.ledger import ClipState, ClipWork, Ledger
from bwc_dock.scanner import parent_directory
from bwc_dock.sources.base import Source

log = structlog.get_logger(__name__)

_BLOCKING_STATES = frozenset(
    {
        ClipState.DISCOVERED,
        ClipState.COPYING,
        ClipState.STAGED,
        ClipState.UPLOADING,
        ClipState.QUARANTINED,
    }
)


class ClearVerdict(enum.StrEnum):
    READY = "ready"  # every clip is verified in central storage: clear now
    WAITING = "waiting"  # uploads still to be verified: keep the camera as it is
    KEEPS_EVERYTHING = "keeps_everything"  # a clip is quarantined: never cleared


@dataclass(frozen=True)
class ClearDecision:
    """Whether a camera may be cleared now, and in words why not."""

    verdict: ClearVerdict
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.verdict is ClearVerdict.READY


def ready_to_clear(ledger: Ledger, camera_serial: str) -> ClearDecision:
    """Whether the camera may be cleared now, and why not. Counted by state in the
    camera's index: a camera's history grows with every shift, its blocking clips do not."""
    counts = ledger.counts_by_state(camera_serial)
    if counts[str(ClipState.QUARANTINED)]:
        return ClearDecision(
            ClearVerdict.KEEPS_EVERYTHING,
            "a clip of this camera is quarantined: the camera keeps everything",
        )
    blocking = sum(counts[str(state)] for state in _BLOCKING_STATES)
    if blocking:
        return ClearDecision(
            ClearVerdict.WAITING, f"{blocking} clip(s) not yet verified in central storage"
        )
    return ClearDecision(ClearVerdict.READY)


def clearable(ledger: Ledger, camera_serial: str) -> list[ClipWork]:
    """Uploaded clips whose central SHA-256 equals the first-read SHA-256."""
    return [
        c
        for c in ledger.clips(camera_serial=camera_serial, state=str(ClipState.UPLOADED))
        if c.sha256 is not None and c.remote_sha256 == c.sha256
    ]


def clear_camera(ledger: Ledger, camera_serial: str, writable_root: Path, device: str) -> int:
    """Delete the verified clips (and their sidecars) from a camera mounted read-write."""
    decision = ready_to_clear(ledger, camera_serial)
    if not decision.ready:
        log.warning("clear.skipped", camera=camera_serial, reason=decision.reason)
        return 0
    cleared = 0
    for work in clearable(ledger, camera_serial):
        # a sidecar, like its clip, only while it is the size and mtime that was copied
        paths: list[tuple[bytes, int, int | None]] = [
            (work.source_path_raw, work.size, work.mtime_ns),
            *((s.source_path_raw, s.size, s.mtime_ns) for s in work.sidecars),
        ]
        removed = [
            display_path(raw)
            for raw, size, mtime_ns in paths
            if _unlink_if_unchanged(writable_root, raw, size, mtime_ns)
        ]
        ledger.mark_cleared(work, {"device": device, "deleted": removed})
        log.info(
            "clip.cleared_from_camera",
            clip=work.id,
            camera=camera_serial,
            sha256=work.sha256,
            files=len(removed),
        )
        cleared += 1
    return cleared


def clear_when_verified(ledger: Ledger, volume: DockedVolume, source: Source) -> bool:
    """Clear a docked camera through its source once every clip is verified in central
    storage; True when its docking may end (cleared, or never to be cleared)."""
    camera = volume.camera_serial
    verdict = ready_to_clear(ledger, camera).verdict
    if verdict is ClearVerdict.WAITING:
        return False
    if verdict is ClearVerdict.KEEPS_EVERYTHING:
        return True  # a quarantined clip never clears: release the camera as it is
    if not clearable(ledger, camera):
        return True
    try:
        with source.writable(volume) as root:
            clear_camera(ledger, camera, root, volume.device)
    except (BwcDockError, OSError) as error:
        log.error("clear.failed", camera=camera, error=str(error))
    return True


def _unlink_if_unchanged(root: Path, source_path_raw: bytes, size: int,
                         mtime_ns: int | None) -> bool:
    """Unlink a camera file only if it is still the regular file of that size and (when
    given) mtime: a file rewritten since it was copied is new evidence, never deleted."""
    try:
        with parent_directory(root, source_path_raw) as (directory_fd, name):
            entry = os.stat(name, dir_fd=directory_fd, follow_symlinks=False)
            changed = mtime_ns is not None and entry.st_mtime_ns != mtime_ns
            if not stat.S_ISREG(entry.st_mode) or entry.st_size != size or changed:
                log.warning("clear.file_changed", path=display_path(source_path_raw))
                return False
            os.unlink(name, dir_fd=directory_fd)
            return True
    except FileNotFoundError:
        return False  # already gone: deleting what is gone has succeeded
