"""The weekly bandwidth schedule and the limiter that paces uploads by it."""

from __future__ import annotations

import threading
from datetime import datetime
from datetime import time as clock

import pytest

from bwc_dock.bandwidth import BYTES_PER_MB, BandwidthLimiter, BandwidthSchedule
from bwc_dock.config import BandwidthWindow

DAY_SHIFT = BandwidthWindow(days=("mon", "tue", "wed", "thu", "fri"), start=clock(7, 0),
                            end=clock(19, 0), limit_mb_per_s=20)
NIGHT = BandwidthWindow(days=("fri",), start=clock(22, 0), end=clock(6, 0), limit_mb_per_s=5)
ALL_DAY_SUNDAY = BandwidthWindow(days=("sun",), start=clock(0, 0), end=clock(0, 0),
                                 limit_mb_per_s=1)

# 2026-11-23 is a Monday.
MONDAY = datetime(2026, 11, 23)


@pytest.mark.parametrize(
    ("moment", "expected_mb"),
    [
        (MONDAY.replace(hour=6, minute=59), None),
        (MONDAY.replace(hour=7), 20),
        (MONDAY.replace(hour=18, minute=59, second=59), 20),
        (MONDAY.replace(hour=19), None),
        (MONDAY.replace(day=28, hour=12), None),  # Saturday: no day shift
        (MONDAY.replace(day=27, hour=23), 5),  # Friday night
        (MONDAY.replace(day=28, hour=5, minute=59), 5),  # ... into Saturday morning
        (MONDAY.replace(day=28, hour=6), None),
        (MONDAY.replace(day=24, hour=23), None),  # Tuesday night: the window is Friday's
        (MONDAY.replace(day=29, hour=0), 1),  # Sunday, whole day
        (MONDAY.replace(day=29, hour=23, minute=59), 1),
    ],
)
def test_schedule_limit_by_local_time(moment: datetime, expected_mb: float | None) -> None:
    """Windows apply on their days, overnight windows run into the next morning."""
    schedule = BandwidthSchedule((DAY_SHIFT, NIGHT, ALL_DAY_SUNDAY))
    expected = None if expected_mb is None else expected_mb * BYTES_PER_MB
    assert schedule.limit_at(moment) == expected


def test_overlapping_windows_take_the_lowest_limit() -> None:
    """Where two windows overlap, the stricter one holds."""
    lunch = BandwidthWindow(start=clock(12, 0), end=clock(13, 0), limit_mb_per_s=2)
    schedule = BandwidthSchedule((DAY_SHIFT, lunch))
    assert schedule.limit_at(MONDAY.replace(hour=12, minute=30)) == 2 * BYTES_PER_MB
    assert schedule.limit_at(MONDAY.replace(hour=13, minute=30)) == 20 * BYTES_PER_MB


class VirtualClock:
    """The limiter's clock and sleep, standing in for time.monotonic and time.sleep so
    the pacing is exact and no machine's speed shows: time passes only when a sender
    sleeps, and a sleep wakes at the moment its thread read plus the delay (threads
    sleeping at once share that time, as real ones do)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._read = threading.local()
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            self._read.at = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now = max(self.now, self._read.at + seconds)


def _send(limiter: BandwidthLimiter, total: int, chunk: int = 16 * 1024) -> None:
    for _ in range(total // chunk):
        limiter(chunk)


def test_limiter_paces_several_threads_to_the_limit() -> None:
    """Two senders sharing a 2 MB/s limit need 1 s for 2 MB together, less the 0.25 s
    burst allowance: 0.75 s, not the 0.25 s each would need with a limit of its own."""
    window = BandwidthWindow(start=clock(0, 0), end=clock(0, 0), limit_mb_per_s=2)
    virtual = VirtualClock()
    limiter = BandwidthLimiter([window], monotonic=virtual.monotonic, sleep=virtual.sleep)
    # 15,625-byte chunks: 64 make exactly 1 MB, and each costs exactly 1/128 s
    senders = [threading.Thread(target=_send, args=(limiter, BYTES_PER_MB, 15_625))
               for _ in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert virtual.now == 0.75


def test_limiter_does_not_slow_unlimited_hours() -> None:
    """Outside every window the limiter never sleeps."""
    night_only = BandwidthWindow(start=clock(22, 0), end=clock(6, 0), limit_mb_per_s=1)
    virtual = VirtualClock()
    limiter = BandwidthLimiter([night_only], now=lambda: MONDAY.replace(hour=12),
                               monotonic=virtual.monotonic, sleep=virtual.sleep)
    _send(limiter, 100 * BYTES_PER_MB)
    assert virtual.sleeps == []
    assert not limiter.limited


def test_limiter_follows_the_schedule_as_time_passes() -> None:
    """A limit starts to bite within a second of its window opening."""
    wall_clock = [MONDAY.replace(hour=6, minute=59, second=59)]
    virtual = VirtualClock()
    limiter = BandwidthLimiter([DAY_SHIFT], now=lambda: wall_clock[0],
                               monotonic=virtual.monotonic, sleep=virtual.sleep)
    assert not limiter.limited
    wall_clock[0] = MONDAY.replace(hour=7)
    virtual.now = 1.0  # a second later
    assert limiter.limited
