"""The fleet view's reading side: every dock's status document, read back bounded, parsed
as hostile input and judged (alive, stale, suspect), with what each signature proves.

Another dock, or anyone who can write to the store, may have written any of these
documents: each is read with a size bound, parsed against a strict model with bounded
values, and judged on its own, so one bad document never hides the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from bwc_dock.errors import StorageError
from bwc_dock.fleet import DOCUMENT_SUFFIX, MAX_DOCUMENT_BYTES, SCHEMA_FAMILY, document_key
from bwc_dock.fleet_keys import KEYS_FOLDER, FleetVerifier, SignatureState
from bwc_dock.ledger.states import PENDING_STATES
from bwc_dock.storage import StorageBackend

log = structlog.get_logger(__name__)

# A dock counts as stale when its heartbeat is older than this, or than this many of
# its own publish intervals when that is longer (``bwc-dock fleet`` without --stale-after).
DEFAULT_STALE_AFTER = timedelta(minutes=5)
STALE_INTERVALS = 3
# Bounds on what a document may claim; beyond them it is shown as suspicious, never used
# as it is. A dock publishes every minute by default: one that claims to publish less than
# daily would make a dead dock look alive for days.
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
