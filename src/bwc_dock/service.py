"""The daemon's face to systemd and monitoring: sd_notify, alarms, Prometheus textfile.

Runs from the daemon's main loop (``Daemon.on_tick``). READY=1 is sent after start-up
recovery; STATUS= is kept current; WATCHDOG=1 proves the main loop turns; alarms are
raised and cleared once each (journald at warning/error priority, in STATUS and in the
metrics).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from bwc_dock.alarms import (
    AlarmBoard,
    DockedCamera,
    Observation,
    StorageState,
    UnmountableCamera,
    log_transition,
)
from bwc_dock.metrics import MetricsSnapshot, write_textfile
from bwc_dock.systemd_notify import Notifier, watchdog_interval

if TYPE_CHECKING:
    from bwc_dock.daemon import Daemon

log = structlog.get_logger(__name__)

ALARM_CHECK_SECONDS = 5.0


class ServiceHooks:
    def __init__(self, daemon: Daemon) -> None:
        self.notifier = Notifier()
        self.alarms = AlarmBoard(daemon.config.alarms)
        self.watchdog_every = watchdog_interval()
        self._last_watchdog = 0.0
        self._last_alarm_check = 0.0
        self._last_status = ""
        self._ready_sent = False

    def __call__(self, daemon: Daemon) -> None:
        now = time.monotonic()
        if self.watchdog_every is not None and now - self._last_watchdog >= self.watchdog_every:
            self.notifier.watchdog()
            self._last_watchdog = now
        if now - self._last_alarm_check < ALARM_CHECK_SECONDS and self._ready_sent:
            return
        self._last_alarm_check = now
        self.alarms.config = daemon.config.alarms  # a SIGHUP may have changed thresholds
        for transition in self.alarms.observe(self._observe(daemon)):
            log_transition(log, transition)
        status = daemon.status_line()
        summary = self.alarms.summary()
        if summary:
            status = f"{status} · {summary}"
        if not self._ready_sent:
            self.notifier.ready(status)
            self._ready_sent = True
        elif status != self._last_status:
            self.notifier.status(status)
        self._last_status = status
        self._write_metrics(daemon)

    def _observe(self, daemon: Daemon) -> Observation:
        counts = daemon.ledger.counts_by_state()
        return Observation(
            now=datetime.now(UTC),
            oldest_pending_at=daemon.ledger.oldest_pending_at(),
            staging_free_bytes=_free(daemon),
            staging_reserve_bytes=daemon.staging.reserve_bytes,
            storage=daemon.storage_state,
            storage_error=daemon.last_error or "",
            quarantined_clips=counts["quarantined"],
            docked=tuple(
                DockedCamera(serial, pending, progress)
                for serial, pending, progress in daemon.docked_progress()
            ),
            unmountable=tuple(
                UnmountableCamera(camera.camera_serial or camera.device, camera.error)
                for camera in daemon.unreadable_cameras()
            ),
        )

    def _write_metrics(self, daemon: Daemon) -> None:
        path = daemon.config.service.metrics_textfile
        if path is None:
            return
        copied, uploaded = daemon.ledger.byte_totals()
        oldest = daemon.ledger.oldest_pending_at()
        snapshot = MetricsSnapshot(
            dock_id=daemon.config.dock.id,
            clips_by_state=daemon.ledger.counts_by_state(),
            bytes_copied_total=copied,
            bytes_uploaded_total=uploaded,
            oldest_pending_seconds=(datetime.now(UTC) - oldest).total_seconds() if oldest else None,
            cameras_docked=len(daemon.docked_progress()),
            staging_free_bytes=_free(daemon),
            storage_reachable={StorageState.OK: True, StorageState.UNKNOWN: None}.get(
                daemon.storage_state, False
            ),
            errors_total=dict(daemon.error_counts),
            alarms={str(kind): active for kind, active in self.alarms.states().items()},
            last_loop_timestamp=time.time(),
        )
        try:
            write_textfile(path, snapshot)
        except OSError as error:
            log.warning("metrics.write_failed", path=str(path), error=str(error))

    def reloading(self) -> None:
        self.notifier.reloading()

    def reloaded(self) -> None:
        self.notifier.ready(self._last_status or None)

    def stopping(self) -> None:
        self.notifier.stopping("stopping: checkpointing work in flight")


def _free(daemon: Daemon) -> int:
    try:
        return daemon.staging.free_bytes()
    except OSError:
        return 0
