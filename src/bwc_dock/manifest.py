"""Remote keys and the JSON custody records (manifests) stored beside every clip.

Keys come from the configured template and ledger values only (camera serial and file
name sanitised, recording time, SHA-256); nothing from a camera path reaches a key. The
default template is content-addressed, so every dock of a fleet gives the same content
from the same camera the same key (docs/design.md, "Keys").

Each offload leaves its own manifest, ``{clip_key}.{dock}.clip-{clip_id}.json``: the
dock and its ledger id name the offload, so no dock ever writes over another's record,
and a dock's record is written once (create-only).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bwc_dock import __version__
from bwc_dock.durable import PART_SUFFIX
from bwc_dock.ledger import ClipWork
from bwc_dock.ledger.snapshots import DockingClocks
from bwc_dock.names import safe_name

MANIFEST_SUFFIX = ".json"
MANIFEST_SCHEMA = "bwc-dock/manifest/1"
SHORT_SHA256 = 16  # hex digits of the SHA-256 in the {sha16} key field


@dataclass(frozen=True)
class KeyTemplate:
    template: str
    dock_id: str

    def key(self, work: ClipWork, name: str | None = None, sha256: str | None = None) -> str:
        """The key of the clip, or of its sidecar ``name`` whose hash is ``sha256``:
        a sidecar takes the clip's camera and recording time, its own name and hash."""
        if name is None:
            name, sha256 = work.name, work.sha256
        if sha256 is None:
            raise ValueError(f"clip {work.id}: {name} has no SHA-256 yet; it has no key")
        stem, extension = posixpath.splitext(name)
        key = self.template.format(
            camera=safe_name(work.camera_serial.encode()),
            recorded=work.recorded_at,
            name=name,
            stem=stem,
            ext=extension,
            sha256=sha256,
            sha16=sha256[:SHORT_SHA256],
            clip_id=work.id,
            dock=safe_name(self.dock_id.encode()),
        )
        # A sidecar called X.part must not get a key that reads as a temporary file
        # (which folder storage refuses and start-up recovery would remove).
        return key[: -len(PART_SUFFIX)] + "_part" if key.endswith(PART_SUFFIX) else key


def manifest_key(clip_key: str, dock_id: str, clip_id: int) -> str:
    """The key of one offload's custody record: beside the clip object, named by the
    dock and that dock's ledger id of the clip (unique per offload together)."""
    return f"{clip_key}.{safe_name(dock_id.encode())}.clip-{clip_id}{MANIFEST_SUFFIX}"


def legacy_manifest_key(clip_key: str) -> str:
    """Where releases before per-offload records put a clip's manifest."""
    return clip_key + MANIFEST_SUFFIX


def own_manifest_pattern(dock_id: str) -> re.Pattern[str]:
    """Matches this dock's manifest keys; groups ``clip_key`` and ``clip_id``."""
    dock = re.escape(safe_name(dock_id.encode()))
    return re.compile(
        rf"^(?P<clip_key>.+)\.{dock}\.clip-(?P<clip_id>[0-9]+){re.escape(MANIFEST_SUFFIX)}$"
    )


@dataclass(frozen=True)
class ManifestIdentity:
    """What names the offload a manifest records."""

    dock: str
    clip_id: int
    sha256: str


def manifest_identity(content: bytes) -> ManifestIdentity | None:
    """The dock, clip id and hash a stored manifest records; None if it is none of ours."""
    try:
        document = json.loads(content)
        if not isinstance(document, dict) or document.get("schema") != MANIFEST_SCHEMA:
            return None
        return ManifestIdentity(
            str(document["dock"]), int(document["clip_id"]), str(document["sha256"])
        )
    except (ValueError, KeyError, TypeError):
        return None


def build_manifest(
    work: ClipWork,
    *,
    dock_id: str,
    clip_key: str,
    sidecar_keys: dict[int, str],
    officer_id: str | None,
    times: dict[str, datetime | None],
    audit_head: tuple[int, str],
    device: Mapping[str, str | None],
    clocks: DockingClocks | None = None,
) -> bytes:
    """``device``: the identity the dock saw when the clip was docked (USB ids, profile,
    filesystem), null where it saw none, as a watch folder has no USB ids."""
    document: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "clip_id": work.id,
        "camera": work.camera_serial,
        "dock": dock_id,
        "docking_id": work.docking_id,
        "device": dict(device),
        "officer": officer_id,
        "original_path": work.source_path,
        "size": work.size,
        "sha256": work.sha256,
        "key": clip_key,
        # UTC, corrected by the docking's camera clock offset when recorded_at_corrected;
        # the camera's own reading and any daylight-saving flag beside it
        "recorded_at": work.recorded_at.isoformat(),
        **work.time.document(),
        "times": {step: (at.isoformat() if at else None) for step, at in times.items()},
        "sidecars": [
            {
                "original_path": s.source_path,
                "name": s.name,
                "size": s.size,
                "sha256": s.sha256,
                "key": sidecar_keys[s.id],
            }
            for s in work.sidecars
        ],
        "audit_chain_head": {"id": audit_head[0], "hash": audit_head[1]},
        # the docking's clocks: the camera's offset and whether the dock's own clock was
        # synchronised (null: not known)
        "docking_clocks": (clocks or DockingClocks()).document(),
        "software": f"bwc-dock {__version__}",
    }
    return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
