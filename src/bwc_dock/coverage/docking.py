"""What a docking proves about a camera beyond its clips, told to the ledger and the fleet.

At the first scan of each docking:

- a **docking** record in central storage, so that every machine knows the camera's
  last docking anywhere (``fleet cameras``, and "not docked since the call");
- where the profile's ``counter_pattern`` gives the camera's file counter: numbers
  missing between the files this camera has shown (``clip.sequence_gap``, naming them
  and the recorded times either side), or a counter that went back for a new file (a
  format: ``clip.counter_reset``, not a gap; numbering starts again from there);
- files seen at an earlier docking, not cleared by bwc-dock, and gone now
  (``clip.vanished_on_camera``, one per file).

Each finding is an audit event and a create-only record in central storage. Camera
names are hostile: counters are read only through the profile's pattern and bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from bwc_dock.alarms import CAMERA_FINDING_HOURS, CameraFinding
from bwc_dock.config import CameraProfile
from bwc_dock.coverage.records import EVIDENCE_SCHEMA
from bwc_dock.coverage.shared import DOCKINGS_PREFIX, EVIDENCE_PREFIX, write_record
from bwc_dock.found import FoundClip
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.evidence import (
    COUNTER_RESET_EVENT,
    SEQUENCE_GAP_EVENT,
    VANISHED_EVENT,
    DockingFacts,
    EvidenceEvent,
    KnownClip,
    vanished_clip_ids,
)
from bwc_dock.scanner import ScanResult
from bwc_dock.storage import StorageBackend

log = structlog.get_logger(__name__)

# A counter span wider than this is not a camera's numbering but a hostile name.
MAX_COUNTER_SPAN = 100_000
MAX_COUNTER_DIGITS = 9
BUDGET_REFUSAL = "entry budget exhausted"
_OFFLOADED_STATES = frozenset({"staged", "uploading", "uploaded", "cleared"})


@dataclass(frozen=True)
class Numbered:
    """A file with its counter: its path on the camera and when it was recorded."""

    counter: int
    source_path_raw: bytes
    recorded_at: datetime


def counter_of(name: str, pattern: re.Pattern[str]) -> int | None:
    match = pattern.search(name)
    if match is None:
        return None
    digits = match.group("counter") or ""
    if not digits.isdigit() or len(digits) > MAX_COUNTER_DIGITS:
        return None
    return int(digits)


def _basename(raw: bytes) -> str:
    return raw.rsplit(b"/", 1)[-1].decode("utf-8", "replace")


def findings(
    docking_id: int,
    facts: DockingFacts,
    profile: CameraProfile,
    result: ScanResult,
    known: Sequence[KnownClip],
    earlier_events: Sequence[EvidenceEvent],
) -> list[EvidenceEvent]:
    """The gap, reset and vanished events this docking's scan proves (none on a rescan)."""
    if facts.scanned_before:
        return []
    found = vanished(docking_id, facts, result, known, earlier_events)
    if profile.counter_pattern:
        pattern = re.compile(profile.counter_pattern)
        found += counter_findings(docking_id, facts, pattern, result.clips, known, earlier_events)
    return found


def vanished(
    docking_id: int,
    facts: DockingFacts,
    result: ScanResult,
    known: Sequence[KnownClip],
    earlier_events: Sequence[EvidenceEvent],
) -> list[EvidenceEvent]:
    """Clips seen at an earlier docking, not cleared by bwc-dock, and not on the camera now."""
    if any(refusal.reason == BUDGET_REFUSAL for refusal in result.refused):
        return []  # the listing is incomplete: what it lacks is not proven gone
    present = {clip.video.source_path_raw for clip in result.clips}
    reported = vanished_clip_ids(earlier_events)
    return [
        EvidenceEvent(
            VANISHED_EVENT,
            facts.camera_serial,
            clip.id,
            {
                "docking": docking_id,
                "source_path": clip.source_path,
                "recorded_at": clip.recorded_at.isoformat(),
                "state": clip.state,
                "offloaded": clip.state in _OFFLOADED_STATES,
                "seen_at_docking": clip.docking_id,
            },
        )
        for clip in known
        if clip.docking_id != docking_id
        and clip.state != "cleared"
        and clip.source_path_raw not in present
        and clip.id not in reported
    ]


def counter_findings(
    docking_id: int,
    facts: DockingFacts,
    pattern: re.Pattern[str],
    clips: Iterable[FoundClip],
    known: Sequence[KnownClip],
    earlier_events: Sequence[EvidenceEvent],
) -> list[EvidenceEvent]:
    epoch = counter_epoch(earlier_events)
    earlier = _numbered(
        ((k.source_path_raw, k.recorded_at) for k in known
         if k.docking_id != docking_id and k.docking_id >= epoch),
        pattern,
    )
    current = _numbered(((c.video.source_path_raw, c.recorded_at) for c in clips), pattern)
    events: list[EvidenceEvent] = []
    numbered = {item.source_path_raw: item for item in [*earlier, *current]}
    reset = _reset(earlier, current)
    if reset is not None:
        events.append(EvidenceEvent(COUNTER_RESET_EVENT, facts.camera_serial, None,
                                    {"docking": docking_id, **reset}))
        known_paths = {item.source_path_raw for item in earlier}
        numbered = {i.source_path_raw: i for i in current if i.source_path_raw not in known_paths}
        earlier_events = []  # numbering starts again: earlier gaps belong to the old run
    gap = _gap(docking_id, list(numbered.values()), _reported(earlier_events, epoch))
    if gap is not None:
        events.append(EvidenceEvent(SEQUENCE_GAP_EVENT, facts.camera_serial, None, gap))
    return events


def counter_epoch(earlier_events: Iterable[EvidenceEvent]) -> int:
    """The docking of the camera's last counter restart (0: never): the counter is
    followed from there, so only the clips of that docking and later ones are needed."""
    resets = [e for e in earlier_events if e.event == COUNTER_RESET_EVENT]
    return max((int(e.details.get("docking", 0)) for e in resets), default=0)


def _numbered(files: Iterable[tuple[bytes, datetime]], pattern: re.Pattern[str]) -> list[Numbered]:
    numbered = []
    for raw, recorded_at in files:
        counter = counter_of(_basename(raw), pattern)
        if counter is not None:
            numbered.append(Numbered(counter, raw, recorded_at))
    return numbered


def _reset(earlier: Sequence[Numbered], current: Sequence[Numbered]) -> dict[str, int] | None:
    """A new file numbered at or below the highest number seen before: the counter restarted."""
    if not earlier:
        return None
    highest = max(item.counter for item in earlier)
    known_paths = {item.source_path_raw for item in earlier}
    new = [item.counter for item in current if item.source_path_raw not in known_paths]
    if not new or min(new) > highest:
        return None
    return {"previous_highest": highest, "restarted_at": min(new)}


def _reported(events: Iterable[EvidenceEvent], epoch: int) -> set[int]:
    reported: set[int] = set()
    for item in events:
        if item.event == SEQUENCE_GAP_EVENT and int(item.details.get("docking", 0)) >= epoch:
            reported.update(int(n) for n in item.details.get("missing", []))
    return reported


def _gap(
    docking_id: int, numbered: Sequence[Numbered], reported: set[int]
) -> dict[str, Any] | None:
    """The numbers missing between the lowest and highest counter, not reported before."""
    if not numbered:
        return None
    by_counter = {item.counter: item for item in numbered}
    low, high = min(by_counter), max(by_counter)
    if high - low > MAX_COUNTER_SPAN:
        log.warning("clip.counter_span_ignored", low=low, high=high)
        return None
    missing = [n for n in range(low, high + 1) if n not in by_counter and n not in reported]
    if not missing:
        return None
    return {"docking": docking_id, "missing": missing, "runs": _runs(missing, by_counter)}


def _runs(missing: Sequence[int], by_counter: Mapping[int, Numbered]) -> list[dict[str, Any]]:
    """Each run of consecutive missing numbers, with the recorded times of its neighbours."""
    runs: list[list[int]] = []
    for number in missing:
        if runs and runs[-1][-1] == number - 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    described = []
    for run in runs:
        before = max(n for n in by_counter if n < run[0])
        after = min(n for n in by_counter if n > run[-1])
        described.append({
            "first": run[0],
            "last": run[-1],
            "between": [by_counter[before].recorded_at.isoformat(),
                        by_counter[after].recorded_at.isoformat()],
        })
    return described


# -- the fleet's copy -----------------------------------------------------------------------


def evidence_documents(
    docking_id: int, facts: DockingFacts, events: Iterable[EvidenceEvent]
) -> list[tuple[datetime, dict[str, Any]]]:
    """(time, record) for central storage: the docking itself, then each finding."""
    base = {"schema": EVIDENCE_SCHEMA, "camera": facts.camera_serial, "dock": facts.dock_id,
            "at": facts.docked_at.isoformat(), "docking": docking_id}
    documents = [(facts.docked_at, base | {"kind": "docking"})]
    for item in events:
        if item.event == SEQUENCE_GAP_EVENT:
            documents.extend(
                (facts.docked_at, base | {"kind": "sequence_gap",
                                          "missing": list(range(run["first"], run["last"] + 1)),
                                          "between": run["between"]})
                for run in item.details["runs"]
            )
        elif item.event == COUNTER_RESET_EVENT:
            documents.append((facts.docked_at, base | {"kind": "counter_reset"}))
        elif item.event == VANISHED_EVENT:
            documents.append((facts.docked_at, base | {
                "kind": "clip_vanished",
                "name": _basename(item.details["source_path"].encode()),
                "recorded_at": item.details["recorded_at"],
                "offloaded": item.details["offloaded"],
            }))
    return documents


def share(backend: StorageBackend, documents: Iterable[tuple[datetime, dict[str, Any]]]) -> None:
    for moment, document in documents:
        prefix = DOCKINGS_PREFIX if document["kind"] == "docking" else EVIDENCE_PREFIX
        write_record(backend, prefix, document["camera"], moment, document)


# -- the dock's alarms ------------------------------------------------------------------------


def camera_findings(events: Iterable[EvidenceEvent]) -> tuple[CameraFinding, ...]:
    """The alarm board's view of recent gap and vanished events."""
    found = []
    for item in events:
        if item.camera_serial is None:
            continue
        if item.event == SEQUENCE_GAP_EVENT:
            numbers = ", ".join(str(n) for n in item.details.get("missing", [])[:20])
            found.append(CameraFinding("clip_sequence_gap", item.camera_serial, numbers))
        elif item.event == VANISHED_EVENT:
            path = str(item.details.get("source_path", "?"))
            found.append(CameraFinding("clip_vanished", item.camera_serial, path))
    return tuple(found)


def recent_camera_findings(ledger: Ledger, now: datetime) -> tuple[CameraFinding, ...]:
    """Findings of the last CAMERA_FINDING_HOURS; none when the ledger cannot say."""
    since = now - timedelta(hours=CAMERA_FINDING_HOURS)
    return camera_findings(ledger.camera_evidence_since(since))
