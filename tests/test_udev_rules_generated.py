"""The udev rules follow the [[camera]] profiles: `bwc-dock udev-rules` prints them and
`bwc-dock config check` rewrites an installed copy that went stale.

Real parts: the bwc-dock command line as a subprocess and files on disk. udevd loading
the generated rules is tests/test_udev_rules.py (it loads the shipped file, which is the
rendering of config.example.toml, as the first test here proves).
"""

from __future__ import annotations

from pathlib import Path

from bwc_dock.config import load_config
from bwc_dock.udev_rules import render_rules
from tests.dock import Dock

REPOSITORY = Path(__file__).resolve().parent.parent
SITE_PROFILES = [
    {"name": "site-camera", "usb_vendor_id": "0xBEEF", "usb_product_id": "12"},
    {"name": "label-only", "label": "AXON_BODY"},
    {"name": "hostile \"name\"\nline", "label": 'x" , RUN+="/bin/sh'},
    {"name": "card-reader", "serial_source": "folder"},
]


def test_shipped_rules_are_the_rendering_of_the_example_config() -> None:
    """udev-rules/99-bwc-dock.rules is exactly what the example's profiles generate."""
    example = load_config(REPOSITORY / "config.example.toml")
    shipped = (REPOSITORY / "udev-rules" / "99-bwc-dock.rules").read_text()
    assert shipped == render_rules(example.camera)


def test_udev_rules_command_tags_each_usb_profile_and_nothing_unsafe(dock: Dock) -> None:
    """USB ids become lowercase 4-digit matches; a plain label tags a label-only profile;
    a label that could break out of the match string is left out; folders tag nothing."""
    dock.write_config(camera=SITE_PROFILES)
    rules = dock.cli("udev-rules").stdout
    lines = [line for line in rules.splitlines() if line and not line.startswith("#")]
    assert 'ENV{ID_VENDOR_ID}=="beef", ENV{ID_MODEL_ID}=="0012", ENV{BWC_CAMERA}="1"' in lines
    assert 'ENV{ID_FS_LABEL}=="AXON_BODY", ENV{BWC_CAMERA}="1"' in lines
    assert "RUN" not in rules.replace("# ", "")  # nothing of the hostile label got in
    assert all("\n" not in line and "hostile" not in line for line in lines)
    assert sum('ENV{BWC_CAMERA}="1"' in line for line in lines) == 2
    assert 'ENV{UDISKS_IGNORE}="1"' in lines


def test_config_check_rewrites_stale_installed_rules_and_leaves_others_alone(
    dock: Dock, tmp_path: Path
) -> None:
    """A stale installed file is rewritten to the profiles' rules; a missing one is not
    created (the installer does that); a file in step is left untouched."""
    installed = tmp_path / "rules.d" / "99-bwc-dock.rules"
    dock.write_config(camera=SITE_PROFILES[:1], service={"udev_rules_file": str(installed)})

    dock.cli("config", "check")
    assert not installed.exists()

    installed.parent.mkdir()
    installed.write_text("# hand-kept rules for an old camera model\n")
    result = dock.cli("config", "check")
    assert "rewritten from the camera profiles" in result.stdout
    assert installed.read_text() == dock.cli("udev-rules").stdout
    assert not list(installed.parent.glob("*.part"))

    in_step = installed.stat().st_mtime_ns
    result = dock.cli("config", "check")
    assert "rewritten" not in result.stdout
    assert installed.stat().st_mtime_ns == in_step
