"""``bwc-dock cameras [assign|import]``: the cameras seen here and who each is issued to."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bwc_dock.cli.context import Context, emit, hand_actor, pass_context
from bwc_dock.cli.tables import Table, shown

if TYPE_CHECKING:
    from bwc_dock.ledger import Ledger
    from bwc_dock.ledger.assignments import Assignment, Reattribution


@click.group("cameras", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cameras_group(click_context: click.Context, as_json: bool) -> None:
    """The cameras this dock has seen (serial, profile, officer, last docked, pending clips)."""
    if click_context.invoked_subcommand is not None:
        return
    # lazy: the cameras module loads only for these commands
    from bwc_dock.cameras import camera_documents, list_cameras

    context: Context = click_context.obj
    context.logging("warning")
    with context.ledger(hand_actor()) as ledger:
        documents = camera_documents(list_cameras(ledger), ledger.latest_camera_offsets())
    if as_json:
        emit(documents)
        return
    table = Table(
        (
            "serial", "profile", "usb id", "officer", "last docked", "docked", "pending",
            "clips", "clock",
        )
    )
    for camera in documents:
        table.add_row(
            camera["serial"],
            camera["profile"],
            _usb_id(camera["device"]),
            camera["officer_id"],
            camera["last_docked_at"],
            "yes" if camera["docked"] else "no",
            camera["pending_clips"],
            camera["clips"],
            _clock_cell(camera["clock_offset_seconds"]),
        )
    table.print()


def _usb_id(device: object) -> str | None:
    """vendor:product as lsusb writes it; None (shown as a dash) for a folder camera."""
    assert isinstance(device, dict)
    vendor, product = device["usb_vendor_id"], device["usb_product_id"]
    return f"{vendor or '?'}:{product or '?'}" if vendor or product else None


def _clock_cell(offset: object) -> str:
    """The camera's clock against the dock's at its latest docking, e.g. "+93 s"."""
    return f"{offset:+.0f} s" if isinstance(offset, float | int) else "unknown"


_FORCE_HELP = "also when it re-attributes clips already delivered (audited with their ids)"


@cameras_group.command("assign")
@click.argument("serial")
@click.argument("officer_id")
@click.option("--at", "assigned_at", metavar="TIME", help="when it was issued (default: now)")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@pass_context
def cameras_assign(
    context: Context, serial: str, officer_id: str, assigned_at: str | None, force: bool
) -> None:
    """Record that camera SERIAL is issued to OFFICER_ID (an audit event)."""
    from bwc_dock.cameras import assign, checked_assignment, fleet_assignments  # lazy, as above
    from bwc_dock.custody_export import parse_moment

    context.logging("warning")
    assignment = checked_assignment(serial, officer_id, parse_moment(assigned_at, "--at"))
    recorded = fleet_assignments([assignment], dock_id=context.config.dock.id, forced=force)
    with context.ledger(hand_actor()) as ledger:
        reattributed = assign(ledger, recorded, force=force)
        click.echo(
            f"camera {shown(assignment.serial)} issued to {shown(assignment.officer_id)} "
            f"from {assignment.assigned_at.isoformat()}"
        )
        _echo_reattributed(reattributed)
        _share(context, ledger, recorded)


@cameras_group.command("import")
@click.argument("csv_path", metavar="CSV", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@pass_context
def cameras_import(context: Context, csv_path: Path, force: bool) -> None:
    """Assignments from a CSV file with columns serial,officer_id[,assigned_at]; all or none."""
    from bwc_dock.cameras import assign, fleet_assignments, read_assignments_csv  # lazy

    context.logging("warning")
    assignments = read_assignments_csv(csv_path)
    recorded = fleet_assignments(assignments, dock_id=context.config.dock.id, forced=force)
    with context.ledger(hand_actor()) as ledger:
        reattributed = assign(ledger, recorded, force=force)
        click.echo(f"{len(assignments)} assignments recorded")
        _echo_reattributed(reattributed)
        _share(context, ledger, recorded)


def _share(context: Context, ledger: Ledger, recorded: Sequence[Assignment]) -> None:
    """Store the fleet records of what was just recorded, and pick up the fleet's others."""
    from bwc_dock.cameras import pick_up_assignments, publish_assignments
    from bwc_dock.errors import EXIT_PROBLEM, BwcDockError

    try:
        with context.backend() as backend:
            publish_assignments(backend, recorded)
            pick_up_assignments(ledger, backend)
    except (BwcDockError, OSError) as error:
        click.echo(
            f"bwc-dock: recorded on this dock but not yet in central storage ({error}); "
            "it is stored there at this dock's next docking or assignment",
            err=True,
        )
        sys.exit(EXIT_PROBLEM)


def _echo_reattributed(reattributed: Sequence[Reattribution]) -> None:
    if reattributed:
        ids = ", ".join(str(item.clip_id) for item in reattributed)
        click.echo(
            f"forced: {len(reattributed)} delivered clip(s) re-attributed ({ids}); "
            "recorded in the audit log as camera.clips_reattributed"
        )
