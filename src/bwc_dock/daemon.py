"""The daemon: sources feed dockings into the ledger; copier and uploader workers drain it.

Threads: one per copier worker (each takes one docked camera at a time, so several
cameras are offloaded in parallel up to ``copy_workers``), one per uploader worker, an
anchorer, the signals thread (``signals.py``), the sources' own listener threads, and the
main loop here (heartbeat, rescans, retention, finished offloads, service hooks). All
work state lives in the ledger; the registry of docked cameras (``docked.py``) only
remembers which volume is docked and which copier reads which camera.

Rooms of its own: the status it reports and the errors it counts (``daemon_status.py``),
the main loop's timers (``daemon_timers.py``), a SIGHUP reload (``daemon_reload.py``).
Only the main loop replaces ``config`` (at a reload); other threads read it whole.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import structlog

from bwc_dock.bandwidth import BandwidthLimiter
from bwc_dock.clearer import clear_when_verified
from bwc_dock.config import Config
from bwc_dock.custody import anchor_dockings
from bwc_dock.daemon_reload import Reloader
from bwc_dock.daemon_status import ErrorTally, StatusAssembly, StoreFindings, staging_free_bytes
from bwc_dock.daemon_timers import MainLoopTimers, main_loop_timers
from bwc_dock.docked import Docked, DockedRegistry
from bwc_dock.errors import BwcDockError, Interrupted, PermanentStorageError
from bwc_dock.fleet import FleetPublisher, fleet_publisher
from bwc_dock.found import DockedVolume
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.leases import current_owner
from bwc_dock.ledger.models import Docking, utc_now
from bwc_dock.recovery import StorageRecovery, recover
from bwc_dock.scanning import BackgroundScans, scan_into_ledger, set_clock_after_offload
from bwc_dock.scheduler import Scheduler
from bwc_dock.service import DaemonStatus, ServiceHooks
from bwc_dock.signals import SignalWatcher
from bwc_dock.sources.base import Source, SourceListener, UnreadableCamera
from bwc_dock.storage.base import StorageBackend
from bwc_dock.storage_health import StorageHealth
from bwc_dock.uploader import report_refusal_once
from bwc_dock.wiring import Stages

log = structlog.get_logger(__name__)

IDLE_WAIT_SECONDS = 1.0
# a missing or stale SHA256SUMS (a crash or a storage error as it was written) is
# written again at start and then every [storage] sums_interval_seconds, by the
# anchorer thread; start-up recovery's storage part, when it did not complete, is run
# again this often
RECOVERY_RETRY_SECONDS = 15.0


class Daemon(SourceListener):
    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        backend: StorageBackend,
        sources: list[Source],
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.ledger = ledger
        self.backend = backend
        self.sources = sources
        self.stages = Stages(config, ledger, backend)
        self.staging = self.stages.staging
        self.owner = current_owner("daemon")
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()
        self.scheduler = Scheduler(  # the worker loops, the same ones `ingest` runs
            self.stages, self.stop_event, self.wake_event, idle_seconds=IDLE_WAIT_SECONDS
        )
        self.reload_requested = threading.Event()
        self.signals = SignalWatcher(self.stop_event, self.wake_event, self.reload_requested)
        self.docked_cameras = DockedRegistry()
        self.scans = BackgroundScans()  # off the sources' threads and the main loop
        self.storage = StorageHealth(self.stages.lock_probe)  # the Object Lock probe too
        self.storage_recovery = StorageRecovery(config, ledger, backend)
        self._lock = threading.Lock()  # the refusals reported so far
        self._threads: list[threading.Thread] = []
        self._started_at = utc_now()
        self._refusals_reported: set[str] = set()
        self.errors = ErrorTally()  # written by every thread
        self._status = StatusAssembly(
            ledger, self.staging, self.docked_cameras, self.storage, self.errors
        )
        self.reloader = (
            None if config_path is None
            else Reloader(config_path, config, self._started_at, self.sources, self)
        )
        self.hooks: ServiceHooks | None = None  # watchdog, STATUS, alarms, metrics
        self.fleet: FleetPublisher | None = None  # the status document for `bwc-dock fleet`
        self._bandwidth = (
            BandwidthLimiter(config.storage.bandwidth) if config.storage.bandwidth else None
        )

    # -- SourceListener ---------------------------------------------------------------

    def docked(self, volume: DockedVolume) -> None:
        """A source reports a volume; a failure here is retried, never dropped."""
        try:
            docking_id = self.ledger.record_docking(volume, self.owner)
        except Exception as error:  # noqa: BLE001 - the ledger may be briefly unusable
            log.error(
                "dock.record_failed",
                camera=volume.camera_serial,
                device=volume.device,
                error=str(error),
                retry="at the next rescan",
            )
            self.docked_cameras.add_unrecorded(volume)
            return
        source = next((s for s in self.sources if s.name == volume.source), None)
        entry = Docked(docking_id, volume, source)
        self.docked_cameras.add(entry)
        self._scan(entry)
        self.wake_event.set()

    def _scan(self, entry: Docked) -> None:
        """Scan in the background; a scan of this docking still running is left to finish."""
        self.scans.start(entry.docking_id, lambda: self._scan_now(entry))

    def _scan_now(self, entry: Docked) -> None:
        try:
            _new, result = scan_into_ledger(
                self.ledger, self.config, entry.docking_id, entry.volume, cancel=entry.cancel,
                central=self.backend,
            )
            entry.scan_incomplete = result.incomplete or ""
            entry.scanned = True
            self.wake_event.set()  # copiers look at the new clips at once
        except Interrupted:
            return  # undocked or stopping: a scan ended early records nothing
        except Exception as error:  # noqa: BLE001 - camera read or ledger write failed
            log.warning(
                "dock.scan_failed",
                camera=entry.volume.camera_serial,
                error=str(error),
                retry="at the next rescan",
            )

    def undocked(self, device: str) -> None:
        docked = self.docked_cameras.undock(device)
        if docked is None:
            return
        docked.cancel.set()  # a copy in progress stops at its next chunk
        self.ledger.end_docking(docked.docking_id, "device removed")

    def unreadable(self, camera: UnreadableCamera) -> None:
        self.docked_cameras.add_unreadable(camera)
        self.wake_event.set()  # the main loop raises the alarm at its next turn

    def readable_again(self, device: str) -> None:
        self.docked_cameras.readable_again(device)

    # -- running ------------------------------------------------------------------------

    def run(self) -> int:
        self.signals.install()
        self.hooks = ServiceHooks(self.config.alarms)
        self.fleet = fleet_publisher(self.config)
        self.recover()
        freeze_startup_objects()
        for source in self.sources:
            source.start(self)
        self._start_workers()
        log.info(
            "daemon.started",
            dock=self.config.dock.id,
            pid=os.getpid(),
            copy_workers=self.config.dock.copy_workers,
            upload_workers=self.config.dock.upload_workers,
            storage=self.config.storage.backend,
        )
        try:
            self._main_loop()
        finally:
            self.shutdown()
        return 0

    def recover(self) -> dict[str, int]:
        """Put everything a crash left behind back into a state work resumes from."""
        return recover(self.config, self.ledger, self.storage_recovery, self.owner, self._adopt)

    def _adopt_handed_over(self) -> None:
        """Take over folders a hand-run ``ingest`` handed to us (ownerless dockings)."""
        adopted = self.ledger.adopt_dockings(self.owner, frozenset({"ingest"}))
        for docking in adopted:
            log.info(
                "dock.adopted",
                camera=docking.camera_serial,
                docking=docking.id,
                device=docking.device,
            )
            self._adopt(docking)
        if adopted:
            self.wake_event.set()

    def _adopt(self, docking: Docking) -> None:
        volume = DockedVolume(
            source=docking.source,
            device=docking.device,
            root=Path(docking.volume_root),
            camera_serial=docking.camera_serial,
        )
        self.docked_cameras.add(Docked(docking.id, volume, None, scanned=True))

    def _start_workers(self) -> None:
        for number in range(self.config.dock.copy_workers):
            self._spawn(f"copier-{number}", self._copier_loop)
        for number in range(self.config.dock.upload_workers):
            self._spawn(f"uploader-{number}", self._uploader_loop)
        self._spawn("anchorer", self._anchor_loop)
        if self.fleet is not None:  # not joined at shutdown: a hung store must not hold it
            fleet = self.fleet
            threading.Thread(target=lambda: fleet.run(self.stop_event), name="fleet",
                             daemon=True).start()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._guarded(name, target), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _guarded(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        """The error boundary of a worker: log, pause, carry on; the daemon stays up."""

        def run() -> None:
            while not self.stop_event.is_set():
                try:
                    target()
                except Exception as error:
                    self.errors.note(f"{name}: {error}")
                    log.exception("worker.crashed", worker=name, error=str(error))
                    self.stop_event.wait(5)

        return run

    def _anchor_loop(self) -> None:
        """Write missing or stale SHA256SUMS (recover() did so at start) in a thread of
        its own: a store that hangs must not hold the main loop and its watchdog pings.
        Until start-up recovery's storage part has completed, it runs that instead."""
        recovery = self.storage_recovery
        while not self.stop_event.wait(
            self.config.storage.sums_interval_seconds
            if recovery.completed
            else RECOVERY_RETRY_SECONDS
        ):
            if self.storage.known_down:  # known down: the next round will do
                continue
            if recovery.completed:
                anchor_dockings(self.ledger, self.backend)
            else:
                recovery.retry()  # it anchors too

    def _copier_loop(self) -> None:
        copier = self.stages.copier(current_owner(), self.wake_event.set)
        self.scheduler.copy_cameras(copier, self._take_docking, self.docked_cameras.put_back)

    def _take_docking(self) -> Docked | None:
        """A docked camera with clips to copy that no other copier is reading."""
        return self.docked_cameras.take(
            threading.current_thread().name,
            lambda docked: self.ledger.copy_pending(docked.volume.camera_serial) > 0,
        )

    def _uploader_loop(self) -> None:
        uploader = self.stages.uploader(
            current_owner(), self._upload_progress, self._storage_refused
        )
        self.scheduler.upload_until(uploader)  # until the daemon stops

    def _upload_progress(self, count: int) -> None:
        if self.stop_event.is_set():
            raise Interrupted("shutting down")
        if self._bandwidth is not None:
            self._bandwidth(count)  # one limiter for the whole dock, shared by all uploaders

    def _storage_refused(self, error: PermanentStorageError) -> None:
        report_refusal_once(error, self._refusals_reported, self._lock)
        self.storage.refused()
        self.errors.note(str(error), "storage_refused")

    def _main_loop(self) -> None:
        timers = main_loop_timers(lambda: self.config, self.staging, time.monotonic())
        while not self.signals.stop_requested():
            try:
                self._tick(timers, time.monotonic())
            except Exception as error:
                # e.g. the ledger's disk full for a moment: log, and try again next turn
                self.errors.note(f"main loop: {error}", "main_loop")
                log.exception("daemon.tick_failed", error=str(error))
            self.stop_event.wait(IDLE_WAIT_SECONDS)

    def _tick(self, timers: MainLoopTimers, now: float) -> None:
        """One turn of the main loop: reload, storage check, rescans, purge, offloads,
        heartbeat, service hooks (watchdog, STATUS, alarms, metrics)."""
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload()
        if timers.storage_check.due(now):
            self._check_storage()
        if timers.rescan.due(now):
            self._rescan()
        if timers.purge.due(now):
            self.purge_staging()
        self._adopt_handed_over()
        self._finish_offloads()
        if timers.heartbeat.due(now):
            self._beat()
        if self.hooks is not None:
            self.hooks(self.status)
            if self.fleet is not None:  # hands the document to its thread, never waits
                self.fleet.tick(self.status, self.hooks.alarms.active)

    def _check_storage(self) -> None:
        error = self.storage.check(self.backend)
        if error is not None:
            self.errors.note(str(error), "storage_unreachable")

    def _rescan(self) -> None:
        for source in self.sources:
            try:
                source.rescan()
            except BwcDockError as error:
                log.warning("source.rescan_failed", source=source.name, error=str(error))
        for volume in self.docked_cameras.unrecorded():
            self.docked(volume)
        for entry in self.docked_cameras.everything():
            # a volume that may fill up while docked is scanned again; so is a failed scan
            if (entry.capabilities.rescans_while_docked or not entry.scanned) and (
                not entry.cancel.is_set()
            ):
                self._scan(entry)

    def _finish_offloads(self) -> None:
        """Release volumes whose clips are all off the camera (and cleared, if asked)."""
        for docked in self.docked_cameras.idle():
            camera = docked.volume.camera_serial
            if self.ledger.needing_camera(camera) > 0:
                continue  # not yet staged, or staged and not yet verified (if damaged, it
                # is read off the camera again)
            if docked.scan_incomplete:
                # files past the scan's cut are still on it: not done, so neither cleared
                # nor released; it stays docked, its alarm up, until it leaves the dock
                continue
            if not docked.finished_logged:
                docked.finished_logged = True
                log.info("dock.offload_done", camera=camera, docking=docked.docking_id)
                self._set_camera_clock(docked)
            if not docked.capabilities.releases_after_offload:
                continue  # e.g. a watch folder stays docked until it is removed
            clearing = self._clearing_source(docked)
            if clearing is not None and not clear_when_verified(
                self.ledger, docked.volume, clearing
            ):
                continue  # uploads still to be verified: keep the camera mounted
            self.docked_cameras.discard(docked)
            if docked.source is not None:
                docked.source.release(docked.volume)
            self.ledger.end_docking(docked.docking_id, "offload done")

    def _set_camera_clock(self, docked: Docked) -> None:
        try:
            set_clock_after_offload(self.ledger, self.config, docked.docking_id, docked.volume)
        except Exception as error:  # noqa: BLE001 - a camera's clock tool must not stop the loop
            log.warning(
                "camera.clock_set_failed", camera=docked.volume.camera_serial, error=str(error)
            )

    def _clearing_source(self, docked: Docked) -> Source | None:
        """The source to clear the camera through, when its profile asks for clearing."""
        profile = self.config.profile(docked.volume.profile_name or "")
        if profile and profile.clear_after_upload and docked.capabilities.clears_after_upload:
            return docked.source
        return None

    def purge_staging(self) -> int:
        """Delete staged copies of uploaded clips once past retention; while copying waits
        for space, also younger ones (verified in central storage already), but only as
        many as the waiting clip needs: one clip must not empty staging."""
        now = utc_now()
        retention = timedelta(hours=self.config.dock.staged_retention_hours)
        purged = self.staging.purge_uploaded(self.ledger, now - retention)
        if self.staging.paused:
            purged += self.staging.make_room(self.ledger, now)
        return purged

    @property
    def restart_needed(self) -> tuple[str, ...]:
        return () if self.reloader is None else self.reloader.restart_needed

    def status_line(self) -> str:
        return self._status.line(self.scans.count(), self.restart_needed)

    def status(self) -> DaemonStatus:
        """What the service hooks report, read now (a frozen value: they never see us)."""
        return self._status.read(
            self.config,
            self.scans.count(),
            self.restart_needed,
            self.stages.lock_probe.unenforced,
            StoreFindings(
                recovery_failure=self.storage_recovery.failure,
                root_changed=self.storage_recovery.root_changed,
                fleet_key_conflict=self.fleet.key_conflict if self.fleet is not None else "",
            ),
        )

    def _status_line_with_alarms(self) -> str:
        """The status line now, with the active alarms, as systemd shows it: `bwc-dock
        status` prints it from the heartbeat (the hooks' own copy is refreshed only at
        each alarm check, too seldom to show a scan of seconds)."""
        line = self.status_line()
        summary = self.hooks.alarms.summary() if self.hooks is not None else ""
        return f"{line} · {summary}" if summary else line

    def _beat(self) -> None:
        reachable = self.storage.reachable
        self.ledger.beat(
            socket.gethostname(),
            os.getpid(),
            self._started_at,
            status_line=self._status_line_with_alarms(),
            storage_reachable=None if reachable is None else int(reachable),
            staging_free_bytes=staging_free_bytes(self.staging),
            last_error=self.errors.last,
        )

    def reload(self) -> None:
        """SIGHUP: apply a new configuration, or keep the running one if it is bad; what
        only a restart can change is named (daemon_reload.py)."""
        if self.reloader is None:
            return
        if self.hooks is not None:
            self.hooks.reloading()
        try:
            self.config = self.reloader.reload(self.config)
        finally:
            if self.hooks is not None:
                self.hooks.reloaded()

    def shutdown(self) -> None:
        if self.hooks is not None:
            self.hooks.stopping()
        self.stop_event.set()
        self.wake_event.set()
        self.docked_cameras.cancel_all()
        for thread in self._threads:
            thread.join(timeout=30)
        for source in self.sources:
            source.stop()
        for docked in self.docked_cameras.clear():  # the next start re-docks what is present
            self.ledger.end_docking(docked.docking_id, "daemon stopped")
        self.ledger.beat(
            socket.gethostname(),
            0,
            self._started_at,
            status_line="stopped",
            last_error=self.errors.last,
        )
        log.info("daemon.stopped")


def freeze_startup_objects() -> None:
    """Leave what start-up built (the imported modules, the config, the S3 client's
    service model) out of every later garbage collection: it lives as long as the
    daemon, and each full collection walked all of it again (some 240,000 objects,
    about 50 ms each time, which showed as a sixth of the daemon's CPU while clips
    streamed in). Garbage is collected first, so none of it is kept for good."""
    gc.collect()
    gc.freeze()
