"""Which sources of docked cameras the daemon runs, from the configuration."""

from __future__ import annotations

import structlog

from bwc_dock.config import Config
from bwc_dock.scanning import folder_profile
from bwc_dock.sources.base import Source

log = structlog.get_logger(__name__)


def open_sources(config: Config) -> list[Source]:
    sources: list[Source] = []
    if config.sources.watch_dirs:
        from bwc_dock.sources.watch import WatchFolderSource

        sources.append(WatchFolderSource(config.sources.watch_dirs, folder_profile(config)))
    if config.sources.udev:
        try:
            from bwc_dock.sources.udev import UdevSource  # type: ignore[import-not-found, unused-ignore]
        except ImportError as error:
            log.error("source.udev_unavailable", error=str(error))
        else:
            sources.append(UdevSource(config))
    return sources
