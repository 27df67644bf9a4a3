"""What every command shares: the configuration and ledger of this run, the hand-run
actor, JSON output, progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bwc_dock.config import Config, load_config, resolve_config_path
from bwc_dock.ledger import Ledger
from bwc_dock.logs import configure_logging
from bwc_dock.storage import StorageBackend, open_backend


class Context:
    def __init__(self, config_option: str | None, log_level: str | None, log_format: str) -> None:
        self.config_path = resolve_config_path(config_option)
        self.log_level = log_level
        self.log_format = log_format
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def logging(self, default_level: str) -> None:
        configure_logging(self.log_level or default_level, self.log_format)

    @contextmanager
    def ledger(self, actor: str) -> Iterator[Ledger]:
        ledger = Ledger.open(self.config, actor)
        try:
            yield ledger
        finally:
            ledger.close()

    @contextmanager
    def backend(self) -> Iterator[StorageBackend]:
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
