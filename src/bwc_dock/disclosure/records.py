"""The custody records of a clip, as central storage holds them.

Central storage is shared, not trusted: a record is read with a size bound, must parse
as one of our manifests about this very key, and all records of one key must agree on
its SHA-256 (the key is content-addressed). What they say is still only a claim until
the clip's bytes, read while they are bagged, hash to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from bwc_dock.errors import BwcDockError
from bwc_dock.manifest import MANIFEST_SCHEMA, MANIFEST_SUFFIX
from bwc_dock.storage.base import StorageBackend

MAX_RECORD_BYTES = 1024 * 1024  # a custody record is a few KiB; more is not one of ours
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DisclosureError(BwcDockError):
    """The disclosure bag cannot be made as asked; nothing was published."""


@dataclass(frozen=True)
class StoredFile:
    """One object to bag: a clip or one of its sidecars."""

    key: str
    sha256: str
    size: int
    name: str  # the camera's file name (hostile: sanitised before use as a path)


@dataclass(frozen=True)
class CustodyRecord:
    key: str  # where the record lies in central storage
    content: bytes  # verbatim, as stored
    dock: str
    clip_id: int
    audit_head: tuple[int, str]
    clip: StoredFile
    sidecars: tuple[StoredFile, ...]
    camera: str
    recorded_at: str
    staged_at: str | None


def read_bounded(backend: StorageBackend, key: str, limit: int = MAX_RECORD_BYTES) -> bytes:
    """A small document's bytes, refused past ``limit`` without reading the rest."""
    content = bytearray()
    with closing(backend.read_chunks(key)) as chunks:
        for chunk in chunks:
            content += chunk
            if len(content) > limit:
                raise DisclosureError(f"{key}: larger than {limit} bytes; not a custody record")
    return bytes(content)


def record_keys(backend: StorageBackend, clip_key: str) -> Iterator[str]:
    """Keys of the custody records of ``clip_key``: each offload's, and a legacy one."""
    suffix = re.escape(MANIFEST_SUFFIX)
    pattern = re.compile(re.escape(clip_key) + r"\.[^./]+\.clip-[0-9]+" + suffix)
    for key in backend.list_keys(clip_key + "."):
        if pattern.fullmatch(key):
            yield key
    if backend.head(clip_key + MANIFEST_SUFFIX) is not None:
        yield clip_key + MANIFEST_SUFFIX


def held_clip_keys(backend: StorageBackend, held: Iterable[str]) -> list[str]:
    """The clip keys among the objects a legal hold names (a hold names each clip's
    sidecars and custody records too): those with a custody record of their own."""
    return sorted(key for key in set(held)
                  if not key.endswith(MANIFEST_SUFFIX) and next(record_keys(backend, key), None))


def custody_records(backend: StorageBackend, clip_key: str) -> list[CustodyRecord]:
    """Every custody record of ``clip_key``, checked to agree; an error when there is none."""
    records = []
    for key in record_keys(backend, clip_key):
        record = parse_record(key, read_bounded(backend, key))
        if record is not None and record.clip.key == clip_key:
            records.append(record)
    if not records:
        raise DisclosureError(f"{clip_key}: no custody record of this key in central storage"
                              " (not a clip key bwc-dock stored?)")
    hashes = {record.clip.sha256 for record in records}
    if len(hashes) > 1:
        raise DisclosureError(f"{clip_key}: its custody records disagree on its SHA-256"
                              f" ({', '.join(sorted(hashes))})")
    return records


def parse_record(key: str, content: bytes) -> CustodyRecord | None:
    """The record's facts; None for JSON that is not one of our custody records."""
    try:
        document = json.loads(content)
        if not isinstance(document, dict) or document.get("schema") != MANIFEST_SCHEMA:
            return None
        head = document["audit_chain_head"]
        return CustodyRecord(
            key=key,
            content=content,
            dock=str(document["dock"]),
            clip_id=int(document["clip_id"]),
            audit_head=(int(head["id"]), str(head["hash"])),
            clip=_stored_file(document, document["original_path"]),
            sidecars=tuple(_stored_file(s, s["original_path"]) for s in document["sidecars"]),
            camera=str(document["camera"]),
            recorded_at=str(document["recorded_at"]),
            staged_at=_optional_text(document.get("times", {}).get("staged_at")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DisclosureError(f"{key}: not a readable custody record ({error!r})") from error


def _stored_file(document: dict[str, Any], original_path: object) -> StoredFile:
    sha256 = str(document["sha256"])
    if not _HEX_SHA256.match(sha256):
        raise ValueError(f"sha256 {sha256!r} is not lowercase hex")
    size = int(document["size"])
    if size < 0:
        raise ValueError(f"size {size} is negative")
    name = str(original_path).replace("\\", "/").rsplit("/", 1)[-1]
    return StoredFile(str(document["key"]), sha256, size, name)


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)
