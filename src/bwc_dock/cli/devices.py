"""``bwc-dock devices``: the USB storage attached now, and the camera profile each matches.

What an admin needs to write a ``[[camera]]`` profile without ``udevadm``: the USB vendor
and product ids, the serial, the filesystem and its label, read from udev's database.
Nothing is mounted or opened, so it is safe beside the running daemon.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from bwc_dock.cli.context import Context, emit, pass_context
from bwc_dock.cli.tables import Table

if TYPE_CHECKING:
    from bwc_dock.config import CameraProfile
    from bwc_dock.sources.udev import AttachedStorage

COLUMNS = ("device", "vendor id", "product id", "serial", "maker", "filesystem", "label",
           "profile")


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout")
@pass_context
def devices(context: Context, as_json: bool) -> None:
    """USB storage attached now: its ids, serial and filesystem, and the profile it matches."""
    from bwc_dock.sources.udev import attached_usb_storage  # lazy: --help must not load pyudev

    profiles = context.config.camera
    documents = [device_document(storage, profiles) for storage in attached_usb_storage()]
    if as_json:
        emit(documents)
        return
    if not documents:
        click.echo("no USB storage attached", err=True)
        return
    table = Table(COLUMNS)
    for document in documents:
        table.add_row(
            document["device"], document["vendor_id"], document["product_id"],
            document["serial"], _maker(document), document["fs_type"], document["fs_label"],
            _profile_cell(document),
        )
    table.print()


def device_document(
    storage: AttachedStorage, profiles: Sequence[CameraProfile]
) -> dict[str, Any]:
    """One device as JSON: its ids, and which profile claims it and whether it is readable."""
    from bwc_dock.sources.identity import claiming_profile, match_profile

    identity = storage.identity
    matched = match_profile(identity, profiles) if identity.has_medium else None
    claimed = matched or claiming_profile(identity, profiles)
    return {
        "device": identity.device,
        "vendor_id": identity.vendor_id,
        "product_id": identity.product_id,
        "serial": identity.serial,
        "vendor": storage.vendor,
        "model": storage.model,
        "fs_type": identity.fs_type,
        "fs_label": identity.fs_label,
        "fs_uuid": identity.fs_uuid,
        "has_medium": identity.has_medium,
        "profile": claimed.name if claimed else None,
        # False: claimed by a profile whose filesystem_types do not include this volume's
        "readable": matched is not None,
    }


def _maker(document: dict[str, Any]) -> str:
    names = [name for name in (document["vendor"], document["model"]) if name]
    return " ".join(names) or "-"


def _profile_cell(document: dict[str, Any]) -> str:
    if not document["has_medium"]:
        return "no medium"
    if document["profile"] is None:
        return "none"
    if not document["readable"]:
        return f"{document['profile']} (filesystem {document['fs_type'] or 'none'} not readable)"
    return str(document["profile"])
