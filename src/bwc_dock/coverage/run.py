"""A coverage review from end to end: the CAD file and central storage in, a Review out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from bwc_dock.config import Config
from bwc_dock.coverage.cad import Call, read_cad
from bwc_dock.coverage.records import (
    read_assignments,
    read_clips,
    read_evidence,
    read_explanations,
    read_last_dockings,
)
from bwc_dock.coverage.report import Review
from bwc_dock.coverage.review import Fleet, index_fleet, review
from bwc_dock.coverage.shared import Problem
from bwc_dock.errors import UsageError
from bwc_dock.storage import StorageBackend


@dataclass(frozen=True)
class Period:
    """Calls dispatched in [since, until); either end open."""

    since: datetime | None = None
    until: datetime | None = None

    def holds(self, call: Call) -> bool:
        return (self.since is None or call.dispatched >= self.since) and (
            self.until is None or call.dispatched < self.until
        )


def period(first_day: str | None, last_day: str | None, zone_name: str | None) -> Period:
    """--from D and --to D as days (both included) in [coverage] timezone, else UTC."""
    zone: tzinfo = ZoneInfo(zone_name) if zone_name else UTC
    since = _day_start(first_day, "--from", zone, 0)
    until = _day_start(last_day, "--to", zone, 1)
    if since and until and until <= since:
        raise UsageError(f"--to {last_day} is before --from {first_day}")
    return Period(since, until)


def _day_start(text: str | None, option: str, zone: tzinfo, days: int) -> datetime | None:
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError as error:
        raise UsageError(f"{option} {text!r}: give a date like 2026-11-24") from error
    start = datetime.combine(day + timedelta(days=days), time(0), tzinfo=zone)
    return start.astimezone(UTC)


def load_fleet(backend: StorageBackend) -> tuple[Fleet, list[Problem]]:
    """Every dock's custody records and the fleet's assignments, explanations and evidence."""
    assignments, assignment_problems = read_assignments(backend)
    explanations, explanation_problems = read_explanations(backend)
    evidence, evidence_problems = read_evidence(backend)
    dockings, docking_problems = read_last_dockings(backend)
    clips, clip_problems = read_clips(backend)
    problems = [
        *clip_problems,
        *assignment_problems,
        *explanation_problems,
        *evidence_problems,
        *docking_problems,
    ]
    return index_fleet(clips, assignments, explanations, [*evidence, *dockings]), problems


def run_review(
    config: Config, backend: StorageBackend, cad_path: Path, within: Period, as_of: datetime
) -> Review:
    cad = read_cad(cad_path, config.coverage)
    calls = [call for call in cad.calls if within.holds(call)]
    fleet, problems = load_fleet(backend)
    rows = review(calls, fleet, config.coverage, as_of)
    return Review(
        tuple(rows),
        cad.invalid,
        tuple(sorted(problems, key=lambda problem: problem.key)),
    )
