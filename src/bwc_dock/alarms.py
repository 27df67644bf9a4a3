"""Alarms IT staff would otherwise learn about too late, raised once and cleared once.

The daemon feeds an :class:`AlarmBoard` one :class:`Observation` per loop (plain facts
read from the ledger, the staging filesystem and the storage probe). The board keeps
which alarms are active and returns only the changes, so the journal gets one
``alarm.raised`` when a condition starts and one ``alarm.cleared`` when it ends, never
one per loop. The board does no I/O: it is a pure state machine, fed and asked.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from bwc_dock.config import AlarmsConfig

_MEBIBYTE = 1024 * 1024
# Staging space must climb this far above the reserve before its alarm clears, so free
# space hovering at the reserve does not raise and clear the alarm every loop.
_STAGING_CLEAR_MARGIN = 0.05
_STAGING_CLEAR_MARGIN_MINIMUM = 64 * _MEBIBYTE
# A storage outage this short is a blip the uploader rides out with retries.
DEFAULT_STORAGE_GRACE = timedelta(minutes=5)


class AlarmKind(enum.StrEnum):
    OLDEST_PENDING = "oldest_pending"
    STAGING_LOW = "staging_low"
    STALLED_OFFLOAD = "stalled_offload"
    STORAGE_UNREACHABLE = "storage_unreachable"
    STORAGE_REFUSED = "storage_refused"
    QUARANTINED = "quarantined"
    CAMERA_UNMOUNTABLE = "camera_unmountable"
    STORAGE_LOCK_UNENFORCED = "storage_lock_unenforced"
    DOCK_CLOCK_UNSYNCHRONIZED = "dock_clock_unsynchronized"
    CAMERA_CLOCK_DRIFT = "camera_clock_drift"
    CLIP_SEQUENCE_GAP = "clip_sequence_gap"
    CLIP_VANISHED = "clip_vanished"
    STORAGE_RECOVERY_FAILED = "storage_recovery_failed"
    STORAGE_ROOT_CHANGED = "storage_root_changed"
    FLEET_KEY_CONFLICT = "fleet_key_conflict"
    CAMERA_SCAN_INCOMPLETE = "camera_scan_incomplete"


Severity = Literal["warning", "error"]

_SEVERITY: dict[AlarmKind, Severity] = {
    AlarmKind.OLDEST_PENDING: "error",  # an agency's offload deadline is being missed
    AlarmKind.STAGING_LOW: "warning",
    AlarmKind.STALLED_OFFLOAD: "warning",
    AlarmKind.STORAGE_UNREACHABLE: "warning",
    AlarmKind.STORAGE_REFUSED: "error",  # credentials do not heal by themselves
    AlarmKind.QUARANTINED: "error",  # evidence failed an integrity check
    AlarmKind.CAMERA_UNMOUNTABLE: "error",  # evidence sits on a camera nobody can read
    AlarmKind.STORAGE_LOCK_UNENFORCED: "error",  # the store let a locked version be destroyed
    # every recorded time, and fleet staleness, lean on the dock's clock
    AlarmKind.DOCK_CLOCK_UNSYNCHRONIZED: "warning",
    AlarmKind.CAMERA_CLOCK_DRIFT: "warning",  # its clips are corrected, but say so
    AlarmKind.CLIP_SEQUENCE_GAP: "error",  # the camera's file numbers skip: a file is missing
    AlarmKind.CLIP_VANISHED: "error",  # a file left the camera without bwc-dock clearing it
    # start-up recovery could not clean or anchor in central storage: it may hold this
    # dock's half-written files, or dockings without their SHA256SUMS
    AlarmKind.STORAGE_RECOVERY_FAILED: "error",
    # the storage folder is not the last run's: what was delivered there may be elsewhere
    AlarmKind.STORAGE_ROOT_CHANGED: "error",
    # another key is registered for this dock id: a second dock under this id, a dock
    # that lost its key, or someone who took the id first; its fleet documents fail
    AlarmKind.FLEET_KEY_CONFLICT: "error",
    # evidence stays on a camera that bwc-dock did not read whole
    AlarmKind.CAMERA_SCAN_INCOMPLETE: "error",
}
# How long a camera's gap or vanished file stays an alarm after the docking that found it.
CAMERA_FINDING_HOURS = 24


class StorageState(enum.StrEnum):
    OK = "ok"
    UNREACHABLE = "unreachable"  # connection failed, timed out, 5xx: may heal
    REFUSED = "refused"  # credentials or permissions refused: needs a person
    UNKNOWN = "unknown"  # not probed this loop: alarms about storage stay as they are


@dataclass(frozen=True)
class DockedCamera:
    serial: str
    pending_clips: int  # clips on this camera not yet staged
    last_progress_at: datetime  # docking time, or the last time a byte was copied off it


@dataclass(frozen=True)
class UnmountableCamera:
    name: str  # the camera serial when known before mounting, else the device
    error: str


@dataclass(frozen=True)
class CameraFinding:
    """A docking's proof that a camera lacks a file: a gap in its numbers, or a file gone."""

    kind: Literal["clip_sequence_gap", "clip_vanished"]
    camera: str
    detail: str  # which numbers, or which file


@dataclass(frozen=True)
class IncompleteScan:
    """A docked camera whose last scan stopped at a budget: files past the cut unread."""

    camera: str
    docking_id: int
    reason: str  # "entry budget exhausted" or "time budget exhausted"


@dataclass(frozen=True)
class Observation:
    """What the daemon saw in one loop. All times are timezone-aware."""

    now: datetime
    oldest_pending_at: datetime | None  # discovery time of the oldest clip not yet uploaded
    staging_free_bytes: int | None  # None: could not be read, which is not "full"
    staging_reserve_bytes: int
    storage: StorageState = StorageState.UNKNOWN
    storage_error: str = ""  # the last error's text (never holding a secret)
    quarantined_clips: int = 0
    docked: tuple[DockedCamera, ...] = ()
    unmountable: tuple[UnmountableCamera, ...] = ()
    # what the Object Lock probe found the store allowing; empty when it refused it all
    lock_unenforced: str = ""
    dock_clock_synchronized: bool | None = None  # None: not known, no alarm
    # each camera's clock minus the dock's at its latest docking (None: not measured)
    camera_clock_offsets: Mapping[str, float | None] = field(default_factory=dict)
    max_clock_offset_seconds: float = 30.0
    # findings of the last CAMERA_FINDING_HOURS, from the ledger's audit events
    camera_findings: tuple[CameraFinding, ...] = ()
    # why start-up recovery's storage part failed; "" once a run of it succeeded
    storage_recovery_failure: str = ""
    # the storage folder is not the last run's, and what its re-check found; "" when not
    storage_root_changed: str = ""
    fleet_key_conflict: str = ""  # another key is registered for this dock id
    # docked cameras whose last scan stopped at the entry or time budget
    incomplete_scans: tuple[IncompleteScan, ...] = ()


@dataclass(frozen=True)
class Alarm:
    kind: AlarmKind
    severity: Severity
    detail: str  # one readable sentence for the journal and `bwc-dock status`
    short: str  # a few words for the STATUS line
    camera: str | None = None  # set for alarms about one camera

    @property
    def key(self) -> tuple[AlarmKind, str | None]:
        return (self.kind, self.camera)


@dataclass(frozen=True)
class Transition:
    alarm: Alarm
    raised: bool  # False: the alarm cleared

    @property
    def event(self) -> str:
        return "alarm.raised" if self.raised else "alarm.cleared"

    @property
    def level(self) -> str:
        """structlog method: the alarm's severity when raised, info when it clears."""
        return self.alarm.severity if self.raised else "info"


class _Logger(Protocol):
    def warning(self, event: str, **fields: object) -> object: ...
    def error(self, event: str, **fields: object) -> object: ...
    def info(self, event: str, **fields: object) -> object: ...


def log_transition(logger: _Logger, transition: Transition) -> None:
    """Log one transition as ``alarm.raised`` / ``alarm.cleared`` with the alarm's fields."""
    fields: dict[str, object] = {
        "alarm": str(transition.alarm.kind),
        "severity": transition.alarm.severity,
        "detail": transition.alarm.detail,
    }
    if transition.alarm.camera is not None:
        fields["camera"] = transition.alarm.camera
    getattr(logger, transition.level)(transition.event, **fields)


@dataclass
class AlarmBoard:
    """The alarms now active; :meth:`observe` returns what started and what ended.

    On a configuration reload, assign the new ``config``: limits apply from the next
    observation, and alarms the new limits no longer justify clear then.
    """

    config: AlarmsConfig
    storage_grace: timedelta = DEFAULT_STORAGE_GRACE
    _active: dict[tuple[AlarmKind, str | None], Alarm] = field(default_factory=dict, init=False)
    _unreachable_since: datetime | None = field(default=None, init=False)

    def observe(self, observation: Observation) -> list[Transition]:
        """Update from one loop's facts; return the alarms raised and cleared, in that order."""
        current = self._evaluate(observation)
        transitions = [
            Transition(alarm, raised=True)
            for key, alarm in current.items()
            if key not in self._active
        ]
        transitions += [
            Transition(alarm, raised=False)
            for key, alarm in self._active.items()
            if key not in current
        ]
        self._active = current  # details (ages, counts) refresh without a new transition
        return transitions

    @property
    def active(self) -> tuple[Alarm, ...]:
        return tuple(sorted(self._active.values(), key=_display_order))

    def states(self) -> Mapping[AlarmKind, bool]:
        """Every kind with whether it is active (for metrics: 0 is a value, not absence)."""
        kinds_active = {kind for kind, _camera in self._active}
        return {kind: kind in kinds_active for kind in AlarmKind}

    def summary(self) -> str:
        """A short text for the STATUS line; empty when nothing is wrong."""
        if not self._active:
            return ""
        return "ALARM: " + ", ".join(alarm.short for alarm in self.active)

    def _evaluate(self, observation: Observation) -> dict[tuple[AlarmKind, str | None], Alarm]:
        alarms = [
            self._oldest_pending(observation),
            self._staging_low(observation),
            *self._storage(observation),
            _quarantined(observation),
            *self._stalled(observation),
            *_unmountable(observation),
            _lock_unenforced(observation),
            _dock_clock(observation),
            *_camera_clocks(observation),
            *_camera_findings(observation),
            _storage_recovery(observation),
            _storage_root_changed(observation),
            _fleet_key_conflict(observation),
            *_incomplete_scans(observation),
        ]
        return {alarm.key: alarm for alarm in alarms if alarm is not None}

    def _oldest_pending(self, observation: Observation) -> Alarm | None:
        if observation.oldest_pending_at is None:
            return None
        age_hours = (observation.now - observation.oldest_pending_at) / timedelta(hours=1)
        limit = self.config.oldest_pending_hours
        if age_hours <= limit:
            return None
        return Alarm(
            AlarmKind.OLDEST_PENDING,
            _SEVERITY[AlarmKind.OLDEST_PENDING],
            detail=f"the oldest clip not yet in central storage is {age_hours:.1f} h old "
            f"(limit {limit:g} h)",
            short=f"oldest pending {age_hours:.0f} h",
        )

    def _staging_low(self, observation: Observation) -> Alarm | None:
        free = observation.staging_free_bytes
        reserve = observation.staging_reserve_bytes
        was_active = (AlarmKind.STAGING_LOW, None) in self._active
        if free is None:
            # unknown free space proves nothing: keep the alarm as it was, raise none new
            return self._active.get((AlarmKind.STAGING_LOW, None))
        margin = max(int(reserve * _STAGING_CLEAR_MARGIN), _STAGING_CLEAR_MARGIN_MINIMUM)
        threshold = reserve + margin if was_active else reserve
        if free >= threshold:
            return None
        return Alarm(
            AlarmKind.STAGING_LOW,
            _SEVERITY[AlarmKind.STAGING_LOW],
            detail=f"staging has {free // _MEBIBYTE} MiB free, under its reserve of "
            f"{reserve // _MEBIBYTE} MiB; copying from cameras waits for uploads",
            short="staging full",
        )

    def _storage(self, observation: Observation) -> list[Alarm]:
        state = observation.storage
        if state is StorageState.UNKNOWN:
            # not probed: keep whatever storage alarms were active
            return [
                alarm
                for alarm in self._active.values()
                if alarm.kind in (AlarmKind.STORAGE_UNREACHABLE, AlarmKind.STORAGE_REFUSED)
            ]
        if state is not StorageState.UNREACHABLE:
            self._unreachable_since = None
        if state is StorageState.REFUSED:
            return [_storage_alarm(AlarmKind.STORAGE_REFUSED, observation.storage_error)]
        if state is StorageState.UNREACHABLE:
            if self._unreachable_since is None:
                self._unreachable_since = observation.now
            if observation.now - self._unreachable_since >= self.storage_grace:
                return [_storage_alarm(AlarmKind.STORAGE_UNREACHABLE, observation.storage_error)]
        return []

    def _stalled(self, observation: Observation) -> Iterable[Alarm]:
        limit = timedelta(minutes=self.config.stalled_offload_minutes)
        for camera in observation.docked:
            idle = observation.now - camera.last_progress_at
            # a camera left in the dock after its offload finished is idle, not stalled
            if camera.pending_clips > 0 and idle > limit:
                yield Alarm(
                    AlarmKind.STALLED_OFFLOAD,
                    _SEVERITY[AlarmKind.STALLED_OFFLOAD],
                    detail=f"camera {camera.serial} is docked with {camera.pending_clips} "
                    f"clip(s) to copy and no progress for {idle / timedelta(minutes=1):.0f} min",
                    short=f"camera {camera.serial} stalled",
                    camera=camera.serial,
                )


def _storage_alarm(kind: AlarmKind, error: str) -> Alarm:
    if kind is AlarmKind.STORAGE_REFUSED:
        detail, short = "central storage refuses our credentials or permissions", "storage refused"
    else:
        detail, short = "central storage is unreachable", "storage unreachable"
    if error:
        detail += f": {error}"
    return Alarm(kind, _SEVERITY[kind], detail=detail, short=short)


def _quarantined(observation: Observation) -> Alarm | None:
    count = observation.quarantined_clips
    if count <= 0:
        return None
    return Alarm(
        AlarmKind.QUARANTINED,
        _SEVERITY[AlarmKind.QUARANTINED],
        detail=f"{count} clip(s) failed an integrity check and are quarantined",
        short=f"{count} quarantined",
    )


def _unmountable(observation: Observation) -> Iterable[Alarm]:
    for camera in observation.unmountable:
        yield Alarm(
            AlarmKind.CAMERA_UNMOUNTABLE,
            _SEVERITY[AlarmKind.CAMERA_UNMOUNTABLE],
            detail=f"camera {camera.name} is docked but cannot be mounted: {camera.error}",
            short=f"camera {camera.name} unmountable",
            camera=camera.name,
        )


def _lock_unenforced(observation: Observation) -> Alarm | None:
    if not observation.lock_unenforced:
        return None
    return Alarm(
        AlarmKind.STORAGE_LOCK_UNENFORCED,
        _SEVERITY[AlarmKind.STORAGE_LOCK_UNENFORCED],
        detail="central storage does not enforce Object Lock: it let the probe destroy a "
        f"locked version ({observation.lock_unenforced})",
        short="storage lock unenforced",
    )


def _storage_recovery(observation: Observation) -> Alarm | None:
    if not observation.storage_recovery_failure:
        return None
    return Alarm(
        AlarmKind.STORAGE_RECOVERY_FAILED,
        _SEVERITY[AlarmKind.STORAGE_RECOVERY_FAILED],
        detail="start-up recovery could not finish in central storage (it retries): "
        f"{observation.storage_recovery_failure}",
        short="storage recovery failed",
    )


def _storage_root_changed(observation: Observation) -> Alarm | None:
    if not observation.storage_root_changed:
        return None
    return Alarm(
        AlarmKind.STORAGE_ROOT_CHANGED,
        _SEVERITY[AlarmKind.STORAGE_ROOT_CHANGED],
        detail=observation.storage_root_changed,
        short="storage folder changed",
    )


def _fleet_key_conflict(observation: Observation) -> Alarm | None:
    if not observation.fleet_key_conflict:
        return None
    return Alarm(
        AlarmKind.FLEET_KEY_CONFLICT,
        _SEVERITY[AlarmKind.FLEET_KEY_CONFLICT],
        detail=observation.fleet_key_conflict,
        short="fleet key conflict",
    )


def _dock_clock(observation: Observation) -> Alarm | None:
    if observation.dock_clock_synchronized is not False:
        return None
    return Alarm(
        AlarmKind.DOCK_CLOCK_UNSYNCHRONIZED,
        _SEVERITY[AlarmKind.DOCK_CLOCK_UNSYNCHRONIZED],
        detail="the dock PC's clock is not synchronised (no time server has set it); "
        "recorded times and fleet ages depend on it",
        short="dock clock unsynchronised",
    )


def _camera_clocks(observation: Observation) -> Iterable[Alarm]:
    limit = observation.max_clock_offset_seconds
    for serial, offset in sorted(observation.camera_clock_offsets.items()):
        if offset is None or abs(offset) <= limit:
            continue
        direction = "ahead of" if offset > 0 else "behind"
        yield Alarm(
            AlarmKind.CAMERA_CLOCK_DRIFT,
            _SEVERITY[AlarmKind.CAMERA_CLOCK_DRIFT],
            detail=f"camera {serial}'s clock was {abs(offset):.0f} s {direction} the dock's "
            f"when it last docked (limit {limit:g} s)",
            short=f"camera {serial} clock off {offset:+.0f} s",
            camera=serial,
        )


def _camera_findings(observation: Observation) -> Iterable[Alarm]:
    """One alarm per camera and kind, naming every finding of it."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for finding in observation.camera_findings:
        grouped.setdefault((finding.kind, finding.camera), []).append(finding.detail)
    for (kind_name, camera), details in sorted(grouped.items()):
        kind = AlarmKind(kind_name)
        if kind is AlarmKind.CLIP_SEQUENCE_GAP:
            what, short = "file numbers missing", "file numbers missing"
        else:
            what, short = "files gone without bwc-dock clearing them", "files vanished"
        yield Alarm(
            kind,
            _SEVERITY[kind],
            detail=f"camera {camera}: {what}: {'; '.join(details)}",
            short=f"camera {camera} {short}",
            camera=camera,
        )


def _incomplete_scans(observation: Observation) -> Iterable[Alarm]:
    for scan in observation.incomplete_scans:
        yield Alarm(
            AlarmKind.CAMERA_SCAN_INCOMPLETE,
            _SEVERITY[AlarmKind.CAMERA_SCAN_INCOMPLETE],
            detail=f"camera {scan.camera} (docking {scan.docking_id}) was not read whole: "
            f"its scan stopped ({scan.reason}); files past the cut stay on it, not offloaded",
            short=f"camera {scan.camera} scan incomplete",
            camera=scan.camera,
        )


def _display_order(alarm: Alarm) -> tuple[int, int, str]:
    """Errors first, then the order of :class:`AlarmKind`, then by camera."""
    kinds = list(AlarmKind)
    return (alarm.severity != "error", kinds.index(alarm.kind), alarm.camera or "")
