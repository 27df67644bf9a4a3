"""The ``bwc-dock`` group, its global options, the explicit list of commands, and ``main``.

Every command module imports only click and light bwc-dock modules at the top, so that
``bwc-dock --help`` starts at once; what a command needs loads when it runs.
"""

from __future__ import annotations

import os
import sys
from itertools import pairwise

import click

from bwc_dock.cli import (
    audit,
    cameras,
    clips,
    config,
    coverage,
    daemon,
    devices,
    disclose,
    fleet,
    hold,
    ingest,
    resync,
    status,
    storage,
    verify,
)
from bwc_dock.cli.context import Context
from bwc_dock.errors import EXIT_PROBLEM, EXIT_USAGE, BwcDockError
from bwc_dock.names import display_text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_option", metavar="PATH", help="configuration file")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto")
@click.version_option(package_name="bwc-dock")
@click.pass_context
def cli(
    click_context: click.Context, config_option: str | None, log_level: str | None, log_format: str
) -> None:
    """bwc-dock: offload body-worn cameras to central evidence storage, hash-verified."""
    click_context.obj = Context(config_option, log_level, log_format)


COMMANDS: tuple[click.Command, ...] = (
    daemon.run,
    status.status,
    clips.clips,
    ingest.ingest,
    config.config_group,
    config.udev_rules_command,
    audit.audit_group,
    resync.resync,
    verify.verify,
    cameras.cameras_group,
    fleet.fleet,
    devices.devices,
    disclose.disclose,
    hold.hold_group,
    storage.storage_group,
    coverage.coverage_group,
)
for command in COMMANDS:
    cli.add_command(command)


# Files and folders the CLI creates (ledger, WAL, staging, state dirs) are for root and
# the daemon alone, also when a supervisor runs a command by hand under umask 022.
CLI_UMASK = 0o077


def main() -> None:
    """Entry point: one line on stderr for every error, and the error's exit code."""
    os.umask(CLI_UMASK)
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        sys.exit(EXIT_USAGE)
    except click.ClickException as error:
        click.echo(f"bwc-dock: {display_text(error.format_message())}", err=True)
        sys.exit(EXIT_USAGE)
    except BwcDockError as error:
        _debug_traceback()
        click.echo(f"bwc-dock: {display_text(str(error))}", err=True)
        sys.exit(error.exit_code)
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line, exit 1
        _debug_traceback()
        click.echo(
            f"bwc-dock: unexpected error: {type(error).__name__}: {display_text(str(error))}",
            err=True,
        )
        sys.exit(EXIT_PROBLEM)


def _debug_traceback() -> None:
    arguments = sys.argv[1:]
    if "--log-level=debug" in arguments or ("--log-level", "debug") in pairwise(arguments):
        import traceback

        traceback.print_exc()
