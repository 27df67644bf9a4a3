"""The folder backend's storage root must stay the folder it first opened.

A NAS that was unmounted, or swapped for a local folder, would otherwise receive
evidence unseen: "uploaded" would mean "on the dock's own disk" (docs/design.md,
trust boundaries). The root's device and inode are recorded when it is first opened and
checked at every later open. The record is kept in memory only: NFS device numbers are
not stable across mounts, so a stored one would refuse a healthy remount.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from bwc_dock.errors import PermanentStorageError, RefusalKind, TransientStorageError
from bwc_dock.logs import get_logger

log = get_logger(__name__)


class RootIdentity:
    """(st_dev, st_ino) of the storage root when first opened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_identity: tuple[int, int] | None = None
        self._written = False  # anything written through the root first opened
        self._identity_lock = threading.Lock()

    def note_write(self) -> None:
        """Something is being written through the current root."""
        with self._identity_lock:
            self._written = True

    def check(self, status: os.stat_result) -> None:
        """Refuse a root that is no longer the folder first opened (ROOT_CHANGED).

        A NAS mounted over the folder first opened is taken as the root only when
        nothing was written before (boot order: the first look came early). Otherwise
        what was written went to the dock's own disk and is hidden under the mount now:
        it must be looked at (``bwc-dock resync`` re-queues what the store lacks) before
        anything more is written, and the refusal raises the storage_refused alarm.
        """
        identity = (status.st_dev, status.st_ino)
        with self._identity_lock:
            expected = self._root_identity
            mounted_late = (expected is not None and identity != expected
                            and not self._written and os.path.ismount(self.root))
            if expected is None or mounted_late:
                self._root_identity = identity
                log.info("storage.root_opened", root=str(self.root), device=status.st_dev,
                         inode=status.st_ino, mountpoint=os.path.ismount(self.root))
                return
        if identity != expected:
            log.error("storage.root_changed", root=str(self.root),
                      was=f"{expected[0]}:{expected[1]}", now=f"{identity[0]}:{identity[1]}")
            raise PermanentStorageError(
                f"storage folder {self.root} is no longer the folder first opened (device"
                f" {expected[0]} inode {expected[1]}, now device {identity[0]} inode"
                f" {identity[1]}): the NAS was mounted, unmounted or swapped for another"
                f" folder; nothing is written there. Run `bwc-dock resync` once the right"
                f" share is mounted (it re-checks every delivered clip and re-queues what"
                f" central storage lacks), then restart bwc-dock",
                RefusalKind.ROOT_CHANGED,
            )


def check_marker(root_fd: int, root: Path, marker: str) -> None:
    """The marker file the administrator put on the share is in the root: the share is
    mounted there, not the empty local folder under its mount point ("" = not checked)."""
    if not marker:
        return
    try:
        status = os.stat(marker, dir_fd=root_fd, follow_symlinks=False)
    except FileNotFoundError:
        status = None
    if status is None or not stat.S_ISREG(status.st_mode):
        raise TransientStorageError(
            f"storage folder {root} holds no {marker} file: the NAS is not mounted there"
            f" (or it is not the evidence share); nothing is written. On the share,"
            f" once: touch {root / marker}"
        )
