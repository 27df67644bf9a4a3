"""``bwc-dock audit verify|export``: the hash-chained audit log and the custody report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from bwc_dock.cli.context import Context, emit, hand_actor, pass_context
from bwc_dock.errors import EXIT_PROBLEM
from bwc_dock.ledger.audit import find_break
from bwc_dock.names import display_text


@click.group("audit")
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
    with context.ledger(hand_actor()) as ledger:
        entries = ledger.audit_entries()
        broken = find_break(entries)
    document = {
        "rows": len(entries),
        "ok": broken is None,
        "first_broken_row": broken.entry_id if broken else None,
        "reason": broken.reason if broken else None,
    }
    if as_json:
        emit(document)
    elif broken is None:
        click.echo(f"audit chain ok: {len(entries)} rows")
    else:
        click.echo(
            f"audit chain broken at row {broken.entry_id}: {display_text(broken.reason)}",
            err=True,
        )
    if broken is not None:
        sys.exit(EXIT_PROBLEM)


def _audit_verify_remote(context: Context, as_json: bool) -> None:
    # lazy: custody (manifests, exports) loads only for the commands that use it
    from bwc_dock.custody import check_anchors

    with context.ledger(hand_actor()) as ledger, context.backend() as backend:
        report = check_anchors(ledger, backend)
    if as_json:
        emit(report.document())
    else:
        _print_anchor_report(report)
    if not report.ok:
        sys.exit(EXIT_PROBLEM)


def _print_anchor_report(report: Any) -> None:
    if report.local_break is not None:
        click.echo(
            f"audit chain broken at row {report.local_break}:"
            f" {display_text(str(report.local_break_reason))}",
            err=True,
        )
    for problem in report.problems:
        subject = f"clip {problem.clip_id}" if problem.clip_id is not None else "anchor"
        # keys and problems name objects found in central storage: shown as text
        click.echo(
            f"{subject}: {display_text(str(problem.problem))}"
            f" (anchor {display_text(str(problem.anchor_key))})",
            err=True,
        )
    if report.changed_at_or_before_row is not None:
        click.echo(
            "the local ledger was changed after the fact: at a row after "
            f"{report.changed_after_row} and at or before {report.changed_at_or_before_row}",
            err=True,
        )
    if report.ok:
        click.echo(
            f"audit chain ok: {report.local_rows} rows; this dock's {report.anchors_checked}"
            f" manifests and {report.lists_checked} SHA256SUMS lists found in central storage"
            f" agree (rows after {report.newest_anchor_row} not anchored yet)"
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
    from bwc_dock.custody_export import (  # lazy
        ExportFilter,
        export_csv,
        export_document,
        parse_moment,
        write_export,
    )

    context.logging("warning")
    selection = ExportFilter(
        camera_serial, parse_moment(since, "--since"), parse_moment(until, "--until")
    )
    actor = hand_actor()
    with context.ledger(actor) as ledger:
        document = export_document(ledger, selection, actor)
    text = export_csv(document) if export_format == "csv" else json.dumps(document, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        write_export(output, text)
    if not document["audit_chain"]["intact"]:
        click.echo(
            f"warning: audit chain broken at row {document['audit_chain']['first_broken_row']}",
            err=True,
        )
        sys.exit(EXIT_PROBLEM)
