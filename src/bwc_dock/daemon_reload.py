"""SIGHUP: the running daemon takes a new configuration, or says loudly what it cannot.

The new file is read and validated whole first: a bad one is refused with the key named
(``config.reload_rejected``) and the running configuration kept. Of a good one, what a
running daemon can take (``LIVE_KEYS``) is applied at once: camera profiles (a camera
docked after the reload is matched and scanned by them; one docked before keeps the
profile it docked under), watch folders (a new one is watched, the subfolders of a
removed one undock), intervals, alarm thresholds and scan limits. Every other key
(storage, dock id, state and staging folders, ledger, workers, fleet, logging,
retention, the udev source on or off) keeps its running value until a restart, and the
changed ones are named in a journal warning (``config.restart_needed``), in the status
line systemd shows, and in ``bwc-dock status``: the daemon writes what its last reload
left to do to a small file in the state folder (``daemon_note.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from bwc_dock.config import Config, load_config, parse_config
from bwc_dock.daemon_note import ReloadNote, write_note
from bwc_dock.errors import BwcDockError, ConfigError
from bwc_dock.scanning import folder_profile
from bwc_dock.sources.base import Source, SourceListener
from bwc_dock.udev_rules import render_rules

log = structlog.get_logger(__name__)

# What a running daemon applies from a reload; a key is live when it or a table holding
# it is named here. Anything not named needs a restart: a key added later is safe (it
# is reported, never silently ignored) until someone makes it live on purpose.
LIVE_KEYS = (
    "camera",
    "sources.watch_dirs",
    "sources.rescan_interval_seconds",
    "alarms",
    "service.heartbeat_seconds",
    "service.metrics_textfile",
    "service.udev_rules_file",
    "dock.staged_retention_hours",
    "dock.max_clip_size_gb",
    "dock.max_scan_depth",
    "dock.max_scan_entries",
    "dock.max_clock_offset_seconds",
    "dock.clock_sync_alarm",
    "coverage",  # read by commands only: nothing in the daemon to change
    "disclosure",
)


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ; an array of tables (``camera``) is one key."""
    return sorted(_differences(old.model_dump(mode="json"), new.model_dump(mode="json"), ""))


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str) -> set[str]:
    found: set[str] = set()
    for name in old.keys() | new.keys():
        before, after = old.get(name), new.get(name)
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            found |= _differences(before, after, f"{prefix}{name}.")
        elif before != after:
            found.add(f"{prefix}{name}")
    return found


def is_live(key: str) -> bool:
    return any(key == live or key.startswith(f"{live}.") for live in LIVE_KEYS)


def running_config(current: Config, new: Config) -> Config:
    """``current`` with the live keys of ``new``: what the daemon runs with after a
    reload. Raises ConfigError when the two do not fit together."""
    merged = current.model_dump()
    taken = new.model_dump()
    for key in changed_keys(current, new):
        if is_live(key):
            *tables, name = key.split(".")
            into, source = merged, taken
            for table in tables:
                into, source = into[table], source[table]
            into[name] = source[name]
    return parse_config(merged, origin="the new configuration beside what needs a restart")


class Reloader:
    """Reloads for one daemon: what it started with, where its note goes, its sources."""

    def __init__(
        self,
        config_path: Path,
        started: Config,
        started_at: datetime,
        sources: list[Source],
        listener: SourceListener,
    ) -> None:
        self.config_path = config_path
        self.started = started  # what storage, dock and workers were built from
        self.started_at = started_at
        self.sources = sources  # the daemon's own list: a first watch folder joins it
        self.listener = listener
        self.restart_needed: tuple[str, ...] = ()

    def reload(self, current: Config) -> Config:
        """The configuration to run with from now on (``current`` when refused)."""
        try:
            new = load_config(self.config_path)
            running = running_config(current, new)
        except ConfigError as error:
            log.error("config.reload_rejected", error=str(error), kept="the running config")
            self._write_note(str(error), udev_rules_stale=False)
            return current
        try:
            self._apply_to_sources(current, running)
        except (OSError, BwcDockError) as error:  # e.g. a new watch folder not creatable
            log.error("config.reload_sources_failed", error=str(error),
                      retry="the sources look again at every rescan")
        self.restart_needed = tuple(k for k in changed_keys(self.started, new) if not is_live(k))
        if self.restart_needed:
            log.warning(
                "config.restart_needed",
                keys=list(self.restart_needed),
                kept="their running values until bwc-dock restarts",
            )
        stale = _udev_rules_stale(running)
        if stale:
            log.warning(
                "config.udev_rules_stale",
                path=str(running.service.udev_rules_file),
                hint="run `bwc-dock config check` as root: until then a camera only a new "
                "profile claims is not mounted",
            )
        self._write_note(None, udev_rules_stale=stale)
        log.info(
            "config.reloaded",
            path=str(self.config_path),
            applied=changed_keys(current, running),
            restart_needed=list(self.restart_needed),
        )
        return running

    def _apply_to_sources(self, current: Config, running: Config) -> None:
        if running.camera != current.camera:
            for source in self.sources:
                source.use_profiles(running.camera)
        profile = folder_profile(running)
        if running.sources.watch_dirs == current.sources.watch_dirs and (
            profile == folder_profile(current)
        ):
            return
        from bwc_dock.sources.watch import WatchFolderSource

        watch = next((s for s in self.sources if isinstance(s, WatchFolderSource)), None)
        if watch is not None:
            watch.watch(running.sources.watch_dirs, profile)
        elif running.sources.watch_dirs:
            watch = WatchFolderSource(running.sources.watch_dirs, profile)
            self.sources.append(watch)
            watch.start(self.listener)

    def _write_note(self, rejected: str | None, *, udev_rules_stale: bool) -> None:
        note = ReloadNote(
            os.getpid(), self.started_at.isoformat(), self.restart_needed, rejected,
            udev_rules_stale,
        )
        try:
            write_note(self.started.dock.state_dir, note)
        except OSError as error:  # the journal has it all the same
            log.warning("config.reload_note_failed", error=str(error))


def _udev_rules_stale(config: Config) -> bool:
    """Installed udev rules that differ from the profiles' (none installed: no udev here)."""
    if not config.sources.udev:
        return False
    try:
        installed = config.service.udev_rules_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return installed != render_rules(config.camera)
