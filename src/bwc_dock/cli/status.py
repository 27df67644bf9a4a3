"""``bwc-dock status``: counts by state, cameras docked, oldest pending clip, storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from bwc_dock.cli.context import Context, emit, hand_actor, iso, pass_context
from bwc_dock.cli.tables import Table, shown
from bwc_dock.errors import BwcDockError

if TYPE_CHECKING:
    from bwc_dock.ledger.snapshots import HeartbeatRecord


@click.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@pass_context
def status(context: Context, as_json: bool) -> None:
    """Counts by state, cameras docked, oldest pending clip, storage reachable."""
    from bwc_dock.ledger.leases import heartbeat_alive

    context.logging("warning", deferred=True)
    with context.reader(hand_actor()) as reader:
        beat = reader.heartbeat()
        alive = heartbeat_alive(beat, context.config.service.heartbeat_seconds)
        oldest = reader.oldest_pending_at()
        document = {
            "clips": reader.counts_by_state(),
            "cameras": [
                {"serial": d.camera_serial, "device": d.device, "docked_at": iso(d.docked_at)}
                for d in reader.active_dockings()
            ],
            "oldest_pending_at": iso(oldest),
            "storage_reachable": _storage_reachable(context, beat, alive),
            "daemon_alive": alive,
            "daemon_status": beat.status_line if beat and alive else None,
            "last_error": beat.last_error if beat else None,
            "staging_free_bytes": beat.staging_free_bytes if beat else None,
            "dock": context.config.dock.id,
            **_reload_note(context, beat, alive),
        }
    if as_json:
        emit(document)
        return
    _print_status(document)


def _storage_reachable(context: Context, beat: HeartbeatRecord | None, alive: bool) -> bool | None:
    """The daemon's last finding when it runs; else ask the store now."""
    if alive and beat is not None and beat.storage_reachable is not None:
        return bool(beat.storage_reachable)
    with context.backend() as backend:
        try:
            backend.check_reachable()
        except BwcDockError:
            return False
        return True


def _reload_note(context: Context, beat: HeartbeatRecord | None, alive: bool) -> dict[str, Any]:
    """What the running daemon's last reload (SIGHUP) left to do."""
    from bwc_dock.daemon_note import read_note

    note = None
    if alive and beat is not None:
        note = read_note(context.config.dock.state_dir, beat.pid, beat.started_at)
    return {
        "restart_needed": list(note.restart_needed) if note else [],
        "config_reload_rejected": note.rejected if note else None,
        "udev_rules_stale": note.udev_rules_stale if note else False,
    }


def _print_status(document: dict[str, Any]) -> None:
    table = Table(("state", "clips"), title=f"bwc-dock {document['dock']}")
    for state, count in document["clips"].items():
        table.add_row(state, count, alarmed=state == "quarantined" and bool(count))
    table.print()
    status_line = f" ({shown(document['daemon_status'])})" if document["daemon_status"] else ""
    click.echo(f"daemon alive: {document['daemon_alive']}{status_line}")
    click.echo(f"cameras docked: {len(document['cameras'])}")
    for camera in document["cameras"]:
        click.echo(
            f"  {shown(camera['serial'])} on {shown(camera['device'])} since {camera['docked_at']}"
        )
    click.echo(f"oldest pending clip: {document['oldest_pending_at'] or '-'}")
    click.echo(f"storage reachable: {document['storage_reachable']}")
    free = document["staging_free_bytes"]
    click.echo(f"staging free: {'unknown' if free is None else f'{free // 2**20} MiB'}")
    if document["last_error"]:
        click.echo(f"last error: {shown(document['last_error'])}")
    if document["restart_needed"]:
        keys = ", ".join(shown(key) for key in document["restart_needed"])
        click.echo(f"RESTART NEEDED: the daemon runs with the old {keys} until restarted")
    if document["config_reload_rejected"]:
        click.echo(f"CONFIG RELOAD REFUSED: {shown(document['config_reload_rejected'])}")
    if document["udev_rules_stale"]:
        click.echo("UDEV RULES STALE: run `bwc-dock config check` as root")
