"""The daemon's face to systemd and monitoring: sd_notify, alarms, Prometheus textfile.

Called from the daemon's main loop with a way to read a :class:`DaemonStatus`, a frozen
value the daemon builds; the hooks never see the daemon itself. READY=1 is sent after
start-up recovery; STATUS= is kept current; WATCHDOG=1 proves the main loop turns;
alarms are raised and cleared once each (journald at warning/error priority, in STATUS
and in the metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from bwc_dock.alarms import (
    AlarmBoard,
    CameraFinding,
    DockedCamera,
    IncompleteScan,
    Observation,
    StorageState,
    UnmountableCamera,
    log_transition,
)
from bwc_dock.config import AlarmsConfig
from bwc_dock.metrics import MetricsSnapshot, write_textfile
from bwc_dock.systemd_notify import Notifier, watchdog_interval

log = structlog.get_logger(__name__)

ALARM_CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class DaemonStatus:
    """What the running daemon reports to systemd and monitoring, taken at one moment."""

    dock_id: str
    alarms_config: AlarmsConfig  # a SIGHUP may change thresholds
    metrics_textfile: Path | None
    status_line: str
    clips_by_state: Mapping[str, int]
    oldest_pending_at: datetime | None
    staging_free_bytes: int | None  # None when it cannot be read: unknown, never zero
    staging_reserve_bytes: int
    storage: StorageState
    last_error: str | None
    docked: tuple[DockedCamera, ...]
    unmountable: tuple[UnmountableCamera, ...]  # docked cameras that cannot be read
    error_counts: Mapping[str, int]
    # (bytes copied off cameras, bytes confirmed in central storage), ever; read from the
    # ledger only when there is a metrics textfile to write them to
    byte_totals: tuple[int, int] | None
    # what the Object Lock probe found the store allowing ("" when it refused it all)
    lock_unenforced: str = ""
    dock_clock_synchronized: bool | None = None  # adjtimex, read with the status
    camera_clock_offsets: Mapping[str, float | None] = field(default_factory=dict)
    max_clock_offset_seconds: float = 30.0
    dock_clock_alarm: bool = True  # [dock] clock_sync_alarm
    # gaps and vanished files that recent dockings found on cameras
    camera_findings: tuple[CameraFinding, ...] = ()
    # why start-up recovery's storage part failed; "" once a run of it succeeded
    storage_recovery_failure: str = ""
    # the storage folder is not the last run's, and what its re-check found; "" when not
    storage_root_changed: str = ""
    fleet_key_conflict: str = ""  # another key is registered for this dock id
    # docked cameras whose last scan stopped at the entry or time budget
    incomplete_scans: tuple[IncompleteScan, ...] = ()


StatusReader = Callable[[], DaemonStatus]


class ServiceHooks:
    def __init__(self, alarms_config: AlarmsConfig) -> None:
        self.notifier = Notifier()
        self.alarms = AlarmBoard(alarms_config)
        self.watchdog_every = watchdog_interval()
        self._last_watchdog = 0.0
        self._last_alarm_check = 0.0
        self._last_status = ""
        self._ready_sent = False

    def __call__(self, read_status: StatusReader) -> None:
        """One turn of the main loop; ``read_status`` is called only when it is needed."""
        now = time.monotonic()
        if self.watchdog_every is not None and now - self._last_watchdog >= self.watchdog_every:
            self.notifier.watchdog()
            self._last_watchdog = now
        if now - self._last_alarm_check < ALARM_CHECK_SECONDS and self._ready_sent:
            return
        self._last_alarm_check = now
        status = read_status()
        self.alarms.config = status.alarms_config
        for transition in self.alarms.observe(_observation(status)):
            log_transition(log, transition)
        line = status.status_line
        summary = self.alarms.summary()
        if summary:
            line = f"{line} · {summary}"
        if not self._ready_sent:
            self.notifier.ready(line)
            self._ready_sent = True
        elif line != self._last_status:
            self.notifier.status(line)
        self._last_status = line
        self._write_metrics(status)

    def _write_metrics(self, status: DaemonStatus) -> None:
        path = status.metrics_textfile
        if path is None or status.byte_totals is None:
            return
        copied, uploaded = status.byte_totals
        oldest = status.oldest_pending_at
        snapshot = MetricsSnapshot(
            dock_id=status.dock_id,
            clips_by_state=dict(status.clips_by_state),
            bytes_copied_total=copied,
            bytes_uploaded_total=uploaded,
            oldest_pending_seconds=(datetime.now(UTC) - oldest).total_seconds() if oldest else None,
            cameras_docked=len(status.docked),
            staging_free_bytes=status.staging_free_bytes,
            storage_reachable={StorageState.OK: True, StorageState.UNKNOWN: None}.get(
                status.storage, False
            ),
            errors_total=dict(status.error_counts),
            alarms={str(kind): active for kind, active in self.alarms.states().items()},
            last_loop_timestamp=time.time(),
            dock_clock_synchronized=status.dock_clock_synchronized,
            camera_clock_offsets=status.camera_clock_offsets,
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


def _observation(status: DaemonStatus) -> Observation:
    return Observation(
        now=datetime.now(UTC),
        oldest_pending_at=status.oldest_pending_at,
        staging_free_bytes=status.staging_free_bytes,
        staging_reserve_bytes=status.staging_reserve_bytes,
        storage=status.storage,
        storage_error=status.last_error or "",
        quarantined_clips=status.clips_by_state["quarantined"],
        docked=status.docked,
        unmountable=status.unmountable,
        lock_unenforced=status.lock_unenforced,
        dock_clock_synchronized=status.dock_clock_synchronized
        if status.dock_clock_alarm
        else None,
        camera_clock_offsets=status.camera_clock_offsets,
        max_clock_offset_seconds=status.max_clock_offset_seconds,
        camera_findings=status.camera_findings,
        storage_recovery_failure=status.storage_recovery_failure,
        storage_root_changed=status.storage_root_changed,
        fleet_key_conflict=status.fleet_key_conflict,
        incomplete_scans=status.incomplete_scans,
    )
