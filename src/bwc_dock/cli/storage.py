"""``bwc-dock storage probe``: does the store refuse to delete or overwrite a locked object?"""

from __future__ import annotations

import sys

import click

from bwc_dock.cli.context import Context, emit, pass_context
from bwc_dock.cli.tables import Table
from bwc_dock.errors import EXIT_USAGE


@click.group("storage")
def storage_group() -> None:
    """Central storage checks."""


@storage_group.command("probe")
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@pass_context
def probe(context: Context, as_json: bool) -> None:
    """Write a locked canary and try to destroy it; exit 2 when the store allowed it."""
    from bwc_dock.lock_probe import probe_store
    from bwc_dock.retention import require_enforcing_store

    context.logging("warning")
    require_enforcing_store(context.config)
    with context.backend() as backend:
        report = probe_store(context.config, backend)
    if as_json:
        emit({"canary": report.canary_key, "enforced": report.enforced,
              "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail}
                         for c in report.checks]})
    else:
        table = Table(("check", "verdict", "detail"))
        for check in report.checks:
            table.add_row(check.name, "held" if check.passed else "FAILED", check.detail)
        table.print()
    if not report.enforced:
        names = ", ".join(check.name for check in report.failed)
        click.echo(f"bwc-dock: the store does not enforce Object Lock ({names}): "
                   f"{report.summary()}", err=True)
        sys.exit(EXIT_USAGE)
