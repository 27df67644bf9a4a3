"""The daemon main loop's timers: what it does every so often, one named field each.

Each interval is read at every turn, not once: a reload may change the configured ones
(the rescan and heartbeat intervals; the storage check's keeps its value until a
restart), and purging runs more often while copying waits for room in staging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bwc_dock.config import Config
from bwc_dock.staging import StagingArea

PURGE_INTERVAL_SECONDS = 60.0
PAUSED_PURGE_INTERVAL_SECONDS = 2.0


@dataclass
class Every:
    """Something due once every ``interval()`` seconds of ``time.monotonic()``."""

    interval: Callable[[], float]
    last: float = 0.0  # 0: due at the first turn

    def due(self, now: float) -> bool:
        """True (and the clock restarted) when the interval has passed since the last time."""
        if now - self.last < self.interval():
            return False
        self.last = now
        return True


@dataclass
class MainLoopTimers:
    storage_check: Every
    rescan: Every
    purge: Every
    heartbeat: Every


def main_loop_timers(
    config: Callable[[], Config], staging: StagingArea, started: float
) -> MainLoopTimers:
    """The timers of a daemon whose running configuration ``config()`` returns. The
    sources dock what is present as they start, so the first rescan waits a full
    interval from ``started``; the rest are due at the first turn."""

    def purge_interval() -> float:
        # a paused copier waits for space: purge uploaded copies promptly then
        return PAUSED_PURGE_INTERVAL_SECONDS if staging.paused else PURGE_INTERVAL_SECONDS

    return MainLoopTimers(
        storage_check=Every(lambda: config().storage.check_interval_seconds),
        rescan=Every(lambda: config().sources.rescan_interval_seconds, last=started),
        purge=Every(purge_interval),
        heartbeat=Every(lambda: config().service.heartbeat_seconds),
    )
