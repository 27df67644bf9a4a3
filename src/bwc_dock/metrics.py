"""A Prometheus textfile for node_exporter's textfile collector.

Dock PCs are usually watched by a node_exporter the agency already runs; its textfile
collector reads ``*.prom`` files from one folder. The daemon writes a small snapshot
there each loop (``[service] metrics_textfile``). The file is replaced atomically, so
the collector never reads half a file: a temporary name that does not end in ``.prom``
in the same folder, fsync, ``os.replace``, fsync the folder (durable.py).

The exposition format is a few lines of text, so no client library is needed; the
tests check the output with prometheus_client's own parser. (prometheus_client's
``write_to_textfile`` does not fsync, and its registry model fits a process that
counts events, not one that reports a snapshot read from the ledger.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bwc_dock.durable import write_all_hashing, write_durably

PREFIX = "bwc_dock"
_TEXTFILE_MODE = 0o644  # node_exporter runs as its own user and must read the file


@dataclass(frozen=True)
class MetricsSnapshot:
    """What the daemon knows at the end of one loop; counters come from the ledger."""

    dock_id: str
    clips_by_state: Mapping[str, int]  # every state, zeros included
    bytes_copied_total: int  # bytes read off cameras into staging, ever
    bytes_uploaded_total: int  # bytes confirmed in central storage, ever
    oldest_pending_seconds: float | None  # age of the oldest clip not yet uploaded
    cameras_docked: int
    staging_free_bytes: int | None  # None: could not be read (left out, never 0)
    storage_reachable: bool | None  # None: not probed yet
    errors_total: Mapping[str, int] = field(default_factory=dict)  # kind -> count, ever
    alarms: Mapping[str, bool] = field(default_factory=dict)  # every alarm kind -> active
    last_loop_timestamp: float | None = None  # Unix time the main loop last ran
    dock_clock_synchronized: bool | None = None  # None: not known
    # each camera's clock minus the dock's at its latest docking, where measured
    camera_clock_offsets: Mapping[str, float | None] = field(default_factory=dict)


def render(snapshot: MetricsSnapshot) -> str:
    """The snapshot in the Prometheus text exposition format (version 0.0.4)."""
    return "".join(f"{line}\n" for line in _lines(snapshot))


def write_textfile(path: Path, snapshot: MetricsSnapshot) -> None:
    """Replace ``path`` with the rendered snapshot atomically; raise OSError on failure."""
    text = render(snapshot).encode("utf-8")

    def fill(descriptor: int) -> str:
        os.fchmod(descriptor, _TEXTFILE_MODE)  # exactly this mode, whatever the umask
        return write_all_hashing(descriptor, text)

    # the collector reads *.prom only, so it never picks up the temporary .part file
    write_durably(path, fill, mode=_TEXTFILE_MODE)


def _lines(snapshot: MetricsSnapshot) -> Iterator[str]:
    dock = {"dock": snapshot.dock_id}
    yield from _family(
        "clips",
        "gauge",
        "Clips in the ledger by state.",
        [
            ({**dock, "state": state}, count)
            for state, count in sorted(snapshot.clips_by_state.items())
        ],
    )
    yield from _family(
        "bytes_total",
        "counter",
        "Bytes moved, by step.",
        [
            ({**dock, "step": "copied"}, snapshot.bytes_copied_total),
            ({**dock, "step": "uploaded"}, snapshot.bytes_uploaded_total),
        ],
    )
    # no pending clip: age 0, so an alert on "age > limit" simply stays quiet
    oldest = snapshot.oldest_pending_seconds or 0.0
    yield from _family(
        "oldest_pending_seconds",
        "gauge",
        "Age of the oldest clip not yet in central storage (0 when none).",
        [(dock, oldest)],
    )
    yield from _family(
        "errors_total",
        "counter",
        "Errors by kind.",
        [({**dock, "kind": kind}, count) for kind, count in sorted(snapshot.errors_total.items())],
    )
    yield from _family(
        "alarm",
        "gauge",
        "Whether each alarm is active (1) or not (0).",
        [
            ({**dock, "alarm": kind}, int(active))
            for kind, active in sorted(snapshot.alarms.items())
        ],
    )
    yield from _family(
        "cameras_docked", "gauge", "Cameras docked now.", [(dock, snapshot.cameras_docked)]
    )
    if snapshot.staging_free_bytes is not None:
        yield from _family(
            "staging_free_bytes",
            "gauge",
            "Free space on the filesystem that holds the staging area.",
            [(dock, snapshot.staging_free_bytes)],
        )
    if snapshot.storage_reachable is not None:
        yield from _family(
            "storage_reachable",
            "gauge",
            "Central storage answered (1) or not.",
            [(dock, int(snapshot.storage_reachable))],
        )
    if snapshot.dock_clock_synchronized is not None:
        yield from _family(
            "dock_clock_synchronized",
            "gauge",
            "The dock PC's clock is kept by a time server (1) or not (0), says the kernel.",
            [(dock, int(snapshot.dock_clock_synchronized))],
        )
    yield from _family(
        "camera_clock_offset_seconds",
        "gauge",
        "Each camera's clock minus the dock's at its latest docking, where measured.",
        [
            ({**dock, "camera": serial}, offset)
            for serial, offset in sorted(snapshot.camera_clock_offsets.items())
            if offset is not None
        ],
    )
    if snapshot.last_loop_timestamp is not None:
        yield from _family(
            "last_loop_timestamp_seconds",
            "gauge",
            "Unix time the daemon's main loop last ran.",
            [(dock, snapshot.last_loop_timestamp)],
        )


def _family(
    name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]
) -> Iterator[str]:
    if not samples:
        return
    family = f"{PREFIX}_{name}"
    yield f"# HELP {family} {help_text}"
    yield f"# TYPE {family} {kind}"
    for labels, value in samples:
        yield f"{family}{{{_labels(labels)}}} {_number(value)}"


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())


def _escape(value: str) -> str:
    """Label values escape backslash, double quote and newline, nothing else."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
