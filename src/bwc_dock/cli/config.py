"""``bwc-dock config check`` and ``bwc-dock udev-rules``: the configuration, and the udev
rules generated from its camera profiles."""

from __future__ import annotations

import os

import click

from bwc_dock import udev_rules
from bwc_dock.cli.context import Context, pass_context
from bwc_dock.errors import BwcDockError


@click.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("check")
@pass_context
def config_check(context: Context) -> None:
    """Validate the configuration, naming the key of each error."""
    config = context.config
    click.echo(
        f"{context.config_path}: ok (dock {config.dock.id}, storage "
        f"{config.storage.backend}, {len(config.camera)} camera profile(s))"
    )
    # lazy: --help must not load pydantic
    from bwc_dock.clocks import clock_command_risks
    from bwc_dock.config import retention_risks
    from bwc_dock.key_templates import key_template_risks

    # a warning, not an error: one dock alone may use any template it likes
    for risk in key_template_risks(config.storage.key_template):
        click.echo(f"warning: storage.key_template: {risk} (not fleet-safe)", err=True)
    for risk in retention_risks(config):
        click.echo(f"warning: {risk}", err=True)
    # the daemon hands its own PATH to clock commands
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    for risk in clock_command_risks(config.camera, path):
        click.echo(f"warning: {risk}", err=True)
    rules = udev_rules.sync_installed(config.camera, config.service.udev_rules_file)
    if rules is udev_rules.RulesState.UPDATED:
        click.echo(f"{config.service.udev_rules_file}: rewritten from the camera profiles, "
                   "udev reloaded (a camera docked now is tagged at its next docking)")
    elif rules is udev_rules.RulesState.STALE:
        raise BwcDockError(
            f"{config.service.udev_rules_file} differs from the camera profiles and cannot be "
            "rewritten here: run `bwc-dock config check` as root"
        )


@click.command("udev-rules")
@pass_context
def udev_rules_command(context: Context) -> None:
    """Print the udev rules for the configured camera profiles."""
    click.echo(udev_rules.render_rules(context.config.camera), nl=False)
