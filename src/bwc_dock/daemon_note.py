"""What the running daemon's last reload left to do, kept where ``bwc-dock status`` reads it.

A small JSON file in the state folder, rewritten (crash-safely) at every reload and
named after the daemon's run (pid and start time, as its heartbeat has them), so that a
note an earlier run left behind is never shown for this one. Light on purpose:
``status`` imports it and must start at once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from bwc_dock.durable import write_bytes_durably

NOTE_NAME = "daemon-reload.json"
_MAX_NOTE_BYTES = 64 * 1024
# the heartbeat's start time may come back from the ledger rounded
_SAME_START_SECONDS = 1.0


@dataclass(frozen=True)
class ReloadNote:
    pid: int
    started_at: str  # the daemon's start (ISO 8601), as in its heartbeat
    restart_needed: tuple[str, ...]  # changed keys that take effect only after a restart
    rejected: str | None  # why the last reload was refused; None when it was taken
    udev_rules_stale: bool  # the installed udev rules do not tag every profile's cameras


def write_note(state_dir: Path, note: ReloadNote) -> None:
    write_bytes_durably(state_dir / NOTE_NAME, json.dumps(asdict(note)).encode())


def read_note(state_dir: Path, pid: int, started_at: datetime) -> ReloadNote | None:
    """The note of the daemon running as ``pid`` since ``started_at`` (its heartbeat's);
    None when that run has not reloaded, or the note is another run's or unreadable."""
    try:
        with (state_dir / NOTE_NAME).open("rb") as note_file:
            document = json.loads(note_file.read(_MAX_NOTE_BYTES))
        note = ReloadNote(
            pid=int(document["pid"]),
            started_at=str(document["started_at"]),
            restart_needed=tuple(str(key) for key in document["restart_needed"]),
            rejected=None if document["rejected"] is None else str(document["rejected"]),
            udev_rules_stale=bool(document["udev_rules_stale"]),
        )
        started = datetime.fromisoformat(note.started_at)
        same_run = note.pid == pid and (
            abs((started - started_at).total_seconds()) < _SAME_START_SECONDS
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return note if same_run else None
