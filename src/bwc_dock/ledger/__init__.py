"""The ledger: SQLite (or any SQLAlchemy URL) holding cameras, dockings, clips and audit."""

from bwc_dock.ledger.core import ClipWork, Ledger, SidecarWork
from bwc_dock.ledger.states import ClipState

__all__ = ["ClipState", "ClipWork", "Ledger", "SidecarWork"]
