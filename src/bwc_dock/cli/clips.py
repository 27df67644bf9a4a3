"""``bwc-dock clips``: the ledger's clips, and ``--prioritize`` to send one first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from bwc_dock.cli.context import Context, emit, hand_actor, iso, pass_context
from bwc_dock.cli.tables import Table
from bwc_dock.errors import BwcDockError
from bwc_dock.ledger.states import ClipState

if TYPE_CHECKING:
    from bwc_dock.ledger import ClipWork


@click.group(invoke_without_command=True)
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
@click.pass_context
def clips(
    click_context: click.Context,
    as_json: bool,
    camera_serial: str | None,
    state: str | None,
    prioritize_id: int | None,
) -> None:
    """The ledger's clips (and ``clips classify KEY CLASS``)."""
    if click_context.invoked_subcommand is not None:
        return
    context: Context = click_context.obj
    if prioritize_id is not None:
        context.logging("warning")
        with context.ledger(hand_actor()) as ledger:
            if not ledger.set_priority(prioritize_id, 100):
                raise BwcDockError(f"no clip {prioritize_id}")
        click.echo(f"clip {prioritize_id} will be uploaded first")
        return
    context.logging("warning", deferred=True)
    with context.reader(hand_actor()) as reader:
        rows = [_clip_document(w) for w in reader.clips(camera_serial, state)]
    if as_json:
        emit(rows)
        return
    table = Table(("id", "camera", "path", "size", "recorded (UTC)", "state", "sha256"))
    for row in rows:
        table.add_row(
            row["id"],
            row["camera_serial"],
            row["source_path"],
            row["size"],
            _recorded_cell(row),
            row["state"],
            (row["sha256"] or "")[:16],
        )
    table.print()


def _recorded_cell(row: dict[str, Any]) -> str:
    """The recorded time, saying when no clock offset corrected it and when daylight
    saving made the camera's reading nonexistent or ambiguous."""
    cell = str(row["recorded_at"] or "")[:19].replace("T", " ")
    notes = [] if row["recorded_at_corrected"] else ["uncorrected"]
    if row["time_flag"]:
        notes.append(str(row["time_flag"]))
    return f"{cell} ({', '.join(notes)})" if notes else cell


def _clip_document(work: ClipWork) -> dict[str, Any]:
    return {
        "id": work.id,
        "camera_serial": work.camera_serial,
        "source_path": work.source_path,
        "size": work.size,
        "sha256": work.sha256,
        "state": str(work.state),
        "remote_key": work.remote_key,
        "recorded_at": iso(work.recorded_at),
        **work.time.document(),
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


@clips.command("classify")
@click.argument("key")
@click.argument("class_name", metavar="CLASS")
@pass_context
def classify(context: Context, key: str, class_name: str) -> None:
    """Give the clip stored under KEY the retention class CLASS (audited; only extends)."""
    from bwc_dock.retention import classify as apply_class
    from bwc_dock.retention import require_enforcing_store

    context.logging("warning")
    require_enforcing_store(context.config)
    with context.ledger(hand_actor()) as ledger, context.backend() as backend:
        done = apply_class(context.config, ledger, backend, key, class_name)
    click.echo(
        f"{done.clip.remote_key}: class {done.retention.name}, retained until "
        f"{done.retain_until:%Y-%m-%d %H:%M:%S} UTC ({len(done.changes)} object version(s))"
    )
