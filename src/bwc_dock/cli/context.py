"""What every command shares: the configuration and ledger of this run, the hand-run
actor, JSON output, progress bars.

Imports stay lazy here and in every command module: ``bwc-dock --help`` loads click
and nothing else, and ``status``/``clips`` load neither SQLAlchemy, alembic, structlog
nor rich unless they need them (IT staff run ``status`` in monitoring loops).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import click

if TYPE_CHECKING:
    from rich.progress import Progress

    from bwc_dock.config import Config
    from bwc_dock.ledger import ClipWork, Ledger
    from bwc_dock.ledger.snapshots import DockingRecord, HeartbeatRecord
    from bwc_dock.storage import StorageBackend


class LedgerReader(Protocol):
    """The read-only questions ``status`` and ``clips`` ask: answered by the
    :class:`Ledger` facade or, much faster to start, by the quick sqlite3 reader."""

    def heartbeat(self) -> HeartbeatRecord | None: ...
    def counts_by_state(self) -> dict[str, int]: ...
    def oldest_pending_at(self) -> datetime | None: ...
    def active_dockings(self) -> list[DockingRecord]: ...
    def clips(
        self, camera_serial: str | None = None, state: str | None = None
    ) -> list[ClipWork]: ...


class Context:
    def __init__(self, config_option: str | None, log_level: str | None, log_format: str) -> None:
        from bwc_dock.config import resolve_config_path  # light: pydantic loads with load_config

        self.config_path = resolve_config_path(config_option)
        self.log_level = log_level
        self.log_format = log_format
        self._config: Config | None = None
        self._pending_log_level: str | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from bwc_dock.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    def logging(self, default_level: str, *, deferred: bool = False) -> None:
        """Configure logging now, or (``deferred``) only once the ledger facade or the
        storage backend is opened: the quick read path loads no structlog at all."""
        if deferred:
            self._pending_log_level = self.log_level or default_level
            return
        self._configure_logging(self.log_level or default_level, at_first_event=False)

    def _configure_logging(self, level: str, *, at_first_event: bool) -> None:
        from bwc_dock.logs import configure_logging

        configure_logging(level, self.log_format, at_first_event=at_first_event)
        self._pending_log_level = None

    def _configure_pending_logging(self, *, at_first_event: bool = False) -> None:
        if self._pending_log_level is not None:
            self._configure_logging(self._pending_log_level, at_first_event=at_first_event)

    @contextmanager
    def ledger(self, actor: str) -> Iterator[Ledger]:
        from bwc_dock.ledger import Ledger

        self._configure_pending_logging()
        ledger = Ledger.open(self.config, actor)
        try:
            yield ledger
        finally:
            ledger.close()

    @contextmanager
    def reader(self, actor: str) -> Iterator[LedgerReader]:
        """Read-only ledger questions: the quick sqlite3 reader when the ledger allows it
        (SQLite, schema up to date), else the facade (which may migrate first)."""
        from bwc_dock.ledger.quick import QuickReader

        quick = QuickReader.open(self.config.ledger_url)
        if quick is None:
            with self.ledger(actor) as ledger:
                yield ledger
            return
        try:
            yield quick
        finally:
            quick.close()

    @contextmanager
    def backend(self) -> Iterator[StorageBackend]:
        from bwc_dock.storage import open_backend

        # the storage package logs through bwc_dock.logs.get_logger: structlog (and
        # rich, which it pulls in) loads only if the store has something to say
        self._configure_pending_logging(at_first_event=True)
        backend = open_backend(self.config)
        try:
            yield backend
        finally:
            backend.close()


pass_context = click.make_pass_decorator(Context)


def hand_actor() -> str:
    """The audit log's actor for a command run by hand."""
    import getpass

    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


def emit(document: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(document, indent=2))


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class ProgressBar:
    """A rich progress bar per label; hand-run work reports through ``update``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def update(self, done: int, total: int, label: str) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done, total=total)


@contextmanager
def progress_bar() -> Iterator[ProgressBar | None]:
    """A rich progress bar on a terminal, nothing otherwise."""
    if not sys.stdout.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        yield ProgressBar(progress)


def progress_callback(bar: ProgressBar | None) -> Callable[[int, int, str], None] | None:
    return bar.update if bar is not None else None
