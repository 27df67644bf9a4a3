"""Start-up recovery: put everything a crash left behind back into a state work resumes from.

Leases of dead workers fall back, dockings a hand-run ``ingest`` handed over are adopted,
dockings of the last run are ended (the sources dock again what is still present), and
half-written files are removed from staging and from central storage; then missing or
stale SHA256SUMS are written.

Central storage is shared and may be huge or hostile: recovery never walks it. It looks
for this dock's temporary names only in the folders the ledger says this dock was
writing to lately (clips still to upload, clips delivered in the last days, and the
fleet folder). Whatever goes wrong in that storage part is survived: the daemon starts,
runs that part again until it completes, and a failure that is not an outage raises the
``storage_recovery_failed`` alarm until then.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import structlog

from bwc_dock.config import Config
from bwc_dock.coverage.shared import DOCKINGS_PREFIX, EVIDENCE_PREFIX
from bwc_dock.custody import anchor_dockings
from bwc_dock.errors import StorageError, TransientStorageError
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.models import Docking
from bwc_dock.manifest import KeyTemplate
from bwc_dock.names import safe_name
from bwc_dock.root_change import RootRecheck
from bwc_dock.storage.base import StorageBackend

log = structlog.get_logger(__name__)

# A crash leaves temporaries in folders written shortly before it: those of clips
# delivered this long before the ledger's last change are looked in.
RECENT_DELIVERIES = timedelta(days=2)


def recover(
    config: Config,
    ledger: Ledger,
    storage: StorageRecovery,
    owner: str,
    adopt: Callable[[Docking], None],
) -> dict[str, int]:
    """Recover as ``owner`` (the daemon), handing each adopted docking to ``adopt``;
    what was done, by count."""
    summary: dict[str, int] = {}
    for state, count in ledger.recover_leases(all_expired=True).items():
        summary[f"returned_to_{state}"] = count
    for docking in ledger.adopt_dockings(owner, frozenset({"ingest"})):
        adopt(docking)
        summary["ingest_dockings_adopted"] = summary.get("ingest_dockings_adopted", 0) + 1
    summary["dockings_ended"] = ledger.end_stale_dockings()
    summary["staging_partials_removed"] = _remove_staging_partials(config, ledger)
    storage.run(summary)
    log.info("daemon.recovered", **summary)
    return summary


@dataclass
class StorageRecovery:
    """Recovery's storage part: remove this dock's temporaries in its recent folders, then
    anchor. It survives everything; until a run of it completes, the daemon runs it again
    (``retry``), and a failure an outage does not explain stays in ``failure``, which
    raises the ``storage_recovery_failed`` alarm."""

    config: Config
    ledger: Ledger
    backend: StorageBackend
    failure: str = ""  # why the last run failed, when a person must look; "" otherwise
    done: bool = False  # the clean-up and anchoring completed once
    root: RootRecheck | None = None  # a storage folder other than the last run's

    def __post_init__(self) -> None:
        self.root = RootRecheck(self.config, self.ledger, self.backend)

    @property
    def completed(self) -> bool:
        """Nothing left to run again: clean-up done, no re-check of the folder due."""
        return self.done and not (self.root is not None and self.root.pending)

    @property
    def root_changed(self) -> str:
        """The storage_root_changed alarm's detail ("" when none)."""
        return "" if self.root is None else self.root.alarm

    def run(self, summary: dict[str, int]) -> None:
        summary["sums_written"] = 0
        try:
            summary["storage_partials_removed"] = self.backend.cleanup_partials(
                keep=self.ledger.wanted_upload_ids(),
                folders=own_recent_folders(self.config, self.ledger),
            )
            summary["sums_written"] = anchor_dockings(self.ledger, self.backend)
        except TransientStorageError as error:
            # unreachable: the storage_unreachable alarm says so; the next run may succeed
            log.warning("recovery.storage_unreachable", error=str(error))
            return
        except StorageError as error:  # refused: a folder it cannot read, a planted link
            self._failed(summary, str(error))
            return
        except Exception as error:  # noqa: BLE001 - a hostile store must not stop every start
            self._failed(summary, f"{type(error).__name__}: {error}")
            return
        if self.failure:
            log.info("recovery.storage_recovered", **summary)
        if not self.done and self.root is not None:
            self.root.compare()
        self.failure, self.done = "", True

    def retry(self) -> None:
        """Run again what has not completed (the anchorer's thread asks): the clean-up,
        else the re-check of a storage folder that changed since the last run."""
        if not self.done:
            self.run({})
        elif self.root is not None and self.root.pending:
            try:
                self.root.recheck()
            except Exception as error:  # retried at the next round
                log.error("storage.root_recheck_failed", error=f"{type(error).__name__}: {error}",
                          exc_info=_debugging())

    def _failed(self, summary: dict[str, int], error: str) -> None:
        summary["storage_recovery_failed"] = 1
        self.failure = error
        log.error("recovery.storage_failed", error=error,
                  why="central storage refused or held something unexpected; the daemon"
                  " starts anyway and retries", exc_info=_debugging())


def _debugging() -> bool:
    """A traceback only at debug level (an error is one line otherwise)."""
    import logging

    return logging.getLogger().isEnabledFor(logging.DEBUG)


def own_recent_folders(config: Config, ledger: Ledger) -> set[str]:
    """Folders (keys, "" = the root) this dock may have left a temporary in: those of
    clips still to upload and of recent deliveries, with every parent (a docking's
    SHA256SUMS lies in its clips' common folder), and the fleet folder."""
    pending, delivered_keys = ledger.recent_work(RECENT_DELIVERIES)
    keys = KeyTemplate(config.storage.key_template, ledger.dock_id)
    wanted = list(delivered_keys)
    for work in pending:
        if work.sha256 is not None:
            wanted.append(keys.key(work))
        wanted += [keys.key(work, sidecar.name, sidecar.sha256)
                   for sidecar in work.sidecars if sidecar.sha256 is not None]
    if config.fleet.enabled and config.fleet.path is None:
        wanted.append(config.fleet.prefix + "document")
    # each docking's coverage records (written at its first scan) lie in per-camera folders
    for serial in ledger.docked_camera_serials():
        camera = safe_name(serial.encode())
        wanted += [f"{DOCKINGS_PREFIX}{camera}/record", f"{EVIDENCE_PREFIX}{camera}/record"]
    folders = {""}
    for key in wanted:
        folder = posixpath.dirname(key)
        while folder:
            folders.add(folder)
            folder = posixpath.dirname(folder)
    return folders


def _remove_staging_partials(config: Config, ledger: Ledger) -> int:
    removed = 0
    clips_root = config.staging_dir / "clips"
    if not clips_root.is_dir():
        return 0
    leased = ledger.leased_clip_ids()  # dead workers' leases are released already
    for leftover in clips_root.glob("*/*.part"):
        if leftover.parent.name.isdigit() and int(leftover.parent.name) in leased:
            continue  # a hand-run command beside us is writing it right now
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed
