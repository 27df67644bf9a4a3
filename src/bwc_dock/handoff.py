"""Pass 2 merged into the upload when the upload follows at once.

The copier verifies each staged copy by reading it back from disk (pass 2), and the
uploader then reads the same copy from disk again to send it (pass 3). When an uploader
is waiting for work, the second read follows at once, and a successful upload proves
what pass 2 would: central storage confirmed the SHA-256 taken at the first read, and
the stored bytes came from the staged copy. So the copier leaves such a clip to the
waiting uploader unverified, and the staging disk reads each clip once instead of twice.

Whether a staged copy was verified is in the ledger (the clip's ``staged_verified``,
set in the transaction that makes it ``staged``), so every process, and a process
started after a crash, treats a copy left for its upload alike: an upload that finds it
damaged sends the clip back to be read off the camera again (``discovered``) rather than
to quarantine; the state machine allows that only for an unverified copy. What pass 2
proved early is kept for the case where the upload does not succeed: the uploader then
reads the staged copy back from disk at once and records it verified if intact. (Not on
shutdown or a lost lease, where the clip is left unverified, nor on a conflict in central
storage, which quarantines the clip whatever its staged copy.) A docked camera is not
released while a clip of it is still unverified, so that read happens while it is there.

The register below lives in memory, shared by the copiers and uploaders of one process:
it says only whether an uploader waits for work now, so that a clip is handed over only
when its read follows at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class UploadHandoff:
    """Which uploaders of this process wait for work now, and what was handed to them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting_uploaders = 0
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

    def hand_over(self, clip_id: int) -> bool:
        """True when an uploader waits with nothing else handed to it, so its read of the
        staged copy follows at once: the copier then records the clip unverified."""
        with self._changed:
            if self._waiting_uploaders <= len(self._unclaimed):
                return False
            self._unclaimed.add(clip_id)
            return True

    def claimed(self, clip_id: int) -> None:
        """An uploader took the clip."""
        with self._changed:
            self._unclaimed.discard(clip_id)

    def settle(self, clip_id: int) -> None:
        """An uploader is done with the clip (or, copy not finished, no uploader will
        take it); whoever waits for a clip's upload to verify it looks again."""
        with self._changed:
            self._unclaimed.discard(clip_id)
            self._changed.notify_all()

    def note_sent_back(self, camera_serial: str) -> None:
        """A clip of the camera was sent back to be read off it again."""
        with self._changed:
            self._sent_back[camera_serial] = self._sent_back.get(camera_serial, 0) + 1
            self._changed.notify_all()

    def sent_back(self, camera_serial: str) -> int:
        """How many of the camera's clips were sent back to be read again since last asked."""
        with self._changed:
            return self._sent_back.pop(camera_serial, 0)

    def wait_for_change(self, timeout_seconds: float) -> None:
        """Until a clip is taken or sent back, or the timeout."""
        with self._changed:
            self._changed.wait(max(timeout_seconds, 0))
