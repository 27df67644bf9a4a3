"""``bwc-dock coverage``: each CAD (event, officer) with its clips across the fleet, or why not.

Runs on a dock or on any machine whose configuration reaches central storage: everything
it reads (custody records of every dock, assignments, explanations, camera evidence)
is in the store.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bwc_dock.cli.context import Context, pass_context
from bwc_dock.cli.tables import Table, shown
from bwc_dock.errors import EXIT_PROBLEM, UsageError

if TYPE_CHECKING:
    from bwc_dock.coverage.report import Review


@click.group("coverage", invoke_without_command=True)
@click.option("--cad", "cad_path", type=click.Path(path_type=Path), help="the CAD export (CSV)")
@click.option("--from", "first_day", metavar="DATE", help="calls dispatched on or after DATE")
@click.option("--to", "last_day", metavar="DATE", help="calls dispatched on or before DATE")
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@click.option("--csv", "as_csv", is_flag=True, help="one CSV row per (event, officer)")
@click.option("--html", "html_path", type=click.Path(path_type=Path), metavar="FILE",
              help="also write a self-contained page with charts")
@click.option("--aggregate", type=click.Choice(["month"]),
              help="counts per month and cause only, without event or officer ids")
@click.option("--as-of", "as_of_text", metavar="TIME",
              help="judge grace periods as at TIME (default: now)")
@click.pass_context
def coverage_group(
    click_context: click.Context,
    cad_path: Path | None,
    first_day: str | None,
    last_day: str | None,
    as_json: bool,
    as_csv: bool,
    html_path: Path | None,
    aggregate: str | None,
    as_of_text: str | None,
) -> None:
    """Each CAD (event, officer): its clips across the fleet, or why there are none.
    Exit 1 when a row has no video and no reason, or a CAD row could not be used."""
    if click_context.invoked_subcommand is not None:
        return
    if cad_path is None:
        raise UsageError("coverage: give --cad FILE (or a subcommand, e.g. explain)")
    if as_json and as_csv:
        raise UsageError("coverage: --json and --csv exclude each other")
    context: Context = click_context.obj
    context.logging("warning")
    review = _review(context, cad_path, first_day, last_day, as_of_text)
    if html_path is not None:
        _write_html(review, html_path, aggregate)
    _print(review, as_json=as_json, as_csv=as_csv, aggregate=aggregate)
    if not review.accepted:
        sys.exit(EXIT_PROBLEM)


def _review(
    context: Context,
    cad_path: Path,
    first_day: str | None,
    last_day: str | None,
    as_of_text: str | None,
) -> Review:
    # lazy: the review and its models load only for this command
    from bwc_dock.coverage.run import period, run_review
    from bwc_dock.custody_export import parse_moment

    config = context.config
    within = period(first_day, last_day, config.coverage.timezone)
    as_of = parse_moment(as_of_text, "--as-of") or datetime.now(UTC)
    with context.backend() as backend:
        return run_review(config, backend, cad_path, within, as_of)


def _write_html(review: Review, path: Path, aggregate: str | None) -> None:
    from bwc_dock.coverage.page import write_page

    write_page(review, path, public=aggregate is not None)


def _print(review: Review, *, as_json: bool, as_csv: bool, aggregate: str | None) -> None:
    from bwc_dock.coverage.report import (
        aggregate_by_month,
        csv_text,
        encode_json,
        review_document,
        summary,
    )

    if aggregate:
        months = aggregate_by_month(review.rows)
        if as_json:
            document = {"months": months, "summary": summary(review.rows),
                        "invalid_rows": len(review.invalid)}
            click.echo(encode_json(document), nl=False)
            return
        _print_months(months)
    elif as_json:
        click.echo(encode_json(review_document(review)), nl=False)
        return
    elif as_csv:
        click.echo(csv_text(review.rows), nl=False)
    else:
        _print_rows(review)
    for item in review.invalid:
        click.echo(f"bwc-dock: CAD line {item.line}: {shown(item.reason)}", err=True)
    for problem in review.unreadable:
        click.echo(f"bwc-dock: {shown(problem.key)}: {shown(problem.reason)}", err=True)


def _print_rows(review: Review) -> None:
    from bwc_dock.coverage.report import iso

    table = Table(("event", "officer", "dispatched", "status", "cause / rule", "clips"))
    for row in review.rows:
        table.add_row(
            row.event,
            row.officer,
            iso(row.dispatched),
            row.status,
            row.cause or row.rule or (row.explanation.reason if row.explanation else "-"),
            len(row.clips),
            alarmed=not row.accepted,
        )
    table.print()


def _print_months(months: list[dict[str, object]]) -> None:
    from bwc_dock.coverage.review import CAUSES, STATUSES

    table = Table(("month", "rows", *STATUSES, *CAUSES, "video rate"))
    for month in months:
        by_status = month["by_status"]
        by_cause = month["by_cause"]
        assert isinstance(by_status, dict) and isinstance(by_cause, dict)
        table.add_row(
            month["month"],
            month["rows"],
            *(by_status[status] for status in STATUSES),
            *(by_cause[cause] for cause in CAUSES),
            month["video_rate"],
        )
    table.print()


@coverage_group.command("explain")
@click.argument("event")
@click.argument("officer")
@click.option("--reason", required=True, metavar="CODE", help="a reason code from [coverage]")
@click.option("--note", required=True, metavar="TEXT", help="what happened, in words")
@click.option("--corrects", metavar="KEY", help="the key of an explanation this one corrects")
@pass_context
def coverage_explain(
    context: Context, event: str, officer: str, reason: str, note: str, corrects: str | None
) -> None:
    """Record why EVENT has no video from OFFICER: an audit event and a lasting record."""
    from bwc_dock.cli.context import hand_actor
    from bwc_dock.coverage.explain import explain

    context.logging("warning")
    actor = hand_actor()
    with context.backend() as backend, context.ledger(actor) as ledger:
        key = explain(
            context.config,
            backend,
            ledger,
            event=event,
            officer=officer,
            reason=reason,
            note=note,
            corrects=corrects,
            actor=actor,
        )
    click.echo(f"explanation recorded: {shown(key)}")
