"""``bwc-dock verify``: re-hash staged (and central) copies against the ledger."""

from __future__ import annotations

import sys

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
@click.option("--remote", is_flag=True, help="also download and hash the central objects")
@click.option("--camera", "camera_serial", metavar="SERIAL")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def verify(context: Context, remote: bool, camera_serial: str | None, as_json: bool) -> None:
    """Re-hash staged copies (and central copies) against the ledger; exit 1 on mismatch."""
    from bwc_dock.verify import verify as run_verify  # lazy: loads only for this command

    context.logging("warning" if as_json else "error")
    with context.ledger(hand_actor()) as ledger, progress_bar() as bar:
        if remote:
            with context.backend() as backend:
                report = run_verify(
                    ledger,
                    context.config.staging_dir,
                    backend,
                    camera_serial=camera_serial,
                    progress=progress_callback(bar),
                )
        else:
            report = run_verify(
                ledger,
                context.config.staging_dir,
                None,
                camera_serial=camera_serial,
                progress=progress_callback(bar),
            )
    if as_json:
        emit(report.document())
    else:
        for mismatch in report.mismatches:
            click.echo(
                f"MISMATCH clip {mismatch.clip_id} ({shown(mismatch.camera_serial)}) "
                f"{mismatch.where} {shown(mismatch.file)} at {shown(mismatch.location)}: "
                f"{shown(mismatch.problem)} "
                f"(expected {shown(mismatch.expected)}, found {shown(mismatch.found)})",
                err=True,
            )
        click.echo(
            f"{report.staged_checked} staged and {report.remote_checked} central copies "
            f"checked, {len(report.mismatches)} mismatches"
        )
    if not report.ok:
        sys.exit(EXIT_PROBLEM)
