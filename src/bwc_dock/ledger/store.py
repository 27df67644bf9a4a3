"""What every part of the ledger shares: the engine, who writes, and one transaction.

Each ledger function takes a :class:`Store` and opens one transaction of its own; the
audit rows it writes carry this dock's id and the actor named here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bwc_dock.ledger.audit import ChainHead, append
from bwc_dock.ledger.db import READING_OPTION


@dataclass(frozen=True)
class Store:
    engine: Engine
    dock_id: str
    actor: str
    lease: timedelta
    # the audit chain's head as this process last wrote it (a hint checked by each append)
    chain: ChainHead = field(default_factory=ChainHead, compare=False)
    # the same engine and pool, its transactions marked as reading (see db._on_begin)
    reader: Engine = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reader", self.engine.execution_options(**{READING_OPTION: True}))

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A transaction that may write: it takes SQLite's write lock when it begins."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: a consistent snapshot that neither waits for
        nor holds up the writers (copiers, verifiers, uploaders); a write in it fails."""
        with Session(self.reader, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def driver_reading(self) -> Iterator[Any]:
        """A reading transaction's own DB-API (sqlite3) connection: the read model
        (read_model.py) asks its plain SQL through it, as the quick reader does."""
        with self.reader.connect() as connection, connection.begin():
            yield connection.connection.driver_connection

    def audit(self, session: Session, event: str, **fields: Any) -> None:
        """One chained audit row inside the caller's transaction."""
        append(session, self.chain, dock_id=self.dock_id, actor=self.actor, event=event, **fields)
