"""The folder backend's storage root must stay the folder it first opened.

A NAS that was unmounted, or swapped for a local folder, would otherwise receive
evidence unseen: "uploaded" would mean "on the dock's own disk" (docs/design.md,
trust boundaries). The root's device and inode are recorded when it is first opened and
checked at every later open. The record is kept in memory only: NFS device numbers are
not stable across mounts, so a stored one would refuse a healthy remount.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from bwc_dock.errors import PermanentStorageError, RefusalKind
from bwc_dock.logs import get_logger

log = get_logger(__name__)


class RootIdentity:
    """(st_dev, st_ino) of the storage root when first opened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_identity: tuple[int, int] | None = None
        self._root_was_mountpoint = False
        self._identity_lock = threading.Lock()

    def check(self, status: os.stat_result) -> None:
        """Refuse a root that is no longer the folder first opened (ROOT_CHANGED)."""
        identity = (status.st_dev, status.st_ino)
        with self._identity_lock:
            expected = self._root_identity
            mounted_late = (
                expected is not None and identity != expected
                and not self._root_was_mountpoint and os.path.ismount(self.root)
            )
            if expected is None or mounted_late:
                # first open, or the NAS mounted after bwc-dock first looked at the
                # empty mount point: the mount is the root from now on
                self._root_identity = identity
                self._root_was_mountpoint = os.path.ismount(self.root)
                log.info("storage.root_opened", root=str(self.root), device=status.st_dev,
                         inode=status.st_ino, mountpoint=self._root_was_mountpoint)
                return
        if identity != expected:
            raise PermanentStorageError(
                f"storage folder {self.root} is no longer the folder first opened (device"
                f" {expected[0]} inode {expected[1]}, now device {identity[0]} inode"
                f" {identity[1]}): the NAS was unmounted or swapped for another folder;"
                f" nothing is written there. Remount the NAS, then restart bwc-dock",
                RefusalKind.ROOT_CHANGED,
            )
