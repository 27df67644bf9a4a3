"""Chain-of-custody commands: audit verification and export, resync, verify, cameras."""

from __future__ import annotations

import json
import sys

import click

from bwc_dock.cli import Context, _hand_actor, cli, pass_context
from bwc_dock.errors import EXIT_PROBLEM
from bwc_dock.ledger.audit import find_break


@cli.group("audit")
def audit_group() -> None:
    """The hash-chained audit log."""


@audit_group.command("verify")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def audit_verify(context: Context, as_json: bool) -> None:
    """Recompute the audit hash chain; exit 1 naming the first broken row."""
    context.logging("warning")
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
        click.echo(json.dumps(document, indent=2))
    elif broken is None:
        click.echo(f"audit chain ok: {len(entries)} rows")
    else:
        click.echo(f"audit chain broken at row {broken.entry_id}: {broken.reason}", err=True)
    if broken is not None:
        sys.exit(EXIT_PROBLEM)
