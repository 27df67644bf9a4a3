"""Remote keys and the JSON manifest stored beside every clip.

Keys come from the configured template and ledger values only (camera serial
sanitised, ledger id, sanitised name); nothing from a camera path reaches a key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bwc_dock import __version__
from bwc_dock.ledger import ClipWork
from bwc_dock.scanner import safe_name

MANIFEST_SUFFIX = ".json"


@dataclass(frozen=True)
class KeyTemplate:
    template: str
    dock_id: str

    def key(self, work: ClipWork, name: str | None = None) -> str:
        return self.template.format(
            camera=safe_name(work.camera_serial.encode()),
            recorded=work.recorded_at,
            clip_id=work.id,
            name=name or work.name,
            dock=safe_name(self.dock_id.encode()),
        )


def manifest_key(clip_key: str) -> str:
    return clip_key + MANIFEST_SUFFIX


def build_manifest(
    work: ClipWork,
    *,
    dock_id: str,
    clip_key: str,
    sidecar_keys: dict[int, str],
    officer_id: str | None,
    times: dict[str, datetime | None],
    audit_head: tuple[int, str],
) -> bytes:
    document: dict[str, Any] = {
        "schema": "bwc-dock/manifest/1",
        "clip_id": work.id,
        "camera": work.camera_serial,
        "dock": dock_id,
        "officer": officer_id,
        "original_path": work.source_path,
        "size": work.size,
        "sha256": work.sha256,
        "key": clip_key,
        "recorded_at": work.recorded_at.isoformat(),
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
        "software": f"bwc-dock {__version__}",
    }
    return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
