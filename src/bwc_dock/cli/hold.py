"""``bwc-dock hold add|remove|list``: legal hold on a case's objects (S3 Object Lock).

Hold records come from central storage, where other docks and people write: they are
shown as text, and a record that cannot be used is listed with why, never a crash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from bwc_dock.cli.context import Context, emit, hand_actor, iso, pass_context
from bwc_dock.cli.tables import Table, shown
from bwc_dock.errors import UsageError

if TYPE_CHECKING:
    from bwc_dock.holds import BadRecord, CaseHold


@click.group("hold")
def hold_group() -> None:
    """Legal hold on a case's objects: every version kept until the hold is removed."""


@hold_group.command("add")
@click.argument("case")
@click.option("--key", "keys", multiple=True, metavar="KEY",
              help="a clip's key (its sidecars and custody records are held with it)")
@click.option("--event", "events", multiple=True, metavar="EVENT",
              help="not available yet: give the clips with --key")
@pass_context
def add(context: Context, case: str, keys: tuple[str, ...], events: tuple[str, ...]) -> None:
    """Put the case's objects under legal hold (every version)."""
    from bwc_dock.holds import EVENT_NOT_YET, add_hold
    from bwc_dock.retention import require_enforcing_store

    if events:
        raise UsageError(EVENT_NOT_YET)
    if not keys:
        raise UsageError("hold add: give at least one --key KEY")
    context.logging("warning")
    require_enforcing_store(context.config)
    with context.ledger(hand_actor()) as ledger, context.backend() as backend:
        result = add_hold(context.config, ledger, backend, case, keys, hand_actor())
    click.echo(f"case {shown(case)}: legal hold ON for {len(result.objects)} object(s), "
               f"{result.versions} version(s); record {shown(result.record_key)}")


@hold_group.command("remove")
@click.argument("case")
@click.option("--reason", required=True, metavar="TEXT", help="why the hold ends (audited)")
@pass_context
def remove(context: Context, case: str, reason: str) -> None:
    """End the case's hold; objects another case holds stay held."""
    from bwc_dock.holds import remove_hold
    from bwc_dock.retention import require_enforcing_store

    context.logging("warning")
    require_enforcing_store(context.config)
    with context.ledger(hand_actor()) as ledger, context.backend() as backend:
        result = remove_hold(context.config, ledger, backend, case, reason, hand_actor())
    click.echo(f"case {shown(case)}: legal hold OFF for {len(result.objects)} object(s), "
               f"{result.versions} version(s); record {shown(result.record_key)}")


@hold_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@pass_context
def list_holds(context: Context, as_json: bool) -> None:
    """Every case's hold, from the records in central storage."""
    from bwc_dock.holds import read_holds
    from bwc_dock.retention import require_enforcing_store

    context.logging("warning")
    require_enforcing_store(context.config)
    with context.backend() as backend:
        cases, bad = read_holds(backend)
    documents = [_case_document(hold) for hold in sorted(cases.values(), key=lambda h: h.case)]
    if as_json:
        emit({"holds": documents, "invalid": [_bad_document(b) for b in bad]})
        return
    table = Table(("case", "state", "objects", "last change", "by", "reason"))
    for document in documents:
        last = document["records"][-1]
        table.add_row(document["case"], document["state"], len(document["keys"]),
                      last["at"], f"{last['actor']}@{last['dock']}", last["reason"])
    table.print()
    for problem in bad:
        click.echo(f"unusable record {shown(problem.key)}: {shown(problem.reason)}", err=True)


def _case_document(hold: CaseHold) -> dict[str, Any]:
    return {
        "case": hold.case,
        "state": "active" if hold.active else "removed",
        "keys": sorted(hold.keys),
        "records": [
            {"action": record.action, "at": iso(record.at), "dock": record.dock,
             "actor": record.actor, "keys": list(record.keys), "reason": record.reason,
             "versions": record.versions}
            for record in hold.records
        ],
    }


def _bad_document(problem: BadRecord) -> dict[str, str]:
    return {"key": problem.key, "reason": problem.reason}
