"""The fleet view: each dock's status document in central storage, written (here) and read
(fleet_view.py).

Many docks share one central store and nothing else, so the store is where they report:
the daemon publishes a small JSON document under ``<fleet prefix><dock>.json`` at most
once a minute (the only object bwc-dock ever replaces: it is status, not evidence), and
``bwc-dock fleet`` reads them all. Publishing never touches offloading: the main loop
only hands the latest document to a thread of its own, which writes it through a
storage backend of its own (its own connections, no Object Lock retention); a store
that refuses or hangs costs that thread, never a copier or an uploader.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog

from bwc_dock.alarms import Alarm
from bwc_dock.config import Config
from bwc_dock.errors import (
    BwcDockError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
)
from bwc_dock.fleet_keys import (
    FleetKeyError,
    FleetSigner,
    key_path,
)
from bwc_dock.names import safe_name
from bwc_dock.service import DaemonStatus
from bwc_dock.storage import StorageBackend, open_backend

log = structlog.get_logger(__name__)

SCHEMA = "bwc-dock/fleet-status/1"
SCHEMA_FAMILY = "bwc-dock/fleet-status/"
DOCUMENT_SUFFIX = ".json"
# A status document is a few KiB; anything much larger under the prefix is not ours.
MAX_DOCUMENT_BYTES = 1024 * 1024


def document_key(prefix: str, dock_id: str) -> str:
    """Where a dock's status document lives: the dock id made safe as one key segment."""
    return f"{prefix}{safe_name(dock_id.encode())}{DOCUMENT_SUFFIX}"


def software_version() -> str:
    try:
        return version("bwc-dock")
    except PackageNotFoundError:
        return "unknown"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def status_document(
    status: DaemonStatus,
    alarms: Iterable[Alarm],
    *,
    now: datetime,
    interval_seconds: float,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    """The JSON status document of one dock, from the daemon's status of this moment."""
    return {
        "schema": SCHEMA,
        "dock": status.dock_id,
        "host": socket.gethostname(),
        "version": software_version(),
        # heartbeat_at is read on this dock's clock: whether a time server kept it
        "heartbeat_at": _iso(now),
        "dock_clock_synchronized": status.dock_clock_synchronized,
        "started_at": _iso(started_at),
        "interval_seconds": interval_seconds,
        "clips": dict(status.clips_by_state),
        "oldest_pending_at": _iso(status.oldest_pending_at),
        "alarms": [
            {
                "kind": str(alarm.kind),
                "subject": alarm.camera,
                "severity": alarm.severity,
                "detail": alarm.detail,
            }
            for alarm in alarms
        ],
        "cameras": [
            {
                "serial": camera.serial,
                "pending_clips": camera.pending_clips,
                "last_progress_at": _iso(camera.last_progress_at),
            }
            for camera in status.docked
        ],
        "staging_free_bytes": status.staging_free_bytes,
        "storage": str(status.storage),
    }


def encode(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8")


# -- publishing -----------------------------------------------------------------------


def fleet_backend(config: Config) -> StorageBackend:
    """A backend of its own for fleet writes: the same store (or ``[fleet] bucket`` or
    ``path``), without Object Lock retention, which would keep every minute's version
    for years."""
    storage = config.storage.model_copy(
        update={
            "object_lock_mode": None,
            "object_lock_days": None,
            "bucket": config.fleet.bucket or config.storage.bucket,
            "path": config.fleet.path or config.storage.path,
        }
    )
    return open_backend(config.model_copy(update={"storage": storage}))


def _failure_kind(error: BwcDockError | OSError) -> str:
    """What the operator would fix: one log line per kind, not one per minute."""
    if isinstance(error, PermanentStorageError):
        return f"refused:{error.kind.value}"
    if isinstance(error, TransientStorageError):
        return "unreachable"
    return type(error).__name__


class FleetPublisher:
    """Hands the daemon's status to a publishing thread, at most once per interval.

    :meth:`tick` runs in the daemon's main loop and never waits for the store: when a
    publish is due it builds the document and leaves it for the thread (a newer one
    replaces one not yet sent). :meth:`run` is that thread's body.
    """

    def __init__(
        self,
        backend: StorageBackend,
        key: str,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        signer: FleetSigner | None = None,
    ) -> None:
        self.backend = backend
        self.signer = signer  # None: documents go unsigned (no ssh-keygen, no key)
        self.key = key
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._next_due = 0.0
        self._started_at = datetime.now(UTC)
        self._waiting: dict[str, Any] | None = None
        self._lock = threading.Lock()  # the document waiting, the failures reported
        self._ready = threading.Event()
        self._sending = threading.Event()
        self._failures_reported: set[str] = set()
        self._key_failure_reported = False
        self.published = 0

    def tick(self, read_status: Callable[[], DaemonStatus], alarms: Sequence[Alarm]) -> None:
        """Called every turn of the main loop; builds a document only when one is due."""
        now = self._clock()
        if now < self._next_due:
            return
        self._next_due = now + self.interval_seconds
        if self._sending.is_set():
            # the last publish still hangs on the store: say so once, skip this one
            self._report_failure("slow", "the previous publish has not finished")
            return
        document = status_document(
            read_status(),
            alarms,
            now=datetime.now(UTC),
            interval_seconds=self.interval_seconds,
            started_at=self._started_at,
        )
        with self._lock:
            self._waiting = document
        self._ready.set()

    def run(self, stop: threading.Event) -> None:
        """Publish each document handed over, until ``stop`` is set."""
        while not stop.is_set():
            if not self._ready.wait(timeout=1.0):
                continue
            self._ready.clear()
            with self._lock:
                document, self._waiting = self._waiting, None
            if document is not None:
                self._sending.set()
                try:
                    self.publish(self._stored_form(document))
                except Exception as error:  # this thread's error boundary: log, carry on
                    log.exception("fleet.publish_crashed", key=self.key, error=str(error))
                finally:
                    self._sending.clear()

    @property
    def key_conflict(self) -> str:
        """Another key is registered for this dock id (the fleet_key_conflict alarm)."""
        return "" if self.signer is None else self.signer.conflict

    def _stored_form(self, document: dict[str, Any]) -> bytes:
        """The document signed by this dock's key (registered first, once), else as it is."""
        if self.signer is None:
            return encode(document)
        try:
            self.signer.register(self.backend)
        except StorageError as error:  # not registered yet: sign anyway, register next time
            if not self._key_failure_reported:
                self._key_failure_reported = True
                log.warning("fleet.key_register_failed", key=self.signer.registered_key,
                            error=str(error), retry="at each publish until it is registered")
        try:
            return self.signer.signed(document)
        except FleetKeyError as error:
            self._report_failure("unsigned", str(error))
            return encode(document)

    def publish(self, data: bytes) -> bool:
        """Replace this dock's document; on failure log once per kind and wait for the next."""
        try:
            self.backend.put_bytes(self.key, data, {}, replace=True)
        except (BwcDockError, OSError) as error:
            self._report_failure(_failure_kind(error), str(error))
            return False
        self.published += 1
        with self._lock:
            recovered = bool(self._failures_reported)
            self._failures_reported.clear()
        if recovered:
            log.info("fleet.publish_recovered", key=self.key)
        return True

    def _report_failure(self, kind: str, error: str) -> None:
        """Called from the main loop ("slow") and the publishing thread: one lock for both."""
        with self._lock:
            first = kind not in self._failures_reported
            self._failures_reported.add(kind)
        if not first:
            log.debug("fleet.publish_failed", key=self.key, kind=kind, error=error)
            return
        log.warning(
            "fleet.publish_failed",
            key=self.key,
            kind=kind,
            error=error,
            retry="at the next interval; offloading is not affected",
        )


def fleet_publisher(config: Config) -> FleetPublisher | None:
    """The daemon's publisher, or None when ``[fleet] enabled = false``."""
    if not config.fleet.enabled:
        return None
    return FleetPublisher(
        fleet_backend(config),
        document_key(config.fleet.prefix, config.dock.id),
        config.fleet.interval_seconds,
        signer=fleet_signer(config),
    )


def fleet_signer(config: Config) -> FleetSigner | None:
    """The dock's signing key (made at its first start); None, logged, when it cannot be."""
    try:
        return FleetSigner(key_path(config.dock.state_dir), config.dock.id, config.fleet.prefix)
    except (FleetKeyError, OSError) as error:
        log.error("fleet.unsigned", error=str(error),
                  why="status documents go unsigned: `bwc-dock fleet` cannot verify them")
        return None
