"""Reading a CAD (dispatch) export: one CSV row per officer per call.

The file comes from outside bwc-dock and is treated as such: a row that cannot be used
(a missing value, a time without a zone, cleared not after dispatched, a call longer
than ``max_call_hours``) is set aside with its line number and the reason, and every
other row is still reviewed. Only a file that cannot be read at all, or lacks a
required column, is a usage error.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bwc_dock.config import CoverageConfig, CoverageHeadings
from bwc_dock.errors import UsageError

MAX_FIELD = 256  # characters of one value (an id, a call type) kept
MAX_CAD_BYTES = 512 * 1024 * 1024
_REQUIRED = ("event_id", "officer_badge_id", "dispatched", "cleared")


@dataclass(frozen=True)
class Call:
    """One officer's part in one call, times in UTC."""

    line: int
    event: str
    officer: str
    dispatched: datetime
    cleared: datetime
    call_type: str
    clearance_code: str


@dataclass(frozen=True)
class Invalid:
    """A CAD row that could not be used, and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class CadFile:
    calls: tuple[Call, ...]
    invalid: tuple[Invalid, ...]


class _RowProblem(ValueError):
    """Why one row is unusable (the message is shown with its line number)."""


def heading_key(heading: str) -> str:
    """Headings compare ignoring case, surrounding space, and "_" written for " "."""
    return " ".join(heading.replace("_", " ").split()).casefold()


def read_cad(path: Path, config: CoverageConfig) -> CadFile:
    """Every row of the CAD file at ``path``: the usable calls and the rest with reasons."""
    try:
        if path.stat().st_size > MAX_CAD_BYTES:
            raise UsageError(f"{path}: larger than {MAX_CAD_BYTES // 1024**2} MiB")
        with path.open(newline="", encoding="utf-8-sig") as source:
            return parse_cad(source, config, str(path))
    except OSError as error:
        raise UsageError(f"{path}: cannot read the CAD file: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not UTF-8 text ({error.reason})") from error
    except csv.Error as error:
        raise UsageError(f"{path}: not a CSV file: {error}") from error


def parse_cad(lines: Iterable[str], config: CoverageConfig, origin: str = "<cad>") -> CadFile:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise UsageError(f"{origin}: empty file, no header row")
    columns = _columns(header, config.headings, origin)
    names = config.headings.model_dump()
    zone = ZoneInfo(config.timezone) if config.timezone else None
    limit = timedelta(hours=config.max_call_hours)
    calls: list[Call] = []
    invalid: list[Invalid] = []
    for line, values in _numbered_rows(reader):
        if not any(value.strip() for value in values):
            continue  # a blank line is no row
        try:
            calls.append(_call(line, values, columns, zone, limit, names))
        except _RowProblem as problem:
            invalid.append(Invalid(line, str(problem)))
    return CadFile(tuple(calls), tuple(invalid))


def _numbered_rows(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Rows with the file line each starts on (a quoted value may span lines)."""
    line = 2
    for values in reader:
        yield line, values
        line = reader.line_num + 1  # type: ignore[attr-defined]


def _columns(header: list[str], headings: CoverageHeadings, origin: str) -> dict[str, int]:
    """Which column holds each field; a required one missing is a usage error."""
    positions = {heading_key(heading): index for index, heading in enumerate(header)}
    columns: dict[str, int] = {}
    for field_name, heading in headings.model_dump().items():
        index = positions.get(heading_key(heading))
        if index is not None:
            columns[field_name] = index
    missing = [getattr(headings, name) for name in _REQUIRED if name not in columns]
    if missing:
        raise UsageError(
            f"{origin}: no column {', '.join(repr(name) for name in missing)} in the header "
            "(set the headings in [coverage.headings])"
        )
    return columns


def _value(values: list[str], columns: Mapping[str, int], name: str) -> str:
    index = columns.get(name)
    if index is None or index >= len(values):
        return ""
    return values[index].strip()[:MAX_FIELD]


def _call(
    line: int,
    values: list[str],
    columns: Mapping[str, int],
    zone: ZoneInfo | None,
    limit: timedelta,
    names: Mapping[str, str],
) -> Call:
    found = {name: _value(values, columns, name) for name in columns}
    empty = [names[name] for name in _REQUIRED if not found.get(name)]
    if empty:
        raise _RowProblem(f"missing value: {', '.join(empty)}")
    dispatched = parse_time(found["dispatched"], zone, names["dispatched"])
    cleared = parse_time(found["cleared"], zone, names["cleared"])
    if cleared <= dispatched:
        raise _RowProblem(f"{names['cleared']} is not after {names['dispatched']}")
    if cleared - dispatched > limit:
        hours = limit.total_seconds() / 3600
        raise _RowProblem(f"call longer than max_call_hours ({hours:g} h)")
    return Call(
        line,
        found["event_id"],
        found["officer_badge_id"],
        dispatched,
        cleared,
        found.get("call_type", ""),
        found.get("clearance_code", ""),
    )


def parse_time(text: str, zone: ZoneInfo | None, what: str) -> datetime:
    """ISO 8601 with ``Z`` or an offset; a time without one only with [coverage] timezone."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise _RowProblem(f"{what}: not an ISO 8601 time: {text!r}") from error
    if moment.tzinfo is None:
        if zone is None:
            raise _RowProblem(
                f"{what}: {text!r} has no time zone (add Z or an offset, "
                "or set [coverage] timezone)"
            )
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)
