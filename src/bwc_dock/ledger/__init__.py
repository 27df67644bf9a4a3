"""The ledger: a SQLite file holding cameras, dockings, clips and audit.

All SQL of bwc-dock lives in this package, one module per kind of question; the
:class:`Ledger` facade (``facade.py``) is what the rest of bwc-dock holds, and it hands
out frozen snapshots (``snapshots.py``), never ORM rows. The package imports nothing
above it (no stage, no daemon, no command).

- ``models.py``: the tables; ``db.py``: engine, SQLite durability, migrations.
- ``states.py``: the clip state machine; ``transitions.py``: the one checked, audited
  way a clip row changes.
- ``store.py``: engine, dock id and actor shared by the parts, one transaction each.
- ``dockings.py``: cameras arriving and leaving; ``discovery.py``: clips a scan found.
- ``queue.py``: claim, lease, finish, release, quarantine, re-queue.
- ``read_model.py``: what ``status`` and ``clips`` ask (heartbeat, counts, open
  dockings, lists of clips) as plain SQL, shared by the facade and the quick reader;
  ``counters.py``: the triggers that keep the counts and byte totals.
- ``reports.py``: other lists, counts and totals; ``custody.py``: SHA256SUMS, manifest and
  custody-export facts; ``assignments.py``: who carried each camera when.
- ``audit.py``: the hash chain; ``audit_log.py``: events, rows and head of the log.
- ``multipart.py``: the multipart journal; ``heartbeat.py``: the daemon's pulse;
  ``leases.py``: lease-owner names that say whether their process lives.
- ``quick.py``: the read model over a stdlib sqlite3 connection, so that ``status`` and
  ``clips`` start at once.

Importing the package costs nothing: its names load on first use, so that a command
needing only :class:`ClipState` (the ``clips --state`` choices) or the quick reader
(``quick.py``) does not load SQLAlchemy and every query module first.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bwc_dock.ledger.facade import Ledger
    from bwc_dock.ledger.snapshots import ClipWork, SidecarWork
    from bwc_dock.ledger.states import ClipState

_HOMES = {
    "Ledger": "bwc_dock.ledger.facade",
    "ClipWork": "bwc_dock.ledger.snapshots",
    "SidecarWork": "bwc_dock.ledger.snapshots",
    "ClipState": "bwc_dock.ledger.states",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)


__all__ = ["ClipState", "ClipWork", "Ledger", "SidecarWork"]
