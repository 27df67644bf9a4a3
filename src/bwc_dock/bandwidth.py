"""Upload bandwidth limits on a weekly schedule (e.g. 20 MB/s during the day shift).

The configuration (``[[storage.bandwidth]]``, see BandwidthWindow) lists windows of the
week in the dock's local time. A window whose end is not after its start runs past
midnight into the next day (``22:00``-``06:00``); ``days`` name the day it starts on;
``00:00``-``00:00`` is the whole day. Where windows overlap the lowest limit applies;
outside every window uploads are unlimited. ``MB`` is 10^6 bytes, as on a network link.

:class:`BandwidthLimiter` is a ``ProgressCallback`` for ``StorageBackend.put_file``:
backends call it with each chunk they send, from any number of upload threads, and it
sleeps just long enough to keep the total under the limit in force at that moment.
One limiter should be shared by all upload workers, since the limit is for the dock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bwc_dock.config import BandwidthWindow

BYTES_PER_MB = 1_000_000
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How often the schedule is looked up again: cheap enough, and a window edge is
# honoured within a second.
SCHEDULE_RECHECK_SECONDS = 1.0
# A sender may get this far ahead of the rate before it is made to sleep; smooths the
# many small chunks without letting a burst swamp the dock's uplink.
BURST_SECONDS = 0.25


@dataclass(frozen=True)
class BandwidthSchedule:
    """The weekly windows; which limit (bytes per second) holds at a given local time."""

    windows: tuple[BandwidthWindow, ...] = ()

    def limit_at(self, moment: datetime) -> float | None:
        """The limit in bytes per second at ``moment`` (local time), None for unlimited."""
        limits = [window.limit_mb_per_s * BYTES_PER_MB
                  for window in self.windows if _window_covers(window, moment)]
        return min(limits) if limits else None


def _window_covers(window: BandwidthWindow, moment: datetime) -> bool:
    """Whether ``moment`` falls in the window as it started today or (overnight) yesterday."""
    clock = moment.time().replace(tzinfo=None)
    today = _WEEKDAYS[moment.weekday()]
    yesterday = _WEEKDAYS[(moment - timedelta(days=1)).weekday()]
    if window.start < window.end:
        return today in window.days and window.start <= clock < window.end
    # runs past midnight (or the whole day when start == end)
    started_today = today in window.days and clock >= window.start
    started_yesterday = yesterday in window.days and clock < window.end
    return started_today or started_yesterday


class BandwidthLimiter:
    """A thread-safe pacing callback: ``limiter(byte_count)`` after each chunk sent."""

    def __init__(
        self,
        schedule: BandwidthSchedule | Sequence[BandwidthWindow],
        *,
        now: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(schedule, BandwidthSchedule):
            schedule = BandwidthSchedule(tuple(schedule))
        self._schedule = schedule
        self._now = now
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._limit: float | None = None
        self._limit_checked_at: float | None = None
        self._next_free = 0.0  # the monotonic time at which the bytes sent so far are "paid"

    @property
    def limited(self) -> bool:
        """Whether a limit is in force now."""
        with self._lock:
            return self._current_limit(self._monotonic()) is not None

    def _current_limit(self, instant: float) -> float | None:
        checked = self._limit_checked_at
        if checked is None or instant - checked >= SCHEDULE_RECHECK_SECONDS:
            self._limit = self._schedule.limit_at(self._now())
            self._limit_checked_at = instant
        return self._limit

    def __call__(self, byte_count: int) -> None:
        """Account for ``byte_count`` bytes sent; sleep if the sender is ahead of the limit."""
        with self._lock:
            instant = self._monotonic()
            limit = self._current_limit(instant)
            if limit is None:
                self._next_free = instant
                return
            # Time not used in the past is not saved up (beyond the burst allowance below).
            self._next_free = max(self._next_free, instant)
            self._next_free += byte_count / limit
            delay = self._next_free - instant - BURST_SECONDS
        if delay > 0:
            self._sleep(delay)
