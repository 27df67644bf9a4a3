"""The daemon: sources feed dockings into the ledger; copier and uploader workers drain it.

Threads: one per copier worker (each takes one docked camera at a time, so several
cameras are offloaded in parallel up to ``copy_workers``), one per uploader worker,
the sources' own listener threads, and the main loop (heartbeat, rescans, retention,
finished offloads, signals). All work state lives in the ledger; the maps here only
remember which volume is mounted where and which copier reads which camera.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

import structlog

from bwc_dock.alarms import StorageState
from bwc_dock.bandwidth import BandwidthLimiter
from bwc_dock.clearer import clear_camera, clearable, ready_to_clear
from bwc_dock.config import CameraProfile, Config, load_config
from bwc_dock.copier import Copier, StagingArea
from bwc_dock.custody import anchor_dockings
from bwc_dock.errors import (
    BwcDockError,
    ConfigError,
    Interrupted,
    PermanentStorageError,
    StorageError,
)
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.leases import current_owner
from bwc_dock.ledger.models import Docking, utc_now
from bwc_dock.scanner import ScanLimits, ScanResult, scan_volume
from bwc_dock.service import ServiceHooks
from bwc_dock.sources.base import DockedVolume, Source, SourceListener, UnreadableCamera
from bwc_dock.storage.base import StorageBackend
from bwc_dock.uploader import Uploader, report_refusal_once

log = structlog.get_logger(__name__)

IDLE_WAIT_SECONDS = 1.0
PURGE_INTERVAL_SECONDS = 60.0
PAUSED_PURGE_INTERVAL_SECONDS = 2.0
STORAGE_CHECK_SECONDS = 30.0
# a missing or stale SHA256SUMS (a crash or a storage error as it was written) is
# written again at start and then this often, by the anchorer thread
ANCHOR_INTERVAL_SECONDS = 60.0
DEFAULT_FOLDER_PROFILE = CameraProfile(name="folder", serial_source="folder")


def folder_profile(config: Config) -> CameraProfile:
    """The profile for watch folders and hand-run ingest: the first one without USB ids."""
    return next((p for p in config.camera if p.usb_vendor_id is None), DEFAULT_FOLDER_PROFILE)


def scan_limits(config: Config) -> ScanLimits:
    return ScanLimits(
        max_file_size=int(config.dock.max_clip_size_gb * 1024**3),
        max_depth=config.dock.max_scan_depth,
        max_entries=config.dock.max_scan_entries,
    )


def scan_into_ledger(
    ledger: Ledger, config: Config, docking_id: int, volume: DockedVolume
) -> tuple[list[int], ScanResult]:
    """Scan a volume and record what is new; (ids of new clips, what the scan found)."""
    profile = config.profile(volume.profile_name or "") or folder_profile(config)
    result = scan_volume(volume.root, profile, scan_limits(config))
    new_ids = ledger.record_scan(
        docking_id, result.clips, len(result.refused), priority=profile.priority
    )
    log.info(
        "dock.scanned",
        camera=volume.camera_serial,
        docking=docking_id,
        clips=len(result.clips),
        new=len(new_ids),
        refused=len(result.refused),
    )
    return new_ids, result


@dataclass
class _Docked:
    docking_id: int
    volume: DockedVolume
    source: Source | None
    cancel: threading.Event = field(default_factory=threading.Event)
    reader: str | None = None  # the copier worker reading it now
    finished_logged: bool = False
    last_progress_at: datetime = field(default_factory=utc_now)
    # False until a scan of the volume succeeded: an unscanned camera is never "done"
    scanned: bool = False


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
        self.staging = StagingArea(config.staging_dir, config.dock.staging_reserve_mb * 1024**2)
        self.owner = current_owner("daemon")
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()
        self.reload_requested = threading.Event()
        # set by the signal handlers, acted on by the main loop (see _install_signal_handlers)
        self._stop_signal: int | None = None
        self._hangup_received = False
        self._signal_lock = threading.Lock()  # the main loop and the signals thread
        self._signal_sockets: tuple[socket.socket, socket.socket] | None = None
        self._docked: dict[str, _Docked] = {}
        self._unrecorded: dict[str, DockedVolume] = {}  # dockings the ledger did not take yet
        self._unreadable: dict[str, UnreadableCamera] = {}  # docked, but cannot be mounted
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started_at = utc_now()
        self._storage_reachable: bool | None = None
        self._storage_was_refused = False
        self._refusals_reported: set[str] = set()
        self._last_error: str | None = None
        self.error_counts: dict[str, int] = {}
        self.on_tick: list[Callable[[Daemon], None]] = []  # hooks: watchdog, status, metrics
        self.hooks: ServiceHooks | None = None
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
            with self._lock:
                self._unrecorded[volume.device] = volume
            return
        source = next((s for s in self.sources if s.name == volume.source), None)
        entry = _Docked(docking_id, volume, source)
        with self._lock:
            self._unrecorded.pop(volume.device, None)
            self._docked[volume.device] = entry
        self._scan(entry)
        self.wake_event.set()

    def _scan(self, entry: _Docked) -> None:
        try:
            scan_into_ledger(self.ledger, self.config, entry.docking_id, entry.volume)
            entry.scanned = True
        except Exception as error:  # noqa: BLE001 - camera read or ledger write failed
            log.warning(
                "dock.scan_failed",
                camera=entry.volume.camera_serial,
                error=str(error),
                retry="at the next rescan",
            )

    def undocked(self, device: str) -> None:
        with self._lock:
            self._unrecorded.pop(device, None)
            docked = self._docked.pop(device, None)
        if docked is None:
            return
        docked.cancel.set()  # a copy in progress stops at its next chunk
        self.ledger.end_docking(docked.docking_id, "device removed")

    def unreadable(self, camera: UnreadableCamera) -> None:
        with self._lock:
            self._unreadable[camera.device] = camera
        self.wake_event.set()  # the main loop raises the alarm at its next turn

    def readable_again(self, device: str) -> None:
        with self._lock:
            self._unreadable.pop(device, None)

    def unreadable_cameras(self) -> list[UnreadableCamera]:
        """Docked cameras that cannot be mounted (for the alarm)."""
        with self._lock:
            return list(self._unreadable.values())

    # -- running ------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        self.hooks = ServiceHooks(self)
        self.on_tick.append(self.hooks)
        self.recover()
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
        summary: dict[str, int] = {}
        for state, count in self.ledger.recover_leases(all_expired=True).items():
            summary[f"returned_to_{state}"] = count
        for docking in self.ledger.adopt_dockings(self.owner, frozenset({"ingest"})):
            self._adopt(docking)
            summary["ingest_dockings_adopted"] = summary.get("ingest_dockings_adopted", 0) + 1
        summary["dockings_ended"] = self.ledger.end_stale_dockings()
        summary["staging_partials_removed"] = self._remove_staging_partials()
        try:
            summary["storage_partials_removed"] = self.backend.cleanup_partials(
                keep=self.ledger.wanted_upload_ids()
            )
            summary["sums_written"] = anchor_dockings(self.ledger, self.backend)
        except StorageError as error:
            # unreachable: no anchoring now either (the anchorer thread tries every minute)
            log.warning("recovery.storage_unreachable", error=str(error))
            summary["sums_written"] = 0
        log.info("daemon.recovered", **summary)
        return summary

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
        with self._lock:
            self._docked[docking.device] = _Docked(docking.id, volume, None, scanned=True)

    def _remove_staging_partials(self) -> int:
        removed = 0
        clips_root = self.config.staging_dir / "clips"
        if not clips_root.is_dir():
            return 0
        leased = self.ledger.leased_clip_ids()  # dead workers' leases are released already
        for leftover in clips_root.glob("*/*.part"):
            if leftover.parent.name.isdigit() and int(leftover.parent.name) in leased:
                continue  # a hand-run command beside us is writing it right now
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def _start_workers(self) -> None:
        for number in range(self.config.dock.copy_workers):
            self._spawn(f"copier-{number}", self._copier_loop)
        for number in range(self.config.dock.upload_workers):
            self._spawn(f"uploader-{number}", self._uploader_loop)
        self._spawn("anchorer", self._anchor_loop)

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
                    self._last_error = f"{name}: {error}"
                    log.exception("worker.crashed", worker=name, error=str(error))
                    self.stop_event.wait(5)

        return run

    def _anchor_loop(self) -> None:
        """Write missing or stale SHA256SUMS (recover() did so at start) in a thread of
        its own: a store that hangs must not hold the main loop and its watchdog pings."""
        while not self.stop_event.wait(ANCHOR_INTERVAL_SECONDS):
            if self._storage_reachable is not False:  # known down: the next round will do
                anchor_dockings(self.ledger, self.backend)

    def _copier_loop(self) -> None:
        copier = Copier(self.ledger, self.staging, current_owner(), self.wake_event.set)
        while not self.stop_event.is_set():
            docked = self._take_docking()
            if docked is None:
                self._idle()
                continue
            try:
                while not self.stop_event.is_set() and not docked.cancel.is_set():
                    if not copier.copy_next(
                        docked.cancel, docked.docking_id, verify_in_background=True
                    ):
                        break
                    docked.last_progress_at = utc_now()
                if self.staging.paused:
                    self.stop_event.wait(IDLE_WAIT_SECONDS)
            finally:
                with self._lock:
                    docked.reader = None
        copier.wait_verified()  # the clip being verified reaches staged before we stop

    def _take_docking(self) -> _Docked | None:
        """A docked camera with clips to copy that no other copier is reading."""
        me = threading.current_thread().name
        with self._lock:
            candidates = [
                d
                for d in self._docked.values()
                if d.reader is None and not d.cancel.is_set() and d.scanned
            ]
        for docked in candidates:
            if self.ledger.copy_pending(docked.volume.camera_serial) == 0:
                continue
            with self._lock:
                if docked.reader is None:
                    docked.reader = me
                    return docked
        return None

    def _uploader_loop(self) -> None:
        uploader = Uploader(
            self.ledger,
            self.backend,
            self.config.staging_dir,
            self.config.storage,
            current_owner(),
            self._upload_progress,
            self._storage_refused,
        )
        while not self.stop_event.is_set():
            if not uploader.upload_next():
                self._idle()

    def _upload_progress(self, count: int) -> None:
        if self.stop_event.is_set():
            raise Interrupted("shutting down")
        if self._bandwidth is not None:
            self._bandwidth(count)  # one limiter for the whole dock, shared by all uploaders

    def _storage_refused(self, error: PermanentStorageError) -> None:
        report_refusal_once(error, self._refusals_reported, self._lock)
        self._storage_reachable = False
        self._storage_was_refused = True
        self._last_error = str(error)
        self._count_error("storage_refused")

    def _count_error(self, kind: str) -> None:
        self.error_counts[kind] = self.error_counts.get(kind, 0) + 1

    @property
    def storage_state(self) -> StorageState:
        if self._storage_reachable is None:
            return StorageState.UNKNOWN
        if self._storage_reachable:
            return StorageState.OK
        return StorageState.REFUSED if self._storage_was_refused else StorageState.UNREACHABLE

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def docked_progress(self) -> list[tuple[str, int, datetime]]:
        """(camera serial, clips still on the camera only, last progress) per docked camera."""
        with self._lock:
            docked = list(self._docked.values())
        return [
            (
                d.volume.camera_serial,
                self.ledger.copy_pending(d.volume.camera_serial),
                d.last_progress_at,
            )
            for d in docked
        ]

    def _idle(self) -> None:
        self.wake_event.wait(IDLE_WAIT_SECONDS)
        self.wake_event.clear()

    def _main_loop(self) -> None:
        timers = {"beat": 0.0, "rescan": time.monotonic(), "purge": 0.0, "storage": 0.0}
        while not self._stop_requested():
            try:
                self._tick(timers, time.monotonic())
            except Exception as error:
                # e.g. the ledger's disk full for a moment: log, and try again next turn
                self._last_error = f"main loop: {error}"
                self._count_error("main_loop")
                log.exception("daemon.tick_failed", error=str(error))
            self.stop_event.wait(IDLE_WAIT_SECONDS)

    def _tick(self, timers: dict[str, float], now: float) -> None:
        """One turn of the main loop: reload, storage check, rescans, purge, offloads,
        heartbeat, service hooks (watchdog, STATUS, alarms, metrics)."""
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload()
        if now - timers["storage"] >= STORAGE_CHECK_SECONDS:
            timers["storage"] = now
            self._check_storage()
        if now - timers["rescan"] >= self.config.sources.rescan_interval_seconds:
            timers["rescan"] = now
            self._rescan()
        # a paused copier waits for space: purge uploaded copies promptly then
        purge_every = (
            PAUSED_PURGE_INTERVAL_SECONDS if self.staging.paused else PURGE_INTERVAL_SECONDS
        )
        if now - timers["purge"] >= purge_every:
            timers["purge"] = now
            self.purge_staging()
        self._adopt_handed_over()
        self._finish_offloads()
        if now - timers["beat"] >= self.config.service.heartbeat_seconds:
            timers["beat"] = now
            self._beat()
        for hook in self.on_tick:
            hook(self)

    def _check_storage(self) -> None:
        try:
            self.backend.check_reachable()
            if self._storage_reachable is False:
                log.info("storage.reachable")
            self._storage_reachable = True
            self._storage_was_refused = False
        except StorageError as error:
            if self._storage_reachable is not False:
                log.error("storage.unreachable", error=str(error))
            self._storage_reachable = False
            self._storage_was_refused = isinstance(error, PermanentStorageError)
            self._last_error = str(error)
            self._count_error("storage_unreachable")

    def _rescan(self) -> None:
        for source in self.sources:
            try:
                source.rescan()
            except BwcDockError as error:
                log.warning("source.rescan_failed", source=source.name, error=str(error))
        with self._lock:
            unrecorded = list(self._unrecorded.values())
            docked = list(self._docked.values())
        for volume in unrecorded:
            self.docked(volume)
        for entry in docked:
            # watch folders may fill up while docked; a failed scan is tried again
            if (entry.volume.source == "watch" or not entry.scanned) and (
                not entry.cancel.is_set()
            ):
                self._scan(entry)

    def _finish_offloads(self) -> None:
        """Release volumes whose clips are all off the camera (and cleared, if asked)."""
        with self._lock:
            candidates = [
                d
                for d in self._docked.values()
                if d.reader is None and not d.cancel.is_set() and d.scanned
            ]
        for docked in candidates:
            camera = docked.volume.camera_serial
            if self.ledger.copy_pending(camera) > 0:
                continue
            if not docked.finished_logged:
                docked.finished_logged = True
                log.info("dock.offload_done", camera=camera, docking=docked.docking_id)
            if docked.volume.source == "watch":
                continue  # the folder stays docked until it is removed
            if self._wants_clearing(docked) and not self._clear(docked):
                continue  # uploads still to be verified: keep the camera mounted
            with self._lock:
                self._docked.pop(docked.volume.device, None)
            if docked.source is not None:
                docked.source.release(docked.volume)
            self.ledger.end_docking(docked.docking_id, "offload done")

    def _wants_clearing(self, docked: _Docked) -> bool:
        profile = self.config.profile(docked.volume.profile_name or "")
        return bool(
            profile
            and profile.clear_after_upload
            and docked.source is not None
            and hasattr(docked.source, "writable")
        )

    def _clear(self, docked: _Docked) -> bool:
        """Clear the camera once every clip is verified; True when the docking may end."""
        camera = docked.volume.camera_serial
        ready, reason = ready_to_clear(self.ledger, camera)
        if not ready:
            # a quarantined clip never clears: release the camera with everything on it
            return "quarantined" in reason
        if not clearable(self.ledger, camera):
            return True
        try:
            with docked.source.writable(docked.volume) as root:  # type: ignore[union-attr]
                clear_camera(self.ledger, camera, root, docked.volume.device)
        except (BwcDockError, OSError) as error:
            log.error("clear.failed", camera=camera, error=str(error))
        return True

    def purge_staging(self) -> int:
        """Delete staged copies of uploaded clips once past retention, or at once while
        copying waits for space: they are verified in central storage already."""
        cutoff = utc_now()
        if not self.staging.paused:
            cutoff -= timedelta(hours=self.config.dock.staged_retention_hours)
        return self.staging.purge_uploaded(self.ledger, cutoff)

    def status_line(self) -> str:
        counts = self.ledger.counts_by_state()
        pending = sum(counts[s] for s in ("discovered", "copying", "staged", "uploading"))
        with self._lock:
            cameras = len(self._docked)
        storage = {True: "ok", False: "UNREACHABLE", None: "unknown"}[self._storage_reachable]
        line = f"{cameras} cameras docked · {pending} clips pending · storage {storage}"
        if counts["quarantined"]:
            line += f" · {counts['quarantined']} QUARANTINED"
        return line

    def _beat(self) -> None:
        try:
            free = self.staging.free_bytes()
        except OSError:
            free = None
        self.ledger.beat(
            socket.gethostname(),
            os.getpid(),
            self._started_at,
            status_line=self.status_line(),
            storage_reachable=None
            if self._storage_reachable is None
            else int(self._storage_reachable),
            staging_free_bytes=free,
            last_error=self._last_error,
        )

    def reload(self) -> None:
        """SIGHUP: take a new configuration, or keep the old one if the new one is bad."""
        if self.config_path is None:
            return
        if self.hooks is not None:
            self.hooks.reloading()
        try:
            self._apply_new_config()
        finally:
            if self.hooks is not None:
                self.hooks.reloaded()

    def _apply_new_config(self) -> None:
        assert self.config_path is not None
        try:
            new_config = load_config(self.config_path)
        except ConfigError as error:
            log.error("config.reload_rejected", error=str(error), kept="the running config")
            return
        if new_config.ledger_url != self.config.ledger_url or (
            new_config.storage != self.config.storage
        ):
            log.warning("config.reload_partial", reason="ledger and storage changes need a restart")
        self.config = new_config.model_copy(
            update={"storage": self.config.storage, "dock": self.config.dock}
        )
        log.info("config.reloaded", path=str(self.config_path))

    def _install_signal_handlers(self) -> None:
        """Signals are acted on by a thread of their own, woken through a wakeup fd.

        A Python handler runs in the main thread between two bytecodes, possibly while
        that thread holds the log's write lock or an Event's lock; logging or setting an
        Event there can take the same lock again and hang the daemon for good (seen:
        SIGTERM during the ``daemon.started`` log line). So the handlers only note the
        signal, and the C-level handler writes its number to a socket that the
        ``signals`` thread reads, promptly, in ordinary context.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        receiver, sender = socket.socketpair()
        sender.setblocking(False)
        signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
        self._signal_sockets = (receiver, sender)  # kept open for the life of the daemon

        def note_stop(signum: int, _frame: FrameType | None) -> None:
            self._stop_signal = signum

        def note_hangup(_signum: int, _frame: FrameType | None) -> None:
            self._hangup_received = True

        signal.signal(signal.SIGTERM, note_stop)
        signal.signal(signal.SIGINT, note_stop)
        signal.signal(signal.SIGHUP, note_hangup)
        threading.Thread(
            target=self._signal_loop, args=(receiver,), name="signals", daemon=True
        ).start()

    def _signal_loop(self, receiver: socket.socket) -> None:
        while True:
            try:
                received = receiver.recv(64)
            except OSError as error:
                log.error("daemon.signal_watch_failed", error=str(error))
                return
            if not received:
                return
            # the bytes are the signal numbers, written before the Python handlers run
            for signum in received:
                if signum == signal.SIGHUP:
                    self._hangup_received = True
                elif signum in (signal.SIGTERM, signal.SIGINT):
                    self._stop_signal = signum
            self._stop_requested()

    def _stop_requested(self) -> bool:
        """Act on the signals noted so far; True once the daemon must stop."""
        with self._signal_lock:
            return self._act_on_signals()

    def _act_on_signals(self) -> bool:
        if self._hangup_received:
            self._hangup_received = False
            self.reload_requested.set()
        if self._stop_signal is not None and not self.stop_event.is_set():
            log.info("daemon.stopping", signal=signal.Signals(self._stop_signal).name)
            self.stop_event.set()
            self.wake_event.set()
        return self.stop_event.is_set()

    def shutdown(self) -> None:
        if self.hooks is not None:
            self.hooks.stopping()
        self.stop_event.set()
        self.wake_event.set()
        with self._lock:
            for docked in self._docked.values():
                docked.cancel.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for source in self.sources:
            source.stop()
        with self._lock:
            still_docked = list(self._docked.values())
            self._docked.clear()
        for docked in still_docked:  # the next start re-docks what is still present
            self.ledger.end_docking(docked.docking_id, "daemon stopped")
        self.ledger.beat(
            socket.gethostname(),
            0,
            self._started_at,
            status_line="stopped",
            last_error=self._last_error,
        )
        log.info("daemon.stopped")
