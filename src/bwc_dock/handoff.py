"""Pass 2 merged into the upload when the upload follows at once.

The copier verifies each staged copy by reading it back from disk (pass 2), and the
uploader then reads the same copy from disk again to send it (pass 3). When an uploader
is waiting for work, the second read follows at once, and a successful upload proves
what pass 2 would: central storage confirmed the SHA-256 taken at the first read, and
the stored bytes came from the staged copy. So the copier leaves such a clip to the
waiting uploader unverified, and the staging disk reads each clip once instead of twice.

What pass 2 proved early is kept for the case where the upload does not succeed: an
uploader that fails to upload a clip it was handed reads the staged copy back from disk
at once, and a damaged copy goes back to be read off the camera again rather than to
quarantine. (Not on shutdown or a lost lease, where the clip is left as it was, nor on
a conflict in central storage, which quarantines the clip whatever its staged copy.)
A docked camera is not released while a clip of it is still handed over unverified, so
that read happens while the camera is there.

This register lives in memory, shared by the copiers and uploaders of one process. A
restart forgets it: a clip handed over when the daemon died is then an ordinary staged
clip, which its upload proves; if that upload finds the staged copy damaged, the clip is
quarantined (still on the camera, never cleared) as any damaged staged copy is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bwc_dock.ledger import ClipState, Ledger


class UploadHandoff:
    """Which clips were handed to a waiting uploader without pass 2, per camera."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting_uploaders = 0
        self._unverified: dict[int, str] = {}  # clip id -> camera serial
        self._unclaimed: set[int] = set()  # handed over, no uploader took them yet
        self._sent_back: dict[str, int] = {}  # camera serial -> clips to read again

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """An uploader waits for work (found none to claim) inside this block."""
        with self._changed:
            self._waiting_uploaders += 1
        try:
            yield
        finally:
            with self._changed:
                self._waiting_uploaders -= 1

    def hand_over(self, clip_id: int, camera_serial: str) -> bool:
        """True (and the clip is registered unverified) when an uploader waits with nothing
        else handed to it, so its read of the staged copy follows at once."""
        with self._changed:
            if self._waiting_uploaders <= len(self._unclaimed):
                return False
            self._unverified[clip_id] = camera_serial
            self._unclaimed.add(clip_id)
            return True

    def claimed(self, clip_id: int) -> bool:
        """An uploader took the clip; whether it was handed over unverified."""
        with self._changed:
            self._unclaimed.discard(clip_id)
            return clip_id in self._unverified

    def settle(self, clip_id: int, *, sent_back: bool = False) -> None:
        """The clip is verified (uploaded, or read back intact), or ``sent_back`` to be
        read off the camera again, or (copy not finished) no longer handed over."""
        with self._changed:
            self._unclaimed.discard(clip_id)
            camera = self._unverified.pop(clip_id, None)
            if camera is not None and sent_back:
                self._sent_back[camera] = self._sent_back.get(camera, 0) + 1
            self._changed.notify_all()

    def unverified_ids(self, camera_serial: str) -> set[int]:
        """Clips of the camera handed over and not yet settled."""
        with self._changed:
            return {clip for clip, camera in self._unverified.items() if camera == camera_serial}

    def sent_back(self, camera_serial: str) -> int:
        """How many of the camera's clips were sent back to be read again since last asked."""
        with self._changed:
            return self._sent_back.pop(camera_serial, 0)

    def wait_for_change(self, timeout_seconds: float) -> None:
        """Until a clip is settled, or the timeout."""
        with self._changed:
            self._changed.wait(max(timeout_seconds, 0))


def still_unverified(handoff: UploadHandoff, ledger: Ledger, camera_serial: str) -> bool:
    """Whether a clip of the camera is handed over and still waits for its upload. One
    the ledger shows elsewhere (another process uploaded it, resync re-queued it) is
    settled here: nothing in this process would settle it."""
    handed_over = handoff.unverified_ids(camera_serial)
    if not handed_over:
        return False
    waiting = {
        work.id
        for work in ledger.clips(ids=handed_over)
        if work.state in (ClipState.STAGED, ClipState.UPLOADING)
    }
    for clip_id in handed_over - waiting:
        handoff.settle(clip_id)
    return bool(waiting)
