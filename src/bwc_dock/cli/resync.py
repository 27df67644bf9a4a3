"""``bwc-dock resync``: reconcile ledger, staging, central storage and docked cameras."""

from __future__ import annotations

import sys
from typing import Any

import click

from bwc_dock.cli.context import (
    Context,
    emit,
    hand_actor,
    pass_context,
    progress_bar,
    progress_callback,
)
from bwc_dock.cli.tables import shown
from bwc_dock.errors import EXIT_PROBLEM


@click.command()
@click.option("--camera", "camera_serial", metavar="SERIAL")
@click.option("--dry-run", is_flag=True, help="print the plan, change nothing")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def resync(context: Context, camera_serial: str | None, dry_run: bool, as_json: bool) -> None:
    """Reconcile ledger, staging, central storage and docked cameras; repair what can be."""
    # lazy: the stage and repair modules load only for the command that runs them
    from bwc_dock.handrun import daemon_alive
    from bwc_dock.resync import Resync

    context.logging("warning" if as_json else "error")
    with (
        context.ledger(hand_actor()) as ledger,
        context.backend() as backend,
        progress_bar() as bar,
    ):
        alive = daemon_alive(ledger, context.config.service.heartbeat_seconds)
        report = Resync(
            context.config,
            ledger,
            backend,
            daemon_alive=alive,
            camera_serial=camera_serial,
            dry_run=dry_run,
            progress=progress_callback(bar),
        ).run()
    if as_json:
        emit(report.document())
    else:
        _print_resync(report)
    if not report.ok:
        sys.exit(EXIT_PROBLEM)


def _print_resync(report: Any) -> None:
    verb = "would" if report.dry_run else "did"
    for action in report.actions:
        clip = f"clip {action.clip_id}: " if action.clip_id is not None else ""
        click.echo(f"{clip}{shown(action.detail)} -> {verb}: {shown(action.action)}")
    for problem in report.unrepairable:
        serial = shown(problem.camera_serial)
        clip = f"clip {problem.clip_id} ({serial}): " if problem.clip_id else ""
        click.echo(f"CANNOT REPAIR {clip}{shown(problem.problem)}", err=True)
    click.echo(
        f"{report.clips_checked} clips checked, {len(report.actions)} findings, "
        f"{len(report.unrepairable)} unrepairable, {len(report.busy)} busy"
        + ("" if report.dry_run else f", {report.copied} copied, {report.uploaded} uploaded")
        + (" (daemon running: it does the re-queued work)" if report.daemon_alive else "")
    )
