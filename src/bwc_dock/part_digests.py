"""The digests of a clip's parts taken in the copier's read of the camera, kept in memory
for its upload.

A backend that sends a clip in parts sends each part with its SHA-256, and the store
refuses a part whose bytes do not match it. When the copier's one read of the camera
also hashes each part (beside the SHA-256 of the whole clip, which the ledger keeps),
the upload sends those digests and need not hash the staged copy again: a staged copy
that differs from what was read off the camera is refused part by part, by the store,
and the parts the store assembles hash, together, to the ledger's SHA-256. That spares
one SHA-256 of every byte of every such clip: about a sixth of the daemon's CPU per
megabyte uploaded to S3 (docs/design.md, "Hashes").

They are kept here, not in the ledger: they are only worth keeping until the clip's
upload, an upload without them hashes the clip itself as before (after a restart, or
for a clip read by another process), and a register of at most ``limit`` clips keeps
the memory small (a digest is 32 bytes per part; 256 parts for a 4 GiB clip).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from bwc_dock.hashing import PartHasher
from bwc_dock.storage.base import PartDigests


class KeptPartDigests:
    """Part digests by clip id, shared by the copiers and uploaders of one process.

    ``part_size_for``: the backend's (StorageBackend.part_size_for), which says whether
    it sends a clip of a given size in parts, and of what size."""

    def __init__(self, part_size_for: Callable[[int], int | None], limit: int = 1024) -> None:
        self._part_size_for = part_size_for
        self._limit = limit
        self._lock = threading.Lock()
        self._by_clip: OrderedDict[int, PartDigests] = OrderedDict()

    def hasher_for(self, size: int) -> PartHasher | None:
        """A hasher of the parts of a clip of ``size`` bytes, for the copier's read; None
        where the backend sends such a clip whole."""
        part_size = self._part_size_for(size)
        return None if part_size is None else PartHasher(part_size)

    def keep(self, clip_id: int, sha256: str, parts: PartHasher) -> None:
        """Keep the digests of ``clip_id``'s parts from the read that gave ``sha256`` (the
        oldest clip's go past ``limit``: its upload then hashes it)."""
        digests = PartDigests(sha256, parts.part_size, parts.digests())
        with self._lock:
            self._by_clip[clip_id] = digests
            self._by_clip.move_to_end(clip_id)
            while len(self._by_clip) > self._limit:
                self._by_clip.popitem(last=False)

    def get(self, clip_id: int, sha256: str) -> PartDigests | None:
        """The digests of ``clip_id``, if they were taken in the read that gave ``sha256``."""
        with self._lock:
            digests = self._by_clip.get(clip_id)
        return digests if digests is not None and digests.sha256 == sha256 else None

    def forget(self, clip_id: int) -> None:
        with self._lock:
            self._by_clip.pop(clip_id, None)
