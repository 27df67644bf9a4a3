"""A storage folder that is not the one of the daemon's last run: re-check what went there.

The folder backend refuses a root that changes under a running daemon (storage_refused).
At the next start the new folder is accepted, and what the ledger says was delivered may
be on the old one only (a NAS swapped, or evidence written to the dock's disk before the
share was mounted over it). So the daemon keeps the identity of the folder it last used
(the inodes of the root and of its marker file; not the device number, which NFS changes
at every mount) in its state directory, and when the folder at start is another one it
raises ``storage_root_changed`` and runs resync's own plan and repairs (daemon alive:
clips missing or wrong centrally are re-queued from their staged copy or the docked
camera, the uploaders do the rest). The identity is recorded again, and the alarm
cleared, once a re-check finds nothing to repair.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from bwc_dock.config import Config
from bwc_dock.durable import write_bytes_durably
from bwc_dock.ledger import Ledger
from bwc_dock.storage.base import StorageBackend

log = structlog.get_logger(__name__)

RECORD_NAME = "storage-root.json"


@dataclass(frozen=True)
class FolderIdentity:
    path: str
    root_inode: int
    marker_inode: int


def folder_identity(config: Config) -> FolderIdentity | None:
    """The storage folder's identity now; None for S3 or a folder without its marker."""
    if config.storage.backend != "file" or config.storage.path is None:
        return None
    root = config.storage.path
    try:
        root_status = root.stat()
        marker = (root / config.storage.store_marker).stat(follow_symlinks=False)
    except OSError:
        return None  # not mounted or unreadable: the backend says why, nothing to compare
    return FolderIdentity(str(root), root_status.st_ino, marker.st_ino)


def recorded_identity(state_dir: Path) -> FolderIdentity | None:
    try:
        raw = json.loads((state_dir / RECORD_NAME).read_text(encoding="utf-8"))
        return FolderIdentity(str(raw["path"]), int(raw["root_inode"]), int(raw["marker_inode"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("storage.root_record_unreadable", error=str(error))
        return None


def record_identity(state_dir: Path, identity: FolderIdentity) -> None:
    write_bytes_durably(state_dir / RECORD_NAME, json.dumps(asdict(identity)).encode() + b"\n",
                        mode=0o600)


@dataclass
class RootRecheck:
    """Whether the storage folder changed since the last run, and the re-check of it."""

    config: Config
    ledger: Ledger
    backend: StorageBackend
    identity: FolderIdentity | None = None  # the folder now, while a re-check is due
    alarm: str = ""  # the storage_root_changed alarm's detail; "" when none
    rechecks: int = 0

    @property
    def pending(self) -> bool:
        return self.identity is not None

    def compare(self) -> None:
        """At start: record the folder the first time; a different one makes a re-check due."""
        now = folder_identity(self.config)
        if now is None:
            return
        before = recorded_identity(self.config.dock.state_dir)
        if before is None or before == now:
            if before is None:
                record_identity(self.config.dock.state_dir, now)
            return
        self.identity = now
        self.alarm = (f"storage folder {now.path} is not the folder of the last run: every"
                      " clip delivered before is being checked there")
        log.error("storage.root_changed_since_last_run", root=now.path,
                  was=f"inodes {before.root_inode}/{before.marker_inode}",
                  now=f"inodes {now.root_inode}/{now.marker_inode}",
                  action="re-checking every delivered clip; missing ones are re-queued")

    def recheck(self) -> None:
        """Resync's plan and repairs, as a hand-run resync beside the daemon would run
        them; after the first, only once nothing waits for upload (re-queued clips are
        up by then), so a clean re-check ends the alarm."""
        if self.identity is None:
            return
        if self.rechecks and self._uploads_waiting():
            return
        from bwc_dock.resync.run import Resync  # resync's planner reads far: load on need

        report = Resync(self.config, self.ledger, self.backend, daemon_alive=True).run()
        self.rechecks += 1
        repaired = [action for action in report.actions if action.clip_id is not None]
        if report.ok and not repaired:
            record_identity(self.config.dock.state_dir, self.identity)
            log.info("storage.root_rechecked", root=self.identity.path,
                     clips_checked=report.clips_checked)
            self.identity, self.alarm = None, ""
            return
        self.alarm = (f"storage folder {self.identity.path} is not the folder of the last"
                      f" run: {len(repaired)} delivered clip(s) were missing or wrong there and"
                      f" are re-queued, {len(report.unrepairable)} cannot be repaired; see"
                      " `bwc-dock resync --dry-run`")
        log.error("storage.root_recheck_found", root=self.identity.path,
                  requeued=len(repaired), unrepairable=len(report.unrepairable))

    def _uploads_waiting(self) -> bool:
        counts = self.ledger.counts_by_state()
        return any(counts.get(state, 0) for state in ("discovered", "copying", "staged",
                                                      "uploading"))
