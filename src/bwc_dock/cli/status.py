"""``bwc-dock status``: counts by state, cameras docked, oldest pending clip, storage."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bwc_dock.cli.context import Context, emit, hand_actor, iso, pass_context
from bwc_dock.errors import BwcDockError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@pass_context
def status(context: Context, as_json: bool) -> None:
    """Counts by state, cameras docked, oldest pending clip, storage reachable."""
    # lazy: handrun brings the stage modules, which a status look does not need loaded first
    from bwc_dock.handrun import daemon_alive

    context.logging("warning")
    with context.ledger(hand_actor()) as ledger:
        beat = ledger.heartbeat()
        alive = daemon_alive(ledger, context.config.service.heartbeat_seconds)
        oldest = ledger.oldest_pending_at()
        document = {
            "clips": ledger.counts_by_state(),
            "cameras": [
                {"serial": d.camera_serial, "device": d.device, "docked_at": iso(d.docked_at)}
                for d in ledger.active_dockings()
            ],
            "oldest_pending_at": iso(oldest),
            "storage_reachable": _storage_reachable(context, beat, alive),
            "daemon_alive": alive,
            "daemon_status": beat.status_line if beat and alive else None,
            "last_error": beat.last_error if beat else None,
            "staging_free_bytes": beat.staging_free_bytes if beat else None,
            "dock": context.config.dock.id,
        }
    if as_json:
        emit(document)
        return
    _print_status(document)


def _storage_reachable(context: Context, beat: Any, alive: bool) -> bool | None:
    """The daemon's last finding when it runs; else ask the store now."""
    if alive and beat is not None and beat.storage_reachable is not None:
        return bool(beat.storage_reachable)
    with context.backend() as backend:
        try:
            backend.check_reachable()
        except BwcDockError:
            return False
        return True


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
