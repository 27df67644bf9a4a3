"""Small JSON records in central storage that every dock writes and every review reads.

Each record is written once (create-only) under a name made from its subject, its time
and the SHA-256 of its own bytes, so two docks never write over each other, the same
record written twice is the same object, and nothing is ever replaced: a correction is
a new record. Reading them back treats the store as shared, not trusted: a listed key
is read only when its size is small, its bytes are validated, and one bad object is
reported beside the others, never in their place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bwc_dock.errors import BwcDockError
from bwc_dock.names import safe_name
from bwc_dock.storage import StorageBackend
from bwc_dock.storage.base import DocumentTooLarge

ASSIGNMENTS_PREFIX = "_assignments/"
EXPLANATIONS_PREFIX = "_coverage/explanations/"
EVIDENCE_PREFIX = "_coverage/cameras/"  # what dockings found: gaps, resets, vanished files
# one record per docking, kept apart: a review reads only each camera's newest
DOCKINGS_PREFIX = "_coverage/dockings/"
RECORD_SUFFIX = ".json"
# A record is a few hundred bytes, a manifest a few KiB; anything larger is not ours.
MAX_RECORD_BYTES = 256 * 1024
# Reads in flight at once: a review reads thousands of small objects, each a round trip.
READERS = 16

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """A stored object that could not be used, and why (shown as text)."""

    key: str
    reason: str


def encode(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def compact_time(moment: datetime) -> str:
    """A UTC time as one key segment that sorts as time does: 20261124T081500Z."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S") + "Z"


def record_key(prefix: str, subject: str, moment: datetime, data: bytes) -> str:
    """``<prefix><subject>/<time>.<sha16 of data>.json``: unique per content, never reused."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{prefix}{safe_name(subject.encode())}/{compact_time(moment)}.{digest}{RECORD_SUFFIX}"


def write_record(
    backend: StorageBackend,
    prefix: str,
    subject: str,
    moment: datetime,
    document: Mapping[str, Any],
) -> str:
    """Store ``document`` create-only; return its key (the same content twice is one object)."""
    data = encode(document)
    key = record_key(prefix, subject, moment, data)
    backend.put_bytes(key, data, {"sha256": hashlib.sha256(data).hexdigest()})
    return key


def read_small(backend: StorageBackend, key: str) -> bytes | str:
    """The bytes of a small object, or why they were not read."""
    try:
        data = backend.read_bytes(key, MAX_RECORD_BYTES)
    except DocumentTooLarge:
        return f"too large for a record (over {MAX_RECORD_BYTES} bytes)"
    except (BwcDockError, OSError) as error:
        return f"unreadable: {error}"
    if data is None:
        return "gone while being read"
    return data


def read_many(backend: StorageBackend, keys: Iterable[str]) -> Iterator[tuple[str, bytes | str]]:
    """(key, bytes or why not) for every key, in the order given, read concurrently."""
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        yield from pool.map(lambda key: (key, read_small(backend, key)), keys)


def load_json(data: bytes, schema: str) -> dict[str, Any] | str:
    """The JSON object in ``data`` if its schema is ``schema``; else why not."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        return f"malformed: not JSON ({type(error).__name__})"
    if not isinstance(document, dict) or document.get("schema") != schema:
        return f"foreign: not a {schema} record"
    return document


def read_records(
    backend: StorageBackend,
    prefix: str,
    schema: str,
    build: Callable[[str, dict[str, Any]], T],
) -> tuple[list[T], list[Problem]]:
    """Every record under ``prefix``: the ones ``build`` accepts, and the others with why.
    ``build`` raises ValueError (pydantic's ValidationError is one) for a bad record."""
    keys = sorted(k for k in backend.list_keys_unordered(prefix) if k.endswith(RECORD_SUFFIX))
    return parse_records(read_many(backend, keys), schema, build)


def parse_records(
    read: Iterable[tuple[str, bytes | str]],
    schema: str,
    build: Callable[[str, dict[str, Any]], T],
) -> tuple[list[T], list[Problem]]:
    records: list[T] = []
    problems: list[Problem] = []
    for key, data in read:
        document = data if isinstance(data, str) else load_json(data, schema)
        if isinstance(document, str):
            problems.append(Problem(key, document))
            continue
        try:
            records.append(build(key, document))
        except ValueError as error:
            problems.append(Problem(key, f"malformed: {first_line(error)}"))
    return records, problems


def first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return " ".join(text[:3])[:300] if text else type(error).__name__


def aware(moment: datetime, what: str) -> datetime:
    """A time read from a record must say its zone; returned in UTC."""
    if moment.tzinfo is None:
        raise ValueError(f"{what} has no time zone")
    return moment.astimezone(UTC)
