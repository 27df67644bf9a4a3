"""Retention classes: how long central storage must keep a clip, counted from its recording.

A clip's retain-until date is its recorded time (UTC, as the ledger holds it) plus its
class's days: the class a person gave it (``clips classify``), else the default class.
The date is set on the clip object, its sidecars and its custody record as they are
written (Object Lock), and later only ever extended: a date earlier than the one an
object has is refused and logged (``retention.shorten_refused``), never applied.

"indefinite" is a far date (a century after the recording), not a legal hold: a date is
enforced by the store in both lock modes (under COMPLIANCE by nobody removable), while
a legal hold can be lifted by anyone allowed s3:PutObjectLegalHold, and holds belong to
cases (``bwc-dock hold``), whose removal must not end a homicide clip's retention.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bwc_dock.config import INDEFINITE, Config, RetentionClass
from bwc_dock.errors import BwcDockError, UsageError
from bwc_dock.ledger import ClipWork, Ledger
from bwc_dock.logs import get_logger
from bwc_dock.manifest import MANIFEST_SUFFIX
from bwc_dock.storage.base import FOLDER_CANNOT_RETAIN, RetentionChange, StorageBackend

log = get_logger("bwc_dock.retention")

INDEFINITE_DAYS = 36_525  # a century
EXPIRED_FLOOR = timedelta(days=1)


def class_days(retention: RetentionClass) -> int:
    return INDEFINITE_DAYS if retention.days == INDEFINITE else int(retention.days)


def retain_until(recorded_at: datetime, retention: RetentionClass) -> datetime:
    """Recorded time (UTC) plus the class's days, rounded up to the whole second (S3
    keeps seconds; rounding down would shorten it)."""
    until = recorded_at.astimezone(UTC) + timedelta(days=class_days(retention))
    if until.microsecond:
        until = until.replace(microsecond=0) + timedelta(seconds=1)
    return until


def class_for_call_types(config: Config, call_types: Iterable[str]) -> RetentionClass | None:
    """The class of a clip matched to CAD events of ``call_types``: of every class one of
    them names (case and surrounding spaces ignored), the longest; else the default."""
    wanted = {call_type.strip().casefold() for call_type in call_types}
    named = [
        retention
        for retention in config.retention_classes
        if wanted & {call_type.strip().casefold() for call_type in retention.call_types}
    ]
    if not named:
        return config.default_retention
    return max(named, key=class_days)


def require_enforcing_store(config: Config) -> None:
    """Raise UsageError (exit 2) unless the configured store can enforce retention."""
    if config.storage.backend != "s3":
        raise UsageError(f"storage.backend = {config.storage.backend!r}: {FOLDER_CANNOT_RETAIN}")
    if not config.storage.object_lock_mode:
        raise UsageError(
            "storage.object_lock_mode is not set: set it to GOVERNANCE or COMPLIANCE (the "
            "bucket must have been created with Object Lock enabled)"
        )


class RetentionPolicy:
    """Which class a clip has, and the date it is kept until."""

    def __init__(self, config: Config, ledger: Ledger) -> None:
        self.config = config
        self.ledger = ledger

    def class_of(self, work: ClipWork) -> RetentionClass | None:
        name = self.ledger.classified_as(work.id)
        if name is not None:
            found = self.config.retention_class(name)
            if found is not None:
                return found
            log.warning("retention.class_unknown", clip=work.id, retention_class=name,
                        why="no longer configured; the default class applies")
        return self.config.default_retention

    def retain_until(self, work: ClipWork) -> datetime | None:
        retention = self.class_of(work)
        return None if retention is None else retain_until(work.recorded_at, retention)

    def upload_until(self, work: ClipWork) -> datetime | None:
        """The date for the upload: a store refuses a retain-until date in the past, so a
        clip whose retention ran out before it was offloaded is kept a day from now."""
        until = self.retain_until(work)
        floor = datetime.now(UTC).replace(microsecond=0) + EXPIRED_FLOOR
        if until is not None and until < floor:
            log.warning("retention.expired_at_upload", clip=work.id,
                        retain_until=until.isoformat(), kept_until=floor.isoformat())
            return floor
        return until


def upload_retention(
    config: Config, ledger: Ledger
) -> Callable[[ClipWork], datetime | None] | None:
    """What the uploader asks for each clip's date; None when Object Lock is off."""
    if config.storage.backend != "s3" or not config.storage.object_lock_mode:
        return None
    return RetentionPolicy(config, ledger).upload_until


def clip_object_keys(backend: StorageBackend, work: ClipWork) -> list[str]:
    """The clip object, its sidecars and every custody record beside it (each dock's
    offload leaves its own), as central storage lists them."""
    assert work.remote_key is not None
    keys = [work.remote_key]
    keys += [sidecar.remote_key for sidecar in work.sidecars if sidecar.remote_key]
    keys += [
        key
        for key in backend.list_keys(work.remote_key + ".")
        if key.endswith(MANIFEST_SUFFIX)
    ]
    legacy = work.remote_key + MANIFEST_SUFFIX
    if backend.head(legacy) is not None:
        keys.append(legacy)
    return sorted(set(keys))


@dataclass(frozen=True)
class Classification:
    clip: ClipWork
    retention: RetentionClass
    retain_until: datetime
    previous: RetentionClass | None
    changes: tuple[RetentionChange, ...]

    @property
    def refused(self) -> bool:
        return any(change.refused for change in self.changes)


class ShortenRefused(BwcDockError):
    """The class would shorten the clip's retention; nothing was changed."""


def classify(
    config: Config, ledger: Ledger, backend: StorageBackend, key: str, class_name: str
) -> Classification:
    """Give the clip stored under ``key`` the class ``class_name``: extend every version
    of its objects to the new date, then audit it. A class that would shorten the clip's
    retention is refused (ShortenRefused) and logged, and nothing is applied."""
    require_enforcing_store(config)
    retention = config.retention_class(class_name)
    if retention is None:
        known = ", ".join(kind.name for kind in config.retention_classes)
        raise UsageError(f"retention class {class_name!r} is not configured (known: {known})")
    work = ledger.clip_by_key(key)
    if work is None or work.remote_key is None:
        raise UsageError(f"{key}: no uploaded clip with this key in this dock's ledger")
    policy = RetentionPolicy(config, ledger)
    previous = policy.class_of(work)
    until = retain_until(work.recorded_at, retention)
    if previous is not None and until < retain_until(work.recorded_at, previous):
        _refuse(ledger, work, retention, previous, until)
    changes = tuple(
        change
        for object_key in clip_object_keys(backend, work)
        for change in backend.extend_retention(object_key, until)
    )
    ledger.record_classification(work, retention.name, {
        "key": work.remote_key,
        "previous_class": previous.name if previous else None,
        "retain_until": until.isoformat(),
        "versions_extended": sum(1 for change in changes if not change.refused),
        "versions_refused": sum(1 for change in changes if change.refused),
    })
    log.info("retention.classified", clip=work.id, key=work.remote_key,
             retention_class=retention.name, retain_until=until.isoformat())
    return Classification(work, retention, until, previous, changes)


def _refuse(
    ledger: Ledger, work: ClipWork, retention: RetentionClass, previous: RetentionClass,
    until: datetime,
) -> None:
    current = retain_until(work.recorded_at, previous)
    log.warning("retention.shorten_refused", clip=work.id, key=work.remote_key,
                retention_class=retention.name, previous_class=previous.name,
                retain_until=current.isoformat(), requested=until.isoformat())
    ledger.record_event("retention.shorten_refused", camera_serial=work.camera_serial,
                        clip_id=work.id, sha256=work.sha256,
                        details={"class": retention.name, "current_class": previous.name,
                                 "retain_until": current.isoformat(),
                                 "requested": until.isoformat()})
    raise ShortenRefused(
        f"{work.remote_key}: class {retention.name!r} ({until:%Y-%m-%d %H:%M:%S} UTC) would "
        f"shorten its retention under class {previous.name!r} "
        f"({current:%Y-%m-%d %H:%M:%S} UTC); retention only grows, nothing was changed"
    )
