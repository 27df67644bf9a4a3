"""The command line (a contract: scripts and tests rely on it; see DESIGN.md).

Exit codes: 0 all good, 1 a problem was found, 2 bad usage or configuration. Errors
are one line on stderr; tracebacks only with ``--log-level debug``. ``--json`` prints
one JSON document on stdout.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bwc_dock import udev_rules
from bwc_dock.config import Config, load_config, resolve_config_path
from bwc_dock.errors import EXIT_PROBLEM, EXIT_USAGE, BwcDockError, UsageError
from bwc_dock.ledger import ClipState, ClipWork, Ledger
from bwc_dock.logs import configure_logging

log = structlog.get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


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


pass_context = click.make_pass_decorator(Context)


def _hand_actor() -> str:
    import getpass

    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_option", metavar="PATH", help="configuration file")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto")
@click.version_option(package_name="bwc-dock")
@click.pass_context
def cli(
    click_context: click.Context, config_option: str | None, log_level: str | None, log_format: str
) -> None:
    """bwc-dock: offload body-worn cameras to central evidence storage, hash-verified."""
    click_context.obj = Context(config_option, log_level, log_format)


@cli.command()
@pass_context
def run(context: Context) -> None:
    """Run the daemon in the foreground (systemd runs this)."""
    from bwc_dock.daemon import Daemon
    from bwc_dock.sources.factory import open_sources
    from bwc_dock.storage import open_backend

    context.logging(context.config.logging.level)
    config = context.config
    with context.ledger("daemon") as ledger:
        backend = open_backend(config)
        try:
            daemon = Daemon(config, ledger, backend, open_sources(config), context.config_path)
            sys.exit(daemon.run())
        finally:
            backend.close()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@pass_context
def status(context: Context, as_json: bool) -> None:
    """Counts by state, cameras docked, oldest pending clip, storage reachable."""
    from bwc_dock.handrun import daemon_alive

    context.logging("warning")
    with context.ledger(_hand_actor()) as ledger:
        beat = ledger.heartbeat()
        alive = daemon_alive(ledger, context.config.service.heartbeat_seconds)
        oldest = ledger.oldest_pending_at()
        document = {
            "clips": ledger.counts_by_state(),
            "cameras": [
                {"serial": d.camera_serial, "device": d.device, "docked_at": _iso(d.docked_at)}
                for d in ledger.active_dockings()
            ],
            "oldest_pending_at": _iso(oldest),
            "storage_reachable": _storage_reachable(context, beat, alive),
            "daemon_alive": alive,
            "daemon_status": beat.status_line if beat and alive else None,
            "last_error": beat.last_error if beat else None,
            "staging_free_bytes": beat.staging_free_bytes if beat else None,
            "dock": context.config.dock.id,
        }
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    _print_status(document)


def _storage_reachable(context: Context, beat: Any, alive: bool) -> bool | None:
    """The daemon's last finding when it runs; else ask the store now."""
    if alive and beat is not None and beat.storage_reachable is not None:
        return bool(beat.storage_reachable)
    from bwc_dock.storage import open_backend

    backend = open_backend(context.config)
    try:
        backend.check_reachable()
        return True
    except BwcDockError:
        return False
    finally:
        backend.close()


def _print_status(document: dict[str, Any]) -> None:
    console = Console()
    table = Table(title=f"bwc-dock {document['dock']}")
    table.add_column("state")
    table.add_column("clips", justify="right")
    for state, count in document["clips"].items():
        style = "bold red" if state == "quarantined" and count else None
        table.add_row(state, str(count), style=style)
    console.print(table)
    console.print(
        f"daemon alive: {document['daemon_alive']}"
        + (f" ({document['daemon_status']})" if document["daemon_status"] else "")
    )
    console.print(f"cameras docked: {len(document['cameras'])}")
    for camera in document["cameras"]:
        console.print(f"  {camera['serial']} on {camera['device']} since {camera['docked_at']}")
    console.print(f"oldest pending clip: {document['oldest_pending_at'] or '-'}")
    console.print(f"storage reachable: {document['storage_reachable']}")
    if document["last_error"]:
        console.print(f"last error: {document['last_error']}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--camera", "camera_serial", metavar="SERIAL")
@click.option("--state", type=click.Choice([str(s) for s in ClipState]))
@click.option(
    "--prioritize",
    "prioritize_id",
    type=int,
    metavar="ID",
    help="upload this clip before all others",
)
@pass_context
def clips(
    context: Context,
    as_json: bool,
    camera_serial: str | None,
    state: str | None,
    prioritize_id: int | None,
) -> None:
    """The ledger's clips."""
    context.logging("warning")
    with context.ledger(_hand_actor()) as ledger:
        if prioritize_id is not None:
            if not ledger.set_priority(prioritize_id, 100):
                raise BwcDockError(f"no clip {prioritize_id}")
            click.echo(f"clip {prioritize_id} will be uploaded first")
            return
        rows = [_clip_document(w) for w in ledger.clips(camera_serial, state)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("id", "camera", "path", "size", "state", "sha256"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["camera_serial"],
            row["source_path"],
            str(row["size"]),
            row["state"],
            (row["sha256"] or "")[:16],
        )
    Console().print(table)


def _clip_document(work: ClipWork) -> dict[str, Any]:
    return {
        "id": work.id,
        "camera_serial": work.camera_serial,
        "source_path": work.source_path,
        "size": work.size,
        "sha256": work.sha256,
        "state": str(work.state),
        "remote_key": work.remote_key,
        "recorded_at": _iso(work.recorded_at),
        "upload_attempts": work.upload_attempts,
        "last_error": work.last_error,
        "sidecars": [
            {
                "source_path": s.source_path,
                "size": s.size,
                "sha256": s.sha256,
                "remote_key": s.remote_key,
            }
            for s in work.sidecars
        ],
    }


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--camera-serial", required=True, metavar="SERIAL")
@click.option("--wait", is_flag=True, help="return when every clip is uploaded")
@click.option(
    "--timeout",
    "timeout_seconds",
    type=float,
    default=3600.0,
    show_default=True,
    help="with --wait: give up waiting after this many seconds",
)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def ingest(
    context: Context,
    path: Path,
    camera_serial: str,
    wait: bool,
    timeout_seconds: float,
    as_json: bool,
) -> None:
    """One-shot offload of a folder (an SD card, a camera mounted by hand)."""
    from bwc_dock.handrun import ingest_folder

    context.logging("info")
    serial = _checked_serial(camera_serial)
    with context.ledger(_hand_actor()) as ledger, _progress_sink() as sink:
        report = ingest_folder(
            context.config,
            ledger,
            path,
            serial,
            wait=wait,
            timeout_seconds=timeout_seconds,
            progress=sink,
        )
    summary = {
        "docking_id": report.docking_id,
        "clips": report.clips,
        "new": report.new,
        "refused_entries": report.refused,
        "states": report.states,
        "handed_over": report.handed_over,
        "problems": report.problems,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"{report.clips} clips ({report.new} new), {report.refused} entries refused; "
            + ", ".join(f"{n} {s}" for s, n in sorted(report.states.items()))
        )
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
    sys.exit(0 if report.ok else EXIT_PROBLEM)


def _checked_serial(serial: str) -> str:
    from bwc_dock.scanner import safe_name

    if not serial or safe_name(serial.encode()) != serial:
        raise UsageError(f"--camera-serial {serial!r}: use only letters, digits, '.', '_', '-'")
    return serial


@contextmanager
def _progress_sink() -> Iterator[Any]:
    """A rich progress bar on a terminal, nothing otherwise."""
    from bwc_dock.handrun import ProgressSink

    if not sys.stdout.isatty():
        yield None
        return

    class _Bar(ProgressSink):
        def __init__(self, progress: Progress) -> None:
            self.progress = progress
            self.tasks: dict[str, Any] = {}

        def update(self, done: int, total: int, label: str) -> None:
            if label not in self.tasks:
                self.tasks[label] = self.progress.add_task(label, total=total)
            self.progress.update(self.tasks[label], completed=done, total=total)

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        yield _Bar(progress)


@cli.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("check")
@pass_context
def config_check(context: Context) -> None:
    """Validate the configuration, naming the key of each error."""
    config = context.config
    click.echo(
        f"{context.config_path}: ok (dock {config.dock.id}, storage "
        f"{config.storage.backend}, {len(config.camera)} camera profile(s))"
    )
    rules = udev_rules.sync_installed(config.camera, config.service.udev_rules_file)
    if rules is udev_rules.RulesState.UPDATED:
        click.echo(f"{config.service.udev_rules_file}: rewritten from the camera profiles, "
                   "udev reloaded (a camera docked now is tagged at its next docking)")
    elif rules is udev_rules.RulesState.STALE:
        raise BwcDockError(
            f"{config.service.udev_rules_file} differs from the camera profiles and cannot be "
            "rewritten here: run `bwc-dock config check` as root"
        )


@cli.command("udev-rules")
@pass_context
def udev_rules_command(context: Context) -> None:
    """Print the udev rules for the configured camera profiles."""
    click.echo(udev_rules.render_rules(context.config.camera), nl=False)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def main() -> None:
    """Entry point: one line on stderr for every error, and the error's exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        sys.exit(EXIT_USAGE)
    except click.ClickException as error:
        click.echo(f"bwc-dock: {error.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except BwcDockError as error:
        _debug_traceback()
        click.echo(f"bwc-dock: {error}", err=True)
        sys.exit(error.exit_code)
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line, exit 1
        _debug_traceback()
        click.echo(f"bwc-dock: unexpected error: {type(error).__name__}: {error}", err=True)
        sys.exit(EXIT_PROBLEM)


def _debug_traceback() -> None:
    arguments = sys.argv[1:]
    if "--log-level=debug" in arguments or ("--log-level", "debug") in pairwise(arguments):
        traceback.print_exc()


# Commands that live in their own modules register themselves on ``cli``.
from bwc_dock import cli_custody  # noqa: E402, F401
