"""What the daemon knows of central storage: reachable, unreachable or refusing us.

The main loop checks the store every so often; an uploader that meets a permanent
refusal reports it at once. Alarms, STATUS, the metrics and the heartbeat read it.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from bwc_dock.alarms import StorageState
from bwc_dock.errors import PermanentStorageError, StorageError
from bwc_dock.storage.base import StorageBackend

log = structlog.get_logger(__name__)


class StorageHealth:
    def __init__(self, when_reachable: Callable[[StorageBackend], None] | None = None) -> None:
        self.reachable: bool | None = None  # None until the first check
        self._refused = False
        # asked after each check the store answered (the daemon's Object Lock probe)
        self._when_reachable = when_reachable

    def check(self, backend: StorageBackend) -> StorageError | None:
        """Ask the store; the error when it is unreachable (logged once per outage)."""
        try:
            backend.check_reachable()
        except StorageError as error:
            if self.reachable is not False:
                log.error("storage.unreachable", error=str(error))
            self.reachable = False
            self._refused = isinstance(error, PermanentStorageError)
            return error
        if self.reachable is False:
            log.info("storage.reachable")
        self.reachable = True
        self._refused = False
        if self._when_reachable is not None:
            self._when_reachable(backend)
        return None

    def refused(self) -> None:
        """An uploader met a permanent refusal (credentials, permissions)."""
        self.reachable = False
        self._refused = True

    @property
    def known_down(self) -> bool:
        return self.reachable is False

    @property
    def state(self) -> StorageState:
        if self.reachable is None:
            return StorageState.UNKNOWN
        if self.reachable:
            return StorageState.OK
        return StorageState.REFUSED if self._refused else StorageState.UNREACHABLE
