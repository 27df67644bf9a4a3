"""Start-up recovery: put everything a crash left behind back into a state work resumes from.

Leases of dead workers fall back, dockings a hand-run ``ingest`` handed over are adopted,
dockings of the last run are ended (the sources dock again what is still present), and
half-written files are removed from staging and from central storage; then missing or
stale SHA256SUMS are written.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from bwc_dock.config import Config
from bwc_dock.custody import anchor_dockings
from bwc_dock.errors import StorageError
from bwc_dock.ledger import Ledger
from bwc_dock.ledger.models import Docking
from bwc_dock.storage.base import StorageBackend

log = structlog.get_logger(__name__)


def recover(
    config: Config,
    ledger: Ledger,
    backend: StorageBackend,
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
    try:
        summary["storage_partials_removed"] = backend.cleanup_partials(
            keep=ledger.wanted_upload_ids()
        )
        summary["sums_written"] = anchor_dockings(ledger, backend)
    except StorageError as error:
        # unreachable: no anchoring now either (the anchorer thread tries every minute)
        log.warning("recovery.storage_unreachable", error=str(error))
        summary["sums_written"] = 0
    log.info("daemon.recovered", **summary)
    return summary


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
