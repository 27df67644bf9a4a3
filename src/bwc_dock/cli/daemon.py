"""``bwc-dock run``: the daemon, in the foreground (systemd runs it)."""

from __future__ import annotations

import sys

import click

from bwc_dock.cli.context import Context, pass_context


@click.command()
@pass_context
def run(context: Context) -> None:
    """Run the daemon in the foreground (systemd runs this)."""
    # lazy: the daemon's modules (sources, pyudev, watchdog) are not loaded for other commands
    from bwc_dock.daemon import Daemon
    from bwc_dock.sources.factory import open_sources

    context.logging(context.config.logging.level)
    config = context.config
    with context.ledger("daemon") as ledger, context.backend() as backend:
        daemon = Daemon(config, ledger, backend, open_sources(config), context.config_path)
        sys.exit(daemon.run())
