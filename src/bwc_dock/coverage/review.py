"""The review: for each (CAD event, officer), its clips across the fleet, or why there are none.

Plain values in, plain rows out: reading the store and the CAD file is done before, and
printing after, so the same inputs always give the same rows in the same order.

The officer of a clip is the one the fleet's assignments name for its camera at its
recorded time (the custody record's own ``officer`` when the camera has no fleet
assignment). A row is, in this order:

- ``excluded``: its call type or clearance code is excluded in ``[coverage]``;
- ``video``: clips of the officer whose recording overlaps the call widened by
  ``buffer_minutes`` (``rule`` says how the best one matched);
- ``explained``: an explanation is on record and not corrected by a later one;
- ``pending``: none of the officer's cameras has docked anywhere since the call, and
  ``grace_days`` have not passed;
- ``no_video``, with the most specific cause the records prove.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from bwc_dock.config import CoverageConfig
from bwc_dock.coverage.cad import Call
from bwc_dock.coverage.records import (
    AssignmentRecord,
    ClipRecord,
    EvidenceRecord,
    ExplanationRecord,
)

STATUSES = ("video", "excluded", "explained", "pending", "no_video")
CAUSES = (
    "no_camera_assigned",
    "camera_not_docked",
    "sequence_gap",
    "clip_vanished",
    "none_recorded",
)
# how a clip matched a call, best first
RULES = ("recorded_during_call", "recorded_within_buffer", "running_into_call")
ACCEPTED = frozenset({"video", "excluded", "explained", "pending"})


def officer_key(officer: str) -> str:
    """Badge ids compare ignoring case and surrounding space."""
    return officer.strip().casefold()


@dataclass(frozen=True)
class Explanation:
    key: str
    reason: str
    note: str


@dataclass(frozen=True)
class Row:
    event: str
    officer: str
    call_type: str
    dispatched: datetime
    cleared: datetime
    lines: tuple[int, ...]
    status: str
    cause: str | None = None
    rule: str | None = None
    clips: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()
    explanation: Explanation | None = None

    @property
    def accepted(self) -> bool:
        return self.status in ACCEPTED


@dataclass(frozen=True)
class Tenure:
    """A camera carried by an officer from ``start`` until ``end`` (None: still)."""

    camera: str
    start: datetime
    end: datetime | None

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start <= end and (self.end is None or self.end > start)


@dataclass
class Fleet:
    """The fleet's records, indexed for the review."""

    histories: dict[str, list[tuple[datetime, str, str]]] = field(default_factory=dict)
    tenures: dict[str, list[Tenure]] = field(default_factory=dict)
    clips_by_officer: dict[str, list[ClipRecord]] = field(default_factory=dict)
    clip_starts: dict[str, list[datetime]] = field(default_factory=dict)
    longest_clip: timedelta = timedelta(0)
    last_docked: dict[str, datetime] = field(default_factory=dict)
    evidence: dict[str, list[EvidenceRecord]] = field(default_factory=dict)
    explanations: dict[tuple[str, str], Explanation] = field(default_factory=dict)


def index_fleet(
    clips: Iterable[ClipRecord],
    assignments: Iterable[tuple[str, AssignmentRecord]],
    explanations: Iterable[tuple[str, ExplanationRecord]],
    evidence: Iterable[EvidenceRecord],
) -> Fleet:
    fleet = Fleet()
    fleet.histories = _histories(assignments)
    fleet.tenures = _tenures(fleet.histories)
    _index_clips(fleet, clips)
    for record in sorted(evidence, key=lambda item: (item.at, item.kind, item.dock)):
        fleet.evidence.setdefault(record.camera, []).append(record)
        if record.kind == "docking":
            _docked(fleet, record.camera, record.at)
    fleet.explanations = _explanations_in_force(explanations)
    return fleet


def _histories(
    assignments: Iterable[tuple[str, AssignmentRecord]],
) -> dict[str, list[tuple[datetime, str, str]]]:
    """Per camera, (assigned_at, key, officer) oldest first; the key breaks ties the same
    way on every machine."""
    histories: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
    for key, record in assignments:
        histories[record.camera].append((record.assigned_at, key, record.officer_id))
    return {camera: sorted(history) for camera, history in histories.items()}


def _tenures(histories: Mapping[str, list[tuple[datetime, str, str]]]) -> dict[str, list[Tenure]]:
    tenures: dict[str, list[Tenure]] = defaultdict(list)
    for camera, history in histories.items():
        for index, (start, _key, officer) in enumerate(history):
            end = history[index + 1][0] if index + 1 < len(history) else None
            tenures[officer_key(officer)].append(Tenure(camera, start, end))
    return dict(tenures)


def officer_of(fleet: Fleet, clip: ClipRecord) -> str | None:
    """Who carried the clip's camera when it was recorded, by the fleet's assignments;
    before the camera's first fleet assignment, the officer its custody record names
    (an assignment a dock held before assignments were the fleet's)."""
    officer = None
    for assigned_at, _key, officer_id in fleet.histories.get(clip.camera, []):
        if assigned_at > clip.recorded_at:
            break
        officer = officer_id
    return officer if officer is not None else clip.officer


def _index_clips(fleet: Fleet, clips: Iterable[ClipRecord]) -> None:
    unique: dict[str, ClipRecord] = {}
    for clip in clips:
        if clip.docked_at is not None:
            _docked(fleet, clip.camera, clip.docked_at)
        # the same clip offloaded at two docks has one key: keep one record of it
        kept = unique.get(clip.key)
        if kept is None or (clip.dock, clip.recorded_at) < (kept.dock, kept.recorded_at):
            unique[clip.key] = clip
    by_officer: dict[str, list[ClipRecord]] = defaultdict(list)
    for clip in unique.values():
        officer = officer_of(fleet, clip)
        if officer:
            by_officer[officer_key(officer)].append(clip)
        fleet.longest_clip = max(fleet.longest_clip, clip.recorded_until - clip.recorded_at)
    for officer, found in by_officer.items():
        found.sort(key=lambda clip: (clip.recorded_at, clip.key))
        fleet.clips_by_officer[officer] = found
        fleet.clip_starts[officer] = [clip.recorded_at for clip in found]


def _docked(fleet: Fleet, camera: str, at: datetime) -> None:
    if camera not in fleet.last_docked or fleet.last_docked[camera] < at:
        fleet.last_docked[camera] = at


def _explanations_in_force(
    explanations: Iterable[tuple[str, ExplanationRecord]],
) -> dict[tuple[str, str], Explanation]:
    """Per (event, officer), the newest explanation that no other one corrects."""
    records = list(explanations)
    corrected = {record.corrects for _key, record in records if record.corrects}
    in_force: dict[tuple[str, str], tuple[datetime, str, Explanation]] = {}
    for key, record in records:
        if key in corrected:
            continue
        subject = (record.event, officer_key(record.officer))
        candidate = (record.made_at, key, Explanation(key, record.reason, record.note))
        if subject not in in_force or in_force[subject][:2] < candidate[:2]:
            in_force[subject] = candidate
    return {subject: entry[2] for subject, entry in in_force.items()}


# -- the review ------------------------------------------------------------------------


def merged_calls(calls: Iterable[Call]) -> list[Call]:
    """One call per (event, officer): an officer dispatched twice to one event is reviewed
    over the span from the first dispatch to the last clearance."""
    merged: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for call in calls:
        merged[(call.event, officer_key(call.officer))].append(call)
    return [_span(parts) for parts in merged.values()]


def _span(parts: Sequence[Call]) -> Call:
    first = min(parts, key=lambda call: call.line)
    return Call(
        first.line,
        first.event,
        first.officer,
        min(call.dispatched for call in parts),
        max(call.cleared for call in parts),
        first.call_type,
        first.clearance_code,
    )


def review(
    calls: Iterable[Call], fleet: Fleet, config: CoverageConfig, as_of: datetime
) -> list[Row]:
    """Every (event, officer) of ``calls``, judged; ordered by dispatch, event, officer."""
    lines: dict[tuple[str, str], list[int]] = defaultdict(list)
    call_list = list(calls)
    for call in call_list:
        lines[_subject(call)].append(call.line)
    rows = [
        judge(call, fleet, config, as_of, tuple(sorted(lines[_subject(call)])))
        for call in merged_calls(call_list)
    ]
    rows.sort(key=lambda row: (row.dispatched, row.event, officer_key(row.officer), row.lines))
    return rows


def _subject(call: Call) -> tuple[str, str]:
    return call.event, officer_key(call.officer)


def judge(
    call: Call, fleet: Fleet, config: CoverageConfig, as_of: datetime, lines: tuple[int, ...]
) -> Row:
    buffer = timedelta(minutes=config.buffer_minutes)
    start, end = call.dispatched - buffer, call.cleared + buffer
    officer = officer_key(call.officer)
    matched = matching_clips(fleet, officer, call, start, end)
    cameras = cameras_of(fleet, officer, start, end)
    row = Row(
        event=call.event,
        officer=call.officer,
        call_type=call.call_type,
        dispatched=call.dispatched,
        cleared=call.cleared,
        lines=lines,
        status="",
        rule=min((rule for _key, rule in matched), key=RULES.index, default=None),
        clips=tuple(sorted({key for key, _rule in matched})),
        cameras=cameras,
    )
    if _excluded(call, config):
        return replace(row, status="excluded")
    if row.clips:
        return replace(row, status="video")
    explanation = fleet.explanations.get(_subject(call))
    if explanation is not None:
        return replace(row, status="explained", explanation=explanation)
    status, cause = _without_video(row, fleet, config, as_of, (start, end))
    return replace(row, status=status, cause=cause)


def _without_video(
    row: Row,
    fleet: Fleet,
    config: CoverageConfig,
    as_of: datetime,
    window: tuple[datetime, datetime],
) -> tuple[str, str | None]:
    """(status, cause) of a row with no clip and no explanation."""
    if not row.cameras:
        return "no_video", "no_camera_assigned"
    if not any(_docked_since(fleet, camera, row.cleared) for camera in row.cameras):
        if as_of < row.cleared + timedelta(days=config.grace_days):
            return "pending", None
        return "no_video", "camera_not_docked"
    return "no_video", _camera_evidence(fleet, row.cameras, window)


def _docked_since(fleet: Fleet, camera: str, moment: datetime) -> bool:
    last = fleet.last_docked.get(camera)
    return last is not None and last >= moment


def _excluded(call: Call, config: CoverageConfig) -> bool:
    types = {value.strip().casefold() for value in config.excluded_call_types}
    codes = {value.strip().casefold() for value in config.excluded_clearance_codes}
    return call.call_type.casefold() in types or (
        bool(call.clearance_code) and call.clearance_code.casefold() in codes
    )


def matching_clips(
    fleet: Fleet, officer: str, call: Call, start: datetime, end: datetime
) -> list[tuple[str, str]]:
    """(key, rule) of the officer's clips recorded over [start, end]."""
    found = fleet.clips_by_officer.get(officer, [])
    starts = fleet.clip_starts.get(officer, [])
    first = bisect.bisect_left(starts, start - fleet.longest_clip)
    last = bisect.bisect_right(starts, end)
    matched = []
    for clip in found[first:last]:
        rule = _rule(clip, call, start, end)
        if rule is not None:
            matched.append((clip.key, rule))
    return matched


def _rule(clip: ClipRecord, call: Call, start: datetime, end: datetime) -> str | None:
    if call.dispatched <= clip.recorded_at <= call.cleared:
        return "recorded_during_call"
    if start <= clip.recorded_at <= end:
        return "recorded_within_buffer"
    if clip.recorded_at < start <= clip.recorded_until:
        return "running_into_call"
    return None


def cameras_of(fleet: Fleet, officer: str, start: datetime, end: datetime) -> tuple[str, ...]:
    """The cameras the fleet's assignments give the officer at any time in [start, end];
    without any assignment of the officer, the cameras whose custody records name them."""
    tenures = fleet.tenures.get(officer)
    if tenures:
        return tuple(sorted({t.camera for t in tenures if t.overlaps(start, end)}))
    return tuple(
        sorted(
            {
                clip.camera
                for clip in fleet.clips_by_officer.get(officer, [])
                if clip.camera not in fleet.histories
            }
        )
    )


def _camera_evidence(
    fleet: Fleet, cameras: Sequence[str], window: tuple[datetime, datetime]
) -> str:
    """clip_vanished or sequence_gap when a camera's own evidence covers the window."""
    start, end = window
    records = [record for camera in cameras for record in fleet.evidence.get(camera, [])]
    for record in records:
        if (
            record.kind == "clip_vanished"
            and not record.offloaded
            and record.recorded_at is not None
            and start <= record.recorded_at <= end
        ):
            return "clip_vanished"
    for record in records:
        if record.kind == "sequence_gap" and record.between is not None:
            before, after = record.between
            if before <= end and after >= start:
                return "sequence_gap"
    return "none_recorded"
