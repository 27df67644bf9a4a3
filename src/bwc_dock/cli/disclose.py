"""``bwc-dock disclose CASE --to DIR --key K...`` / ``disclose verify DIR``: a signed
BagIt bag of a case's clips that anyone checks with free tools, and its check."""

from __future__ import annotations

import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bwc_dock.cli.context import (
    Context,
    emit,
    hand_actor,
    pass_context,
    progress_bar,
    progress_callback,
)
from bwc_dock.errors import EXIT_PROBLEM, ConfigError, UsageError

if TYPE_CHECKING:
    from bwc_dock.config import DisclosureConfig
    from bwc_dock.disclosure.verify_bag import Report


@click.command("disclose")
@click.argument("case")
@click.argument("bag", required=False, type=click.Path(path_type=Path))
@click.option("--to", "target", type=click.Path(path_type=Path), metavar="DIR",
              help="the new bag's folder (must not exist, or be empty)")
@click.option("--key", "keys", multiple=True, metavar="KEY",
              help="a clip's key (repeatable); default: the clips the case's legal hold names")
@click.option("--from-bag", "parent", type=click.Path(path_type=Path), metavar="PARENT",
              help="re-bag clips of this bag (prosecutor to defence)")
@click.option("--select", "selected", multiple=True, metavar="NAME",
              help="with --from-bag: a clip's name in the parent's data/ (repeatable)")
@click.option("--disclosed-by", metavar="TEXT", help="default: the user running this")
@click.option("--disclosed-to", default="", metavar="TEXT", help="the recipient")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def disclose(context: Context, case: str, bag: Path | None, target: Path | None,
             keys: tuple[str, ...], parent: Path | None, selected: tuple[str, ...],
             disclosed_by: str | None, disclosed_to: str, as_json: bool) -> None:
    """A signed BagIt bag of a case's clips (CASE --to DIR --key K...), or check one
    (verify DIR: exit 0 intact and signed by this agency, 1 anything altered)."""
    context.logging("warning")
    if case == "verify" and bag is not None:
        _verify(context, bag, as_json)
        return
    if bag is not None or target is None:
        raise UsageError("give disclose CASE --to DIR --key KEY..., or disclose verify DIR")
    by = disclosed_by or hand_actor()
    target = target.absolute()  # "." or "bag/" name the folder itself, beside its parent
    if parent is not None:
        _rebag(context, case, parent, target, selected, by, disclosed_to)
        return
    if not keys:
        keys = _held_keys(context, case)
    _write(context, case, target, keys, by, disclosed_to, as_json)


def _held_keys(context: Context, case: str) -> tuple[str, ...]:
    """Without --key: the clips the case's legal hold names in central storage."""
    from bwc_dock.disclosure.records import held_clip_keys
    from bwc_dock.holds import read_holds

    with context.backend() as backend:
        cases, _unusable = read_holds(backend)
        hold = cases.get(case)
        keys = held_clip_keys(backend, hold.keys) if hold is not None else []
    if not keys:
        raise UsageError(f"disclose: case {case!r} holds no clip in central storage; give"
                         " its clips with --key KEY (a clip's key in central storage)")
    return tuple(keys)


def _settings(context: Context) -> tuple[str, Path]:
    """The agency's name and disclosure signing key, both required."""
    section: DisclosureConfig = context.config.disclosure
    if section.organization is None or section.signing_key is None:
        raise ConfigError("disclosure.organization and disclosure.signing_key: both required"
                          " to sign disclosure bags")
    return section.organization, section.signing_key


def _write(context: Context, case: str, target: Path, keys: tuple[str, ...], by: str,
           disclosed_to: str, as_json: bool) -> None:
    from bwc_dock.disclosure.bag import write_bag  # lazy
    from bwc_dock.disclosure.plan import BagRequest

    organization, signing_key = _settings(context)
    request = BagRequest(case, keys, target, organization, signing_key, by, disclosed_to)
    bar_context = nullcontext(None) if as_json else progress_bar()  # JSON owns stdout
    with context.ledger(hand_actor()) as ledger, context.backend() as backend, \
            bar_context as bar:
        result = write_bag(backend, ledger, request, progress_callback(bar))
    if as_json:
        emit({"bag": str(result.target), "clips": result.clips, "files": result.files,
              "bytes": result.bytes, "tagmanifest_sha256": result.tagmanifest_sha256,
              "signature_sha256": result.signature_sha256, "record_key": result.record_key})
        return
    click.echo(f"bag {result.target}: {result.clips} clip(s), {result.files} files,"
               f" {result.bytes} bytes; signature sha256 {result.signature_sha256}"
               f" (recorded as {result.record_key})")


def _agency_check(context: Context, bag: Path) -> Report:
    """Every check of verify_bag.py, the signature against this agency's key only."""
    from bwc_dock.disclosure import verify_bag  # lazy
    from bwc_dock.disclosure.signing import allowed_signers_line

    organization, signing_key = _settings(context)
    with tempfile.NamedTemporaryFile("w", suffix=".allowed_signers") as allowed:
        allowed.write(allowed_signers_line(organization, signing_key))
        allowed.flush()
        return verify_bag.verify(bag, Path(allowed.name))


def _verify(context: Context, bag: Path, as_json: bool) -> None:
    report = _agency_check(context, bag)
    ok = report.intact and report.signed_by is not None
    if as_json:
        emit({"bag": str(bag), "ok": ok, "problems": report.problems, "notes": report.notes,
              "signed_by": report.signed_by,
              "descends_from": report.descends_from, "files": report.payload_files,
              "bytes": report.payload_bytes})
    else:
        for problem in report.problems:
            click.echo(f"{bag}: {problem}", err=True)
        if ok and report.descends_from is not None:
            click.echo(f"bag {bag} verified: {report.payload_files} files,"
                       f" {report.payload_bytes} bytes, each unchanged from the bag signed by"
                       f" {report.signed_by} (tag manifest sha256 {report.descends_from})")
        elif ok:
            click.echo(f"bag {bag} verified: {report.payload_files} files,"
                       f" {report.payload_bytes} bytes, signed by {report.signed_by}")
    if not ok:
        sys.exit(EXIT_PROBLEM)


def _rebag(context: Context, case: str, parent: Path, target: Path, selected: tuple[str, ...],
           by: str, disclosed_to: str) -> None:
    """A bag of some clips of a bag this agency signed: the parent is verified first."""
    from bwc_dock.disclosure import verify_bag  # lazy
    from bwc_dock.disclosure.records import DisclosureError

    if not selected:
        raise UsageError("disclose --from-bag: give at least one --select NAME")
    report = _agency_check(context, parent)
    if not report.intact or report.signed_by is None:
        reason = report.problems[0] if report.problems else "not signed by this agency"
        raise DisclosureError(f"{parent}: does not verify as this agency's bag: {reason}")
    info = verify_bag.parse_bag_info(verify_bag.read_text(parent / verify_bag.BAG_INFO))
    if info.get("External-Identifier") != case:
        raise DisclosureError(f"{parent}: a bag of case {info.get('External-Identifier')!r},"
                              f" not {case!r}")
    try:
        made = verify_bag.rebag(parent, target, list(selected), by, disclosed_to)
    except verify_bag.BagProblem as error:
        raise DisclosureError(str(error)) from error
    click.echo(f"bag {made}: clips {', '.join(selected)} of {parent}")
