"""The fleet view: each dock's status document in central storage, written and read.

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from bwc_dock.alarms import Alarm
from bwc_dock.config import Config
from bwc_dock.errors import (
    BwcDockError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
)
from bwc_dock.fleet_keys import (
    KEYS_FOLDER,
    FleetKeyError,
    FleetSigner,
    FleetVerifier,
    SignatureState,
    key_path,
)
from bwc_dock.ledger.states import PENDING_STATES
from bwc_dock.names import safe_name
from bwc_dock.service import DaemonStatus
from bwc_dock.storage import StorageBackend, open_backend

log = structlog.get_logger(__name__)

SCHEMA = "bwc-dock/fleet-status/1"
SCHEMA_FAMILY = "bwc-dock/fleet-status/"
DOCUMENT_SUFFIX = ".json"
# A status document is a few KiB; anything much larger under the prefix is not ours.
MAX_DOCUMENT_BYTES = 1024 * 1024
# A dock counts as stale when its heartbeat is older than this, or than this many of
# its own publish intervals when that is longer (``bwc-dock fleet`` without --stale-after).
DEFAULT_STALE_AFTER = timedelta(minutes=5)
STALE_INTERVALS = 3
# Bounds on what a document may claim; beyond them it is shown as suspicious, never used
# as it is. A dock publishes at least once a minute by configuration: one that claims to
# publish less than daily would make a dead dock look alive for days.
MAX_INTERVAL_SECONDS = 24 * 3600.0
# Clocks of docks differ a little; a heartbeat further ahead than this is a wrong clock
# or a forgery, and would keep a dead dock "alive" until that time.
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_COUNT = 2**63 - 1  # what SQLite counts up to; larger is not a count a dock made
MAX_TEXT = 1000
MAX_ITEMS = 1000
# What this view can and cannot prove, said with every answer.
TRUST_NOTE = (
    "Each document is what a dock says of itself: this view checks that it is well formed,"
    " bounded, under its dock's name and not dated in the future. 'verified' means it was"
    " signed with the key first registered for that dock id (under the fleet prefix's"
    " keys/), so it came from whoever holds that key; it cannot show that documents or keys"
    " were not deleted (a store admin can), the first registration of a dock id is trust on"
    " first use, and an unsigned or badly signed document proves nothing about who wrote it."
)


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


# -- reading --------------------------------------------------------------------------


def _bounded_time(value: datetime) -> datetime:
    """A time with a zone that converts to UTC (not one a subtraction would overflow)."""
    if value.tzinfo is None:
        raise ValueError("has no time zone")
    try:
        converted = value.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("out of range") from error
    if not 2000 <= converted.year <= 9000:
        raise ValueError(f"year {converted.year} is out of range")
    return converted


Time = Annotated[datetime, AfterValidator(_bounded_time)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class _Model(BaseModel):
    # newer docks may add fields; no NaN or infinity (JSON's 1e999) in any number
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class ReportedAlarm(_Model):
    kind: Text
    subject: Text | None = None
    severity: Text
    detail: Text = ""


class ReportedCamera(_Model):
    serial: Text
    pending_clips: Count = 0
    last_progress_at: Time | None = None


class FleetDocument(_Model):
    """A status document as read back; anything that does not fit is reported, not used."""

    schema_: Text = Field(alias="schema")
    dock: Text
    host: Text | None = None
    version: Text | None = None
    heartbeat_at: Time
    interval_seconds: float = Field(default=60.0, gt=0)
    clips: dict[Text, Count] = Field(default_factory=dict, max_length=MAX_ITEMS)
    oldest_pending_at: Time | None = None
    alarms: tuple[ReportedAlarm, ...] = Field(default=(), max_length=MAX_ITEMS)
    cameras: tuple[ReportedCamera, ...] = Field(default=(), max_length=MAX_ITEMS)
    staging_free_bytes: Count | None = None
    storage: Text | None = None

    @property
    def pending(self) -> int:
        return sum(count for state, count in self.clips.items() if state in PENDING_STATES)


@dataclass(frozen=True)
class DockReport:
    """One entry under the fleet prefix: a dock's document, or why it is not one."""

    key: str
    document: FleetDocument | None
    problem: str | None = None  # set when the entry is malformed or foreign
    signature: SignatureState | None = None  # None: not checked
    key_registered: bool = False  # a key is registered for the dock the document names


def read_fleet(backend: StorageBackend, prefix: str) -> list[DockReport]:
    """Every entry under ``prefix``, read and checked, its signature too (the registered
    keys under ``<prefix>keys/`` are not entries); one bad entry spoils only itself."""
    verifier = FleetVerifier.read(backend, prefix)
    return [
        _read_entry_guarded(backend, prefix, key, verifier)
        for key in backend.list_keys(prefix)
        if not key.startswith(prefix + KEYS_FOLDER)
    ]


def _read_entry_guarded(backend: StorageBackend, prefix: str, key: str,
                        verifier: FleetVerifier) -> DockReport:
    try:
        return _read_entry(backend, prefix, key, verifier)
    except (StorageError, OSError, ValueError) as error:  # e.g. a key the store refuses
        return DockReport(key, None, f"unreadable: {error}")


def _read_entry(backend: StorageBackend, prefix: str, key: str,
                verifier: FleetVerifier) -> DockReport:
    if not key.endswith(DOCUMENT_SUFFIX) or "/" in key[len(prefix) :]:
        return DockReport(key, None, "not a fleet status document (foreign object)")
    stored = backend.head(key)
    if stored is None:
        return DockReport(key, None, "gone while being read")
    if stored.size > MAX_DOCUMENT_BYTES:
        return DockReport(key, None, f"too large for a status document ({stored.size} bytes)")
    data = backend.read_bytes(key)
    if data is None:
        return DockReport(key, None, "gone while being read")
    return parse_document(key, data, prefix, verifier)


def parse_document(key: str, data: bytes, prefix: str,
                   verifier: FleetVerifier | None = None) -> DockReport:
    """One document checked (and its signature, given the registered keys)."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        return DockReport(key, None, f"malformed: not JSON ({type(error).__name__})")
    if not isinstance(raw, dict) or not str(raw.get("schema", "")).startswith(SCHEMA_FAMILY):
        return DockReport(key, None, "foreign: not a bwc-dock fleet status document")
    try:
        document = FleetDocument.model_validate(raw)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return DockReport(key, None, f"malformed: {where}: {first['msg']}")
    signature = None if verifier is None else verifier.check(raw, document.dock)
    registered = verifier is not None and verifier.has_key(document.dock)
    if document_key(prefix, document.dock) != key:
        return DockReport(key, document, f"document of dock {document.dock!r} under {key}",
                          signature, registered)
    return DockReport(key, document, None, signature, registered)


@dataclass(frozen=True)
class Verdict:
    """What ``bwc-dock fleet`` says of one entry."""

    report: DockReport
    state: str  # alive, stale, suspect (claims what cannot be so), or malformed
    age: timedelta | None  # since the last heartbeat (negative: dated in the future)
    alarmed: bool
    suspicions: tuple[str, ...] = ()  # why the document cannot be taken at its word

    @property
    def healthy(self) -> bool:
        return (
            self.state == "alive"
            and not self.alarmed
            and self.report.problem is None
            and not self.suspicions
        )


def judge(
    reports: Iterable[DockReport], now: datetime, stale_after: timedelta | None = None
) -> list[Verdict]:
    """Alive or stale by heartbeat age (``stale_after``, else the default per dock);
    a heartbeat from the future or an interval beyond the bound makes a dock suspect."""
    return [_judge_one(report, now, stale_after) for report in reports]


def _judge_one(report: DockReport, now: datetime, stale_after: timedelta | None) -> Verdict:
    document = report.document
    if document is None:
        return Verdict(report, "malformed", None, alarmed=False)
    age = now - document.heartbeat_at
    suspicions = _suspicions(document, age) + _signature_suspicions(report)
    interval = min(document.interval_seconds, MAX_INTERVAL_SECONDS)
    limit = stale_after or max(DEFAULT_STALE_AFTER, timedelta(seconds=STALE_INTERVALS * interval))
    state = _state(age, limit)
    if _forged_looking(report):
        state = "suspect"  # never shown alive: its dock may be dead and someone else writing
    return Verdict(report, state, age, alarmed=bool(document.alarms), suspicions=suspicions)


def _forged_looking(report: DockReport) -> bool:
    """Signed wrongly, or unsigned although its dock registered a key."""
    return report.signature is SignatureState.BAD or (
        report.signature is SignatureState.UNSIGNED and report.key_registered
    )


def _signature_suspicions(report: DockReport) -> tuple[str, ...]:
    if report.signature is None or report.signature is SignatureState.VERIFIED:
        return ()
    if report.signature is SignatureState.BAD:
        return ("bad signature: not signed by the key registered for this dock id (a forgery,"
                " or the dock's key was replaced)",)
    if report.key_registered:
        return ("unsigned, although this dock id has a registered key (a forgery?)",)
    if report.signature is SignatureState.NO_KEY:
        return ("signed, but no key is registered for this dock id: cannot be verified",)
    return ("unsigned: cannot be verified (a dock older than signing, or a forgery)",)


def _state(age: timedelta, limit: timedelta) -> str:
    if age < -FUTURE_TOLERANCE:
        return "suspect"  # a dead dock would look alive until that time
    return "stale" if age > limit else "alive"


def _suspicions(document: FleetDocument, age: timedelta) -> tuple[str, ...]:
    found = []
    if age < -FUTURE_TOLERANCE:
        found.append(
            f"heartbeat {-age.total_seconds():.0f} s in the future (a wrong clock or a forgery)"
        )
    if document.interval_seconds > MAX_INTERVAL_SECONDS:
        found.append(
            f"publish interval {document.interval_seconds:.3g} s is beyond the bound of"
            f" {MAX_INTERVAL_SECONDS:.0f} s (judged by the bound)"
        )
    return tuple(found)
