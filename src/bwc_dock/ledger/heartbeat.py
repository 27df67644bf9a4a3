"""The daemon's heartbeat: one row the running daemon rewrites, read (read_model.py) by
``status`` and by hand-run commands deciding whether a daemon is alive."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bwc_dock.ledger.models import DaemonHeartbeat, utc_now
from bwc_dock.ledger.store import Store


def beat(store: Store, host: str, pid: int, started_at: datetime, **fields: Any) -> None:
    with store.transaction() as session:
        row = session.get(DaemonHeartbeat, 1)
        if row is None:
            row = DaemonHeartbeat(
                id=1, host=host, pid=pid, started_at=started_at, beat_at=utc_now()
            )
            session.add(row)
        row.host, row.pid, row.started_at, row.beat_at = host, pid, started_at, utc_now()
        for name, value in fields.items():
            setattr(row, name, value)

