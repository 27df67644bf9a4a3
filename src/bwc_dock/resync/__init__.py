"""``bwc-dock resync``: reconcile the ledger, staging, central storage and docked cameras.

Resync first *plans*: it reads every view and returns what is wrong and what it would
do about it as repair values (``repairs.py``: adopt, quarantine a file, rescan,
re-queue, keep a wrong object aside under ``_conflicts/`` before removing it, rewrite
SUMS, clean partial uploads, redo the work, cannot repair). ``--dry-run`` reports the
plan and changes nothing (no audit row, no file moved). Otherwise ``apply.py`` carries
each repair out through the ledger's own methods (every state change audited and
checked against the state machine) and, when no daemon runs, does the copying and
uploading itself through the daemon's own worker loops (``scheduler.py``: copying while
uploading, making room in staging, reading again what an upload sent back) under the
same leases; with a daemon alive, putting clips back in the queue is enough.

Phases, in order (``run.py``), each planned once the one before is carried out: staged
files the ledger lost are adopted when their hash is known, staged files nobody knows
are moved to ``staging/quarantine`` (never deleted); docked cameras are rescanned; clips
whose central copy is missing or wrong are re-queued from staging, or re-read from a
docked camera; damaged staged copies of clips not yet uploaded are re-read from a docked
camera; leftovers of interrupted uploads are removed and the queued work done when no
daemon runs; the per-docking SHA256SUMS anchors are rewritten where they are missing or
stale. What none of these can fix is listed as unrepairable and makes the command exit 1.
"""

from bwc_dock.resync.repairs import Action, RepairKind, Unrepairable
from bwc_dock.resync.run import Resync, ResyncReport

__all__ = ["Action", "RepairKind", "Resync", "ResyncReport", "Unrepairable"]
