"""Cameras a profile claims that cannot be read: reported to the listener (which raises
the ``camera_unmountable`` alarm), logged loudly once, and tried again ever more slowly.

Part of the USB bays (``bays.py``); nothing here imports pyudev.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from bwc_dock.config import CameraProfile
from bwc_dock.sources.base import SourceListener, UnreadableCamera
from bwc_dock.sources.identity import BlockIdentity, claiming_profile, clean_serial

log = structlog.get_logger(__name__)

# An unreadable camera is tried again at rescans, waiting longer each time up to this: a
# bad moment heals at once, a corrupt card does not need a mount attempt every minute.
_UNREADABLE_RETRY_MAX_SECONDS = 15 * 60.0


@dataclass
class _Unreadable:
    """A claimed device that could not be read, and when to try it again."""

    report: UnreadableCamera
    docking_key: tuple[str | None, ...]
    attempts: int
    retry_at: float  # time.monotonic()


class UnreadableCameras:
    """The unreadable devices by sys path; the bays call in holding their lock."""

    def __init__(self, profiles: tuple[CameraProfile, ...], rescan_interval: float) -> None:
        self.profiles = profiles
        self.rescan_interval = rescan_interval
        self.listener: SourceListener | None = None
        self._unreadable: dict[str, _Unreadable] = {}

    def check_claimed_without_filesystem(self, identity: BlockIdentity) -> None:
        """A camera's disk with no filesystem at all (a corrupt boot sector, say)."""
        profile = claiming_profile(identity, self.profiles)
        if profile is None:
            self.readable_again(identity.sys_path)
            return
        known = self._unreadable.get(identity.sys_path)
        if known is not None and known.docking_key == identity.docking_key:
            return  # reported already; only a new medium can change this
        self.report(
            identity,
            profile,
            "no filesystem found on the device (corrupt or unformatted)",
            serial=clean_serial(identity.serial),
        )

    def report(
        self, identity: BlockIdentity, profile: CameraProfile, error: str, *, serial: str | None
    ) -> None:
        """Log (loudly once, quietly after) and tell the listener, which raises an alarm."""
        known = self._unreadable.get(identity.sys_path)
        if known is not None and known.docking_key != identity.docking_key:
            known = None  # another medium in the same bay: a report of its own
        attempts = 1 if known is None else known.attempts + 1
        delay = min(self.rescan_interval * 2 ** (attempts - 1), _UNREADABLE_RETRY_MAX_SECONDS)
        report = UnreadableCamera(
            device=identity.device,
            profile_name=profile.name,
            camera_serial=serial,
            error=error,
            since=known.report.since if known else datetime.now(UTC),
        )
        self._unreadable[identity.sys_path] = _Unreadable(
            report, identity.docking_key, attempts, time.monotonic() + delay
        )
        level = log.error if known is None or known.report.error != error else log.debug
        level(
            "dock.mount_failed",
            profile=profile.name,
            error=error,
            attempts=attempts,
            retry_in_seconds=round(delay),
            **identity.ids(),
        )
        self._notify_unreadable(report)

    def waiting_to_retry(self, identity: BlockIdentity) -> bool:
        known = self._unreadable.get(identity.sys_path)
        if known is None:
            return False
        if known.docking_key != identity.docking_key:
            self.readable_again(identity.sys_path)  # a new medium: judge it afresh
            return False
        return time.monotonic() < known.retry_at

    def readable_again(self, sys_path: str) -> None:
        known = self._unreadable.pop(sys_path, None)
        if known is None:
            return
        log.info(
            "dock.readable_again", device=known.report.device, profile=known.report.profile_name
        )
        if self.listener is not None:
            try:
                self.listener.readable_again(known.report.device)
            except Exception:  # error boundary: a listener bug must not stop docking
                log.error("dock.listener_failed", callback="readable_again", exc_info=True)

    def _notify_unreadable(self, report: UnreadableCamera) -> None:
        assert self.listener is not None
        try:
            self.listener.unreadable(report)
        except Exception:  # error boundary: a listener bug must not stop docking
            log.error("dock.listener_failed", callback="unreadable", device=report.device,
                      exc_info=True)
