"""Central storage backends behind one port; choosing one is a lookup."""

from __future__ import annotations

from collections.abc import Callable

from bwc_dock.config import Config
from bwc_dock.storage.base import StorageBackend, StoredObject


def _file_backend(config: Config) -> StorageBackend:
    from bwc_dock.storage.filesystem import FileBackend

    return FileBackend.from_config(config)


def _s3_backend(config: Config) -> StorageBackend:
    # imported lazily: boto3 costs half a second at start and the file backend needs none of it
    from bwc_dock.storage.s3 import S3Backend

    backend: StorageBackend = S3Backend.from_config(config.storage, config.dock.id)
    return backend


BACKENDS: dict[str, Callable[[Config], StorageBackend]] = {
    "file": _file_backend,
    "s3": _s3_backend,
}


def open_backend(config: Config) -> StorageBackend:
    return BACKENDS[config.storage.backend](config)


__all__ = ["BACKENDS", "StorageBackend", "StoredObject", "open_backend"]
