"""Chain-of-custody commands: audit verification and export, resync, verify, cameras.

Thin: each command opens the ledger (and the store), calls one function of
``custody``, ``resync``, ``verify`` or ``cameras``, and prints its result.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bwc_dock.cli import Context, _hand_actor, _progress_sink, cli, pass_context
from bwc_dock.errors import EXIT_PROBLEM
from bwc_dock.ledger.audit import find_break
from bwc_dock.storage.base import StorageBackend


@contextmanager
def _backend(context: Context) -> Iterator[StorageBackend]:
    from bwc_dock.storage import open_backend

    backend = open_backend(context.config)
    try:
        yield backend
    finally:
        backend.close()


def _emit(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


def _progress_callback(sink: Any) -> Any:
    return sink.update if sink is not None else None


# -- audit ------------------------------------------------------------------------------


@cli.group("audit")
def audit_group() -> None:
    """The hash-chained audit log."""


@audit_group.command("verify")
@click.option("--json", "as_json", is_flag=True)
@click.option("--remote", is_flag=True, help="also check against the anchors in central storage")
@pass_context
def audit_verify(context: Context, as_json: bool, remote: bool) -> None:
    """Recompute the audit hash chain; exit 1 naming the first broken row."""
    context.logging("warning")
    if remote:
        _audit_verify_remote(context, as_json)
        return
    with context.ledger(_hand_actor()) as ledger:
        entries = ledger.audit_entries()
        broken = find_break(entries)
    document = {
        "rows": len(entries),
        "ok": broken is None,
        "first_broken_row": broken.entry_id if broken else None,
        "reason": broken.reason if broken else None,
    }
    if as_json:
        _emit(document)
    elif broken is None:
        click.echo(f"audit chain ok: {len(entries)} rows")
    else:
        click.echo(f"audit chain broken at row {broken.entry_id}: {broken.reason}", err=True)
    if broken is not None:
        sys.exit(EXIT_PROBLEM)


def _audit_verify_remote(context: Context, as_json: bool) -> None:
    from bwc_dock.custody import check_anchors

    with context.ledger(_hand_actor()) as ledger, _backend(context) as backend:
        report = check_anchors(ledger, backend)
    if as_json:
        _emit(report.document())
    else:
        _print_anchor_report(report)
    if not report.ok:
        sys.exit(EXIT_PROBLEM)


def _print_anchor_report(report: Any) -> None:
    if report.local_break is not None:
        click.echo(
            f"audit chain broken at row {report.local_break}: {report.local_break_reason}",
            err=True,
        )
    for problem in report.problems:
        click.echo(
            f"clip {problem.clip_id}: {problem.problem} (anchor {problem.manifest_key})", err=True
        )
    if report.changed_at_or_before_row is not None:
        click.echo(
            "the local ledger was changed after the fact: at a row after "
            f"{report.changed_after_row} and at or before {report.changed_at_or_before_row}",
            err=True,
        )
    if report.ok:
        click.echo(
            f"audit chain ok: {report.local_rows} rows, {report.anchors_checked} anchors in "
            f"central storage agree (rows after {report.newest_anchor_row} not anchored yet)"
        )


@audit_group.command("export")
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["csv", "json"]),
    default="json",
    show_default=True,
)
@click.option("--camera", "camera_serial", metavar="SERIAL")
@click.option("--since", metavar="DATE", help="clips recorded at or after (ISO date/time, UTC)")
@click.option("--until", metavar="DATE", help="clips recorded before (ISO date/time, UTC)")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="file instead of stdout")
@pass_context
def audit_export(
    context: Context,
    export_format: str,
    camera_serial: str | None,
    since: str | None,
    until: str | None,
    output: Path | None,
) -> None:
    """Chain-of-custody report: every step of every clip, with when, where, who, hashes."""
    from bwc_dock.custody import ExportFilter, export_csv, export_document, parse_moment

    context.logging("warning")
    selection = ExportFilter(
        camera_serial, parse_moment(since, "--since"), parse_moment(until, "--until")
    )
    actor = _hand_actor()
    with context.ledger(actor) as ledger:
        document = export_document(ledger, selection, actor)
    text = export_csv(document) if export_format == "csv" else json.dumps(document, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
    if not document["audit_chain"]["intact"]:
        click.echo(
            f"warning: audit chain broken at row {document['audit_chain']['first_broken_row']}",
            err=True,
        )
        sys.exit(EXIT_PROBLEM)


# -- resync and verify ------------------------------------------------------------------------


@cli.command()
@click.option("--camera", "camera_serial", metavar="SERIAL")
@click.option("--dry-run", is_flag=True, help="print the plan, change nothing")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def resync(context: Context, camera_serial: str | None, dry_run: bool, as_json: bool) -> None:
    """Reconcile ledger, staging, central storage and docked cameras; repair what can be."""
    from bwc_dock.handrun import daemon_alive
    from bwc_dock.resync import Resync

    context.logging("warning" if as_json else "error")
    with (
        context.ledger(_hand_actor()) as ledger,
        _backend(context) as backend,
        _progress_sink() as sink,
    ):
        alive = daemon_alive(ledger, context.config.service.heartbeat_seconds)
        report = Resync(
            context.config,
            ledger,
            backend,
            daemon_alive=alive,
            camera_serial=camera_serial,
            dry_run=dry_run,
            progress=_progress_callback(sink),
        ).run()
    if as_json:
        _emit(report.document())
    else:
        _print_resync(report)
    if not report.ok:
        sys.exit(EXIT_PROBLEM)


def _print_resync(report: Any) -> None:
    verb = "would" if report.dry_run else "did"
    for action in report.actions:
        clip = f"clip {action.clip_id}: " if action.clip_id is not None else ""
        click.echo(f"{clip}{action.detail} -> {verb}: {action.action}")
    for problem in report.unrepairable:
        clip = f"clip {problem.clip_id} ({problem.camera_serial}): " if problem.clip_id else ""
        click.echo(f"CANNOT REPAIR {clip}{problem.problem}", err=True)
    click.echo(
        f"{report.clips_checked} clips checked, {len(report.actions)} findings, "
        f"{len(report.unrepairable)} unrepairable, {len(report.busy)} busy"
        + ("" if report.dry_run else f", {report.copied} copied, {report.uploaded} uploaded")
        + (" (daemon running: it does the re-queued work)" if report.daemon_alive else "")
    )


@cli.command()
@click.option("--remote", is_flag=True, help="also download and hash the central objects")
@click.option("--camera", "camera_serial", metavar="SERIAL")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def verify(context: Context, remote: bool, camera_serial: str | None, as_json: bool) -> None:
    """Re-hash staged copies (and central copies) against the ledger; exit 1 on mismatch."""
    from bwc_dock.verify import verify as run_verify

    context.logging("warning" if as_json else "error")
    with context.ledger(_hand_actor()) as ledger, _progress_sink() as sink:
        if remote:
            with _backend(context) as backend:
                report = run_verify(
                    ledger,
                    context.config.staging_dir,
                    backend,
                    camera_serial=camera_serial,
                    progress=_progress_callback(sink),
                )
        else:
            report = run_verify(
                ledger,
                context.config.staging_dir,
                None,
                camera_serial=camera_serial,
                progress=_progress_callback(sink),
            )
    if as_json:
        _emit(report.document())
    else:
        for mismatch in report.mismatches:
            click.echo(
                f"MISMATCH clip {mismatch.clip_id} ({mismatch.camera_serial}) {mismatch.where} "
                f"{mismatch.file} at {mismatch.location}: {mismatch.problem} "
                f"(expected {mismatch.expected}, found {mismatch.found})",
                err=True,
            )
        click.echo(
            f"{report.staged_checked} staged and {report.remote_checked} central copies "
            f"checked, {len(report.mismatches)} mismatches"
        )
    if not report.ok:
        sys.exit(EXIT_PROBLEM)


# -- cameras ------------------------------------------------------------------------------------


@cli.group("cameras", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cameras_group(click_context: click.Context, as_json: bool) -> None:
    """The cameras this dock has seen (serial, profile, officer, last docked, pending clips)."""
    if click_context.invoked_subcommand is not None:
        return
    from bwc_dock.cameras import camera_documents, list_cameras

    context: Context = click_context.obj
    context.logging("warning")
    with context.ledger(_hand_actor()) as ledger:
        documents = camera_documents(list_cameras(ledger))
    if as_json:
        _emit(documents)
        return
    table = Table()
    for column in ("serial", "profile", "officer", "last docked", "docked", "pending", "clips"):
        table.add_column(column)
    for camera in documents:
        table.add_row(
            str(camera["serial"]),
            str(camera["profile"] or "-"),
            str(camera["officer_id"] or "-"),
            str(camera["last_docked_at"] or "-"),
            "yes" if camera["docked"] else "no",
            str(camera["pending_clips"]),
            str(camera["clips"]),
        )
    Console().print(table)


@cameras_group.command("assign")
@click.argument("serial")
@click.argument("officer_id")
@click.option("--at", "assigned_at", metavar="TIME", help="when it was issued (default: now)")
@pass_context
def cameras_assign(context: Context, serial: str, officer_id: str, assigned_at: str | None) -> None:
    """Record that camera SERIAL is issued to OFFICER_ID (an audit event)."""
    from bwc_dock.cameras import assign, checked_assignment
    from bwc_dock.custody import parse_moment

    context.logging("warning")
    assignment = checked_assignment(serial, officer_id, parse_moment(assigned_at, "--at"))
    with context.ledger(_hand_actor()) as ledger:
        assign(ledger, [assignment])
    click.echo(
        f"camera {assignment.serial} issued to {assignment.officer_id} "
        f"from {assignment.assigned_at.isoformat()}"
    )


@cameras_group.command("import")
@click.argument("csv_path", metavar="CSV", type=click.Path(path_type=Path))
@pass_context
def cameras_import(context: Context, csv_path: Path) -> None:
    """Assignments from a CSV file with columns serial,officer_id[,assigned_at]; all or none."""
    from bwc_dock.cameras import assign, read_assignments_csv

    context.logging("warning")
    assignments = read_assignments_csv(csv_path)
    with context.ledger(_hand_actor()) as ledger:
        assign(ledger, assignments)
    click.echo(f"{len(assignments)} assignments recorded")
