"""``bwc-dock ingest``: one-shot offload of a folder (an SD card, a camera mounted by hand)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bwc_dock.cli.context import Context, emit, hand_actor, pass_context, progress_bar
from bwc_dock.cli.tables import shown
from bwc_dock.errors import EXIT_PROBLEM, UsageError


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--camera-serial", required=True, metavar="SERIAL")
@click.option("--wait", is_flag=True, help="return when every clip is uploaded")
@click.option(
    "--timeout",
    "timeout_seconds",
    type=float,
    default=3600.0,
    show_default=True,
    help="give up after this many seconds (copying stuck on a full staging, or --wait)",
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
    # lazy: the stage modules load only for the command that runs them
    from bwc_dock.handrun import ingest_folder

    context.logging("info")
    serial = _checked_serial(camera_serial)
    with context.ledger(hand_actor()) as ledger, progress_bar() as bar:
        report = ingest_folder(
            context.config,
            ledger,
            path,
            serial,
            wait=wait,
            timeout_seconds=timeout_seconds,
            progress=bar,
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
        emit(summary)
    else:
        click.echo(
            f"{report.clips} clips ({report.new} new), {report.refused} entries refused; "
            + ", ".join(f"{n} {s}" for s, n in sorted(report.states.items()))
        )
        for problem in report.problems:
            click.echo(f"problem: {shown(problem)}", err=True)
    sys.exit(0 if report.ok else EXIT_PROBLEM)


def _checked_serial(serial: str) -> str:
    from bwc_dock.names import safe_name  # lazy, as above

    if not serial or safe_name(serial.encode()) != serial:
        raise UsageError(f"--camera-serial {serial!r}: use only letters, digits, '.', '_', '-'")
    return serial
