"""One wiring of the stages: the staging area, copiers and uploaders built from config,
ledger and backend, the same way for the daemon, hand-run ``ingest`` and ``resync``."""

from __future__ import annotations

from collections.abc import Callable

from bwc_dock.config import Config
from bwc_dock.copier import Copier
from bwc_dock.errors import PermanentStorageError
from bwc_dock.handoff import UploadHandoff
from bwc_dock.ledger import Ledger
from bwc_dock.lock_probe import StartProbe
from bwc_dock.part_digests import KeptPartDigests
from bwc_dock.retention import upload_retention
from bwc_dock.staging import StagingArea
from bwc_dock.storage.base import ProgressCallback, StorageBackend
from bwc_dock.uploader import Uploader


def staging_area(config: Config) -> StagingArea:
    """The dock's staging folder, keeping ``[dock] staging_reserve_mb`` free."""
    return StagingArea(config.staging_dir, config.dock.staging_reserve_mb * 1024**2)


class Stages:
    """Builds the workers of one process; every worker it makes shares one staging area."""

    def __init__(self, config: Config, ledger: Ledger, backend: StorageBackend) -> None:
        self.config = config
        self.ledger = ledger
        self.backend = backend
        self.staging = staging_area(config)
        # one register for all the process's workers: a copier leaves pass 2 to any
        # uploader that waits for work (handoff.py)
        self.handoff = UploadHandoff()
        # the digests of a clip's parts from the copier's read, for its upload
        self.part_digests = KeptPartDigests(backend.part_size_for)
        # whether the store enforces Object Lock, asked once it answers (daemon start)
        self.lock_probe = StartProbe(config)

    def copier(self, owner: str, on_staged: Callable[[], None] | None = None) -> Copier:
        """A copier for one worker (one lease owner)."""
        return Copier(
            self.ledger, self.staging, owner, on_staged, self.handoff, self.part_digests
        )

    def uploader(
        self,
        owner: str,
        throttle: ProgressCallback | None = None,
        on_permanent_error: Callable[[PermanentStorageError], None] | None = None,
    ) -> Uploader:
        """An uploader for one worker (one lease owner)."""
        return Uploader(
            self.ledger,
            self.backend,
            self.config.staging_dir,
            self.config.storage,
            owner,
            throttle,
            on_permanent_error,
            self.handoff,
            upload_retention(self.config, self.ledger),
            self.part_digests,
        )
