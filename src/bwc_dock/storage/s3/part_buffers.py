"""Part-sized buffers an S3 backend keeps between the parts of its multipart uploads.

Reading every 16 MiB part into a fresh buffer cost the kernel a page fault and a zeroed
page for each 4 KiB of it: about 5% of the daemon's CPU per MB at an S3 station (perf,
``scripts/bench stations``), and a fresh ``bytearray`` is zeroed with the GIL held. So
every buffer given back is kept while uploads go on, and all are let go once no part was
sent for ``IDLE_SECONDS``, so an idle dock holds no part-sized memory. No cap is needed:
a buffer is made only when none is free, so there are never more than the most parts
ever read or in flight at once (each upload: its concurrency, plus the part being read).
A cap below that (it was one upload's worth) made the daemon's second uploader allocate
a new buffer for most of its parts.
"""

from __future__ import annotations

import threading
import time

IDLE_SECONDS = 30.0


class PartBuffers:
    """Buffers of ``size`` bytes, shared by the backend's upload threads."""

    def __init__(self, size: int, idle_seconds: float = IDLE_SECONDS) -> None:
        self.size = size
        self.made = 0  # buffers of the parts' size made so far (for tests and benches)
        self._idle_seconds = idle_seconds
        self._free: list[bytearray] = []
        self._lock = threading.Lock()
        self._last_used = time.monotonic()
        self._timer: threading.Timer | None = None

    def take(self, length: int) -> bytearray:
        """A buffer of exactly ``length`` bytes; a kept one when it has the parts' size.
        Its old bytes are never read: the caller fills all of it first."""
        if length == self.size:
            with self._lock:
                self._last_used = time.monotonic()
                if self._free:
                    return self._free.pop()
                self.made += 1
        return bytearray(length)

    def give_back(self, buffer: bytearray) -> None:
        """Keep ``buffer`` for a later part. The caller, and the HTTP client it was sent
        through, are done with every view of it."""
        if len(buffer) != self.size:
            return
        with self._lock:
            self._last_used = time.monotonic()
            self._free.append(buffer)
            if self._timer is None:
                self._timer = self._start_timer(self._idle_seconds)

    def clear(self) -> None:
        """Let every kept buffer go now (the backend is closed)."""
        with self._lock:
            self._free.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _start_timer(self, delay: float) -> threading.Timer:
        timer = threading.Timer(delay, self._let_go_if_idle)
        timer.daemon = True
        timer.name = "s3-part-buffers"
        timer.start()
        return timer

    def _let_go_if_idle(self) -> None:
        with self._lock:
            idle = time.monotonic() - self._last_used
            if idle < self._idle_seconds:
                self._timer = self._start_timer(self._idle_seconds - idle)
                return
            self._free.clear()
            self._timer = None

    @property
    def kept(self) -> int:
        """How many buffers are kept now."""
        with self._lock:
            return len(self._free)
