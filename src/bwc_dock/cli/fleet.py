"""``bwc-dock fleet``: every dock's status document from central storage, one row each.

The documents are written by other docks, and anyone who can write to the store can
write one: their text is shown as text (no Rich markup, control characters escaped),
and an entry that is not a status document is listed as such, never a crash.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from bwc_dock.cli.context import Context, emit, iso, pass_context
from bwc_dock.errors import EXIT_PROBLEM
from bwc_dock.names import display_text

if TYPE_CHECKING:
    from bwc_dock.fleet_view import Verdict


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@click.option(
    "--stale-after",
    "stale_after_minutes",
    type=click.FloatRange(min=0, min_open=True),
    metavar="MINUTES",
    help="a dock is stale after this long without a heartbeat "
    "(default: 5, or 3 of the dock's publish intervals if longer)",
)
@pass_context
def fleet(context: Context, as_json: bool, stale_after_minutes: float | None) -> None:
    """Every dock's status from central storage; exit 1 when one is stale, alarmed or
    not verified as signed by its dock's registered key."""
    if click.get_current_context().invoked_subcommand is not None:
        return  # a subcommand (fleet cameras) does its own work
    # lazy: the fleet module brings the daemon's status types, other commands need none
    from bwc_dock.fleet import fleet_backend
    from bwc_dock.fleet_view import TRUST_NOTE, judge, read_fleet

    context.logging("warning")
    config = context.config
    stale_after = timedelta(minutes=stale_after_minutes) if stale_after_minutes else None
    backend = fleet_backend(config)
    try:
        reports = read_fleet(backend, config.fleet.prefix)
    finally:
        backend.close()
    now = datetime.now(UTC)
    verdicts = judge(reports, now, stale_after)
    healthy = bool(verdicts) and all(verdict.healthy for verdict in verdicts)
    if as_json:
        emit(
            {
                "prefix": config.fleet.prefix,
                "checked_at": iso(now),
                "stale_after_minutes": stale_after_minutes,
                "healthy": healthy,
                "proves": TRUST_NOTE,
                "docks": [_verdict_document(verdict, now) for verdict in verdicts],
            }
        )
    else:
        _print_table(verdicts, now)
        click.echo(TRUST_NOTE)
    if not verdicts:
        click.echo(f"bwc-dock: no fleet status documents under {config.fleet.prefix!r}", err=True)
    if not healthy:
        sys.exit(EXIT_PROBLEM)


def _verdict_document(verdict: Verdict, now: datetime) -> dict[str, Any]:
    report, document = verdict.report, verdict.report.document
    entry: dict[str, Any] = {
        "key": report.key,
        "state": verdict.state,
        # verified, unsigned, bad signature, no registered key (see "proves")
        "signature": None if report.signature is None else str(report.signature),
        "alarmed": verdict.alarmed,
        "problem": report.problem,
        "suspicions": list(verdict.suspicions),
    }
    if document is None:
        return entry
    entry |= {
        "dock": document.dock,
        "host": document.host,
        "version": document.version,
        "heartbeat_at": iso(document.heartbeat_at),
        "heartbeat_age_seconds": verdict.age.total_seconds() if verdict.age else None,
        "interval_seconds": document.interval_seconds,
        "clips": document.clips,
        "pending": document.pending,
        "oldest_pending_at": iso(document.oldest_pending_at),
        "alarms": [alarm.model_dump() for alarm in document.alarms],
        "cameras": [camera.model_dump(mode="json") for camera in document.cameras],
        "staging_free_bytes": document.staging_free_bytes,
        "storage": document.storage,
    }
    return entry


def age(span: timedelta | None) -> str:
    """A short readable age: 42 s, 7 min, 3 h 5 min, 2 d 4 h."""
    if span is None:
        return "-"
    seconds = int(span.total_seconds())
    if seconds < 0:
        return f"in {age(-span)}"
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


def _row(verdict: Verdict, now: datetime) -> tuple[str, ...]:
    report, document = verdict.report, verdict.report.document
    if document is None:
        return (report.key, verdict.state, "-", "-", "-", "-", report.problem or "")
    oldest = document.oldest_pending_at
    alarms = ", ".join(
        alarm.kind + (f" ({alarm.subject})" if alarm.subject else "") for alarm in document.alarms
    )
    notes = "; ".join(filter(None, (alarms, report.problem, *verdict.suspicions)))
    return (
        document.dock,
        verdict.state,
        str(report.signature or "-"),
        age(verdict.age),
        str(document.pending),
        age(now - oldest) if oldest else "-",
        notes or "-",
    )


def _print_table(verdicts: list[Verdict], now: datetime) -> None:
    # lazy: rich costs import time, and --json (cron, scripts) does not need it
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    # nothing is cut off with an ellipsis: a long name or alarm list folds instead
    table.add_column("dock", overflow="fold")
    for column in ("state", "signature", "heartbeat", "pending", "oldest pending"):
        table.add_column(column, no_wrap=True)
    table.add_column("alarms", overflow="fold")
    for verdict in verdicts:
        style = None if verdict.healthy else "bold red"
        # Text cells: a document's words are never read as Rich markup
        table.add_row(*(Text(display_text(cell)) for cell in _row(verdict, now)), style=style)
    Console().print(table)


# -- fleet cameras ----------------------------------------------------------------------------


@fleet.command("cameras")
@click.option("--stale-days", type=click.FloatRange(min=0, min_open=True), default=7.0,
              show_default=True, metavar="N", help="a camera is stale after N days undocked")
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@pass_context
def fleet_cameras(context: Context, stale_days: float, as_json: bool) -> None:
    """Every camera's last docking anywhere in the fleet; exit 1 when one is older than N
    days or docked now only by an unverified status document's word."""
    from bwc_dock.coverage.last_docked import last_dockings
    from bwc_dock.coverage.records import read_last_dockings
    from bwc_dock.fleet import fleet_backend
    from bwc_dock.fleet_view import read_fleet

    context.logging("warning")
    config = context.config
    with context.backend() as backend:
        evidence, problems = read_last_dockings(backend)
    status_backend = fleet_backend(config)
    try:
        reports = read_fleet(status_backend, config.fleet.prefix)
    finally:
        status_backend.close()
    now = datetime.now(UTC)
    limit = timedelta(days=stale_days)
    cameras = [
        {
            "camera": entry.camera,
            "last_docked_at": iso(entry.at),
            "dock": entry.dock,
            "docked_now": entry.docked_now,
            "age_days": round((now - entry.at).total_seconds() / 86400, 2),
            "stale": now - entry.at > limit,
            # the status document behind "docked now": verified, unsigned, bad signature...
            "status_document": entry.status_document,
            "unverified": entry.unverified,
        }
        for entry in last_dockings(evidence, reports)
    ]
    if as_json:
        emit({"stale_days": stale_days, "cameras": cameras,
              "unreadable": [{"key": p.key, "reason": p.reason} for p in problems]})
    else:
        _print_cameras(cameras)
        for problem in problems:
            shown = f"{display_text(problem.key)}: {display_text(problem.reason)}"
            click.echo(f"bwc-dock: {shown}", err=True)
    if any(camera["unverified"] for camera in cameras):
        click.echo("bwc-dock: a camera marked unverified is docked now only by the word of a "
                   "status document not signed by its dock's registered key", err=True)
    if any(camera["stale"] or camera["unverified"] for camera in cameras):
        sys.exit(EXIT_PROBLEM)


def _print_cameras(cameras: list[dict[str, Any]]) -> None:
    from bwc_dock.cli.tables import Table

    table = Table(("camera", "last docked", "dock", "docked now", "age (days)"))
    for camera in cameras:
        docked_now = "no"
        if camera["docked_now"]:
            docked_now = f"yes, unverified ({camera['status_document']})" if camera[
                "unverified"] else "yes"
        table.add_row(camera["camera"], camera["last_docked_at"], camera["dock"], docked_now,
                      camera["age_days"], alarmed=camera["stale"] or camera["unverified"])
    table.print()
