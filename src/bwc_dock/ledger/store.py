"""What every part of the ledger shares: the engine, who writes, and one transaction.

Each ledger function takes a :class:`Store` and opens one transaction of its own; the
audit rows it writes carry this dock's id and the actor named here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine
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
    def plain_reading(self) -> Iterator[PlainSQL]:
        """A reading transaction that takes plain SQL with ``?`` placeholders, as the
        quick reader's sqlite3 connection does: the read model (read_model.py) asks
        both the same way."""
        with self.reader.connect() as connection, connection.begin():
            yield PlainSQL(connection)

    def audit(self, session: Session, event: str, **fields: Any) -> None:
        """One chained audit row inside the caller's transaction."""
        append(session, self.chain, dock_id=self.dock_id, actor=self.actor, event=event, **fields)


@dataclass(frozen=True)
class PlainSQL:
    """A connection's ``execute`` as sqlite3 has it, through SQLAlchemy (whose hooks, the
    tests' statement traces among them, still see every statement)."""

    connection: Connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> CursorResult[Any]:
        return self.connection.exec_driver_sql(sql, tuple(parameters))
