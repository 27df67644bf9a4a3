"""Legal holds for cases: LegalHold ON for every version of a case's objects, OFF again
only when no other active case holds them, each change audited and kept as a create-only
record in central storage (``_holds/<case>/<time>-<dock>.json``) that every dock and
reviewer reads back; removing a hold is one more record, never an edit.

Records come back from shared storage: each is bounded in size, validated, and one bad
record is reported beside the others, never hiding them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bwc_dock.config import Config
from bwc_dock.errors import StorageError, UsageError
from bwc_dock.ledger import Ledger
from bwc_dock.logs import get_logger
from bwc_dock.manifest import MANIFEST_SUFFIX
from bwc_dock.names import safe_name
from bwc_dock.retention import clip_object_keys, require_enforcing_store, retain_until
from bwc_dock.storage.base import StorageBackend, retained_until

log = get_logger("bwc_dock.holds")

HOLDS_PREFIX = "_holds/"
RECORD_FORMAT = "bwc-dock-hold/1"
MAX_RECORD_BYTES = 256 * 1024
MAX_KEYS_PER_RECORD = 10_000
CASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_CASE = re.compile(CASE_PATTERN)
EVENT_NOT_YET = (
    "--event is not supported yet: `bwc-dock coverage --cad FILE --json` lists the clips "
    "of each CAD event; name the case's clips with --key KEY (their sidecars and custody "
    "records are held with them)"
)


class HoldRecord(BaseModel):
    """One create-only record: a case's hold added on some keys, or removed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["bwc-dock-hold/1"]
    case: str = Field(pattern=CASE_PATTERN)
    action: Literal["add", "remove"]
    at: datetime
    dock: str = Field(min_length=1, max_length=128)
    actor: str = Field(min_length=1, max_length=128)
    keys: tuple[str, ...] = Field(default=(), max_length=MAX_KEYS_PER_RECORD)
    reason: str = Field(default="", max_length=4000)
    versions: int = Field(default=0, ge=0)


@dataclass(frozen=True)
class BadRecord:
    key: str
    reason: str


@dataclass
class CaseHold:
    """A case as its records say: the keys it holds now, and its history."""

    case: str
    keys: set[str] = field(default_factory=set)
    records: list[HoldRecord] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.keys)


def check_case(case: str) -> str:
    if not _CASE.match(case):
        raise UsageError(f"case {case!r}: use letters, digits, '.', '_' and '-' (at most "
                         "128, starting with a letter or digit)")
    return case


def _record_key(case: str, dock_id: str, at: datetime) -> str:
    return f"{HOLDS_PREFIX}{case}/{at:%Y%m%dT%H%M%S%fZ}-{safe_name(dock_id.encode())}.json"


def _write_record(config: Config, backend: StorageBackend, record: HoldRecord) -> str:
    """Create-only, never overwritten; retained as long as a clip of the default class
    recorded now, so that the history of a case's hold is not deleted before its clips."""
    key = _record_key(record.case, record.dock, record.at)
    data = (record.model_dump_json(indent=1) + "\n").encode("utf-8")
    default = config.default_retention
    until = retain_until(record.at, default) if default is not None else None
    with retained_until(until):
        backend.put_bytes(key, data, {}, replace=False)
    return key


def _held_objects(backend: StorageBackend, ledger: Ledger, key: str) -> list[str]:
    """The objects a key stands for: a clip of this ledger with its sidecars and custody
    records; any other key with the custody records stored beside it."""
    work = ledger.clip_by_key(key)
    if work is not None and work.remote_key == key:
        return clip_object_keys(backend, work)
    beside = [found for found in backend.list_keys(key + ".") if found.endswith(MANIFEST_SUFFIX)]
    return sorted({key, *beside})


@dataclass(frozen=True)
class HoldResult:
    case: str
    objects: tuple[str, ...]
    versions: int
    record_key: str


def add_hold(
    config: Config, ledger: Ledger, backend: StorageBackend, case: str, keys: Iterable[str],
    actor: str,
) -> HoldResult:
    """LegalHold ON for every version of the keys' objects, then the record, then audit."""
    require_enforcing_store(config)
    check_case(case)
    objects = sorted({obj for key in keys for obj in _held_objects(backend, ledger, key)})
    if not objects:
        raise UsageError("hold add: give at least one --key")
    missing = [obj for obj in objects if backend.head(obj) is None]
    if missing:  # checked first: no hold is set on the others without its record
        raise UsageError(f"hold add: nothing stored under {', '.join(missing)}")
    versions = sum(len(backend.set_legal_hold(obj, on=True)) for obj in objects)
    record = HoldRecord(format=RECORD_FORMAT, case=case, action="add", at=datetime.now(UTC),
                        dock=config.dock.id, actor=actor, keys=tuple(objects),
                        versions=versions)
    record_key = _write_record(config, backend, record)
    ledger.record_event("hold.added", details={"case": case, "keys": objects,
                                               "versions": versions, "record": record_key})
    log.info("hold.added", case=case, objects=len(objects), versions=versions)
    return HoldResult(case, tuple(objects), versions, record_key)


def remove_hold(
    config: Config, ledger: Ledger, backend: StorageBackend, case: str, reason: str, actor: str,
) -> HoldResult:
    """LegalHold OFF for the case's objects that no other active case holds."""
    require_enforcing_store(config)
    check_case(case)
    if not reason.strip():
        raise UsageError("hold remove: --reason must say why the hold ends")
    cases, bad = read_holds(backend)
    for problem in bad:
        log.warning("hold.record_invalid", key=problem.key, reason=problem.reason)
    this = cases.get(case)
    if this is None or not this.active:
        raise UsageError(f"case {case!r} has no active hold")
    still_held = {key for other in cases.values() if other.case != case for key in other.keys}
    released = sorted(this.keys - still_held)
    versions = sum(len(backend.set_legal_hold(obj, on=False)) for obj in released)
    record = HoldRecord(format=RECORD_FORMAT, case=case, action="remove",
                        at=datetime.now(UTC), dock=config.dock.id, actor=actor,
                        keys=tuple(sorted(this.keys)), reason=reason, versions=versions)
    record_key = _write_record(config, backend, record)
    ledger.record_event("hold.removed", details={
        "case": case, "reason": reason, "released": released,
        "kept_for_other_cases": sorted(this.keys & still_held), "record": record_key})
    log.info("hold.removed", case=case, released=len(released), reason=reason)
    return HoldResult(case, tuple(released), versions, record_key)


def read_holds(backend: StorageBackend) -> tuple[dict[str, CaseHold], list[BadRecord]]:
    """Every case's hold from its records, in record order; the records that could not
    be used, each with why."""
    cases: dict[str, CaseHold] = {}
    bad: list[BadRecord] = []
    for key in backend.list_keys(HOLDS_PREFIX):
        try:
            record = _read_record(backend, key)
        except StorageError as error:
            record = BadRecord(key, f"unreadable: {error}")
        if isinstance(record, BadRecord):
            bad.append(record)
            continue
        hold = cases.setdefault(record.case, CaseHold(record.case))
        hold.records.append(record)
        if record.action == "add":
            hold.keys.update(record.keys)
        else:
            hold.keys.difference_update(record.keys)
    return cases, bad


def _read_record(backend: StorageBackend, key: str) -> HoldRecord | BadRecord:
    parts = key[len(HOLDS_PREFIX):].split("/")
    if len(parts) != 2 or not _CASE.match(parts[0]) or not parts[1].endswith(".json"):
        return BadRecord(key, "not a hold record (foreign object)")
    data = _bounded_read(backend, key)
    if isinstance(data, BadRecord):
        return data
    record = _parsed(key, data)
    if isinstance(record, HoldRecord) and record.case != parts[0]:
        return BadRecord(key, f"record of case {record.case!r} under another case's folder")
    return record


def _bounded_read(backend: StorageBackend, key: str) -> bytes | BadRecord:
    stored = backend.head(key)
    if stored is None:
        return BadRecord(key, "gone while being read")
    if stored.size > MAX_RECORD_BYTES:
        return BadRecord(key, f"too large for a hold record ({stored.size} bytes)")
    data = backend.read_bytes(key)
    if data is None or len(data) > MAX_RECORD_BYTES:
        return BadRecord(key, "gone or grown while being read")
    return data


def _parsed(key: str, data: bytes) -> HoldRecord | BadRecord:
    try:
        return HoldRecord.model_validate(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        return BadRecord(key, f"malformed: not JSON ({type(error).__name__})")
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return BadRecord(key, f"malformed: {where}: {first['msg']}")
