"""A bad configuration gives exit 2 and a one-line error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dock import Dock

BAD_CONFIGS = {
    "unknown key": ('[dock]\nstate_dir = "/tmp/x"\nstaging_reserv_mb = 5\n'
                    '[storage]\npath = "/tmp/n"\n', "dock.staging_reserv_mb: unknown key"),
    "wrong type": ('[dock]\ncopy_workers = "two"\n[storage]\npath = "/tmp/n"\n',
                   "dock.copy_workers:"),
    "missing storage path": ('[storage]\nbackend = "file"\n',
                             'storage.path: required for backend "file"'),
    "missing storage section": ('[dock]\nid = "d"\n', "storage: required key is missing"),
    "bad TOML": ('[dock\nid = "d"\n', "not valid TOML"),
    "bad usb id": ('[storage]\npath = "/tmp/n"\n[[camera]]\nname = "c"\n'
                   'usb_vendor_id = "0xZZ"\n', "camera.0.usb_vendor_id: not a hex USB id"),
    "s3 without bucket": ('[storage]\nbackend = "s3"\n', "storage.bucket: required"),
    "bad regex": ('[storage]\npath = "/tmp/n"\n[[camera]]\nname = "c"\n'
                  'recorded_pattern = "(unclosed"\n', "camera.0.recorded_pattern:"),
    "unknown backend": ('[storage]\nbackend = "ftp"\npath = "/tmp/n"\n', "storage.backend:"),
    "unknown key field": ('[storage]\npath = "/tmp/n"\nkey_template = "{camera}/{serial}"\n',
                          "storage.key_template: unknown field(s) {serial}"),
    "bad key format": ('[storage]\npath = "/tmp/n"\nkey_template = "{camera}/{sha16!z}"\n',
                       "storage.key_template: not a valid template"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", [["config", "check"], ["status"], ["clips"]])
def test_bad_config_exits_2_naming_the_key(dock: Dock, case: str, command: list[str]) -> None:
    """Every command refuses a bad config with exit 2 and one line naming the key."""
    text, expected = BAD_CONFIGS[case]
    dock.config_path.write_text(text)
    result = dock.cli(*command, check=False)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_unreadable_config_exits_2(dock: Dock, tmp_path: Path) -> None:
    """A missing configuration file is named, exit 2."""
    result = dock.cli("--config", str(tmp_path / "nope.toml"), "config", "check", check=False)
    assert result.returncode == 2
    assert "nope.toml: cannot read the configuration" in result.stderr


def test_config_check_accepts_the_shipped_example(dock: Dock) -> None:
    """config.example.toml is valid as shipped."""
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    result = dock.cli("--config", str(example), "config", "check")
    assert "ok" in result.stdout


def test_shipped_defaults_are_fleet_safe_without_a_warning(dock: Dock) -> None:
    """The default key template is content-addressed: config check has nothing to warn."""
    result = dock.cli("config", "check")
    assert "warning" not in result.stderr


@pytest.mark.parametrize(
    ("template", "warnings"),
    [
        ("{camera}/{recorded:%Y}/{name}", ["no {sha16} or {sha256}"]),
        ("{camera}/{sha16}_{clip_id}_{name}", ["dock-local field(s) {clip_id}"]),
        ("{dock}/{clip_id}_{name}", ["no {sha16} or {sha256}", "{clip_id}, {dock}"]),
        ("{camera}/{sha256}{ext}", []),
    ],
)
def test_config_check_warns_about_templates_that_are_not_fleet_safe(
    dock: Dock, template: str, warnings: list[str]
) -> None:
    """A key template that can collide or duplicate across docks is a warning, not an error."""
    dock.write_config(storage={"key_template": template, "single_dock": True})
    result = dock.cli("config", "check")
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == len(warnings)
    for line, expected in zip(lines, warnings, strict=True):
        assert line.startswith("warning: storage.key_template: ")
        assert expected in line


def test_a_template_that_collides_across_docks_is_refused_unless_single_dock(
    dock: Dock,
) -> None:
    """The old {clip_id}_{name} template is a configuration error (exit 2) for a dock
    that shares its store; single_dock = true accepts it with a warning."""
    dock.write_config(storage={"key_template": "{camera}/{clip_id}_{name}"})
    refused = dock.cli("config", "check", check=False)
    assert refused.returncode == 2
    assert "storage.key_template: has neither {sha16}/{sha256} nor {dock}" in refused.stderr
    dock.write_config(storage={"key_template": "{camera}/{clip_id}_{name}",
                               "single_dock": True})
    assert dock.cli("config", "check").returncode == 0


def test_usb_ids_are_normalised(dock: Dock) -> None:
    """USB ids are hex with or without 0x, any case."""
    from bwc_dock.config import parse_config

    config = parse_config({"storage": {"path": "/n"},
                           "camera": [{"name": "a", "usb_vendor_id": "0X1A2B",
                                       "usb_product_id": "ff"}]})
    assert config.camera[0].usb_vendor_id == "1a2b"
    assert config.camera[0].usb_product_id == "00ff"


def test_shipped_udev_rules_tag_every_shipped_usb_profile() -> None:
    """config.example.toml and udev-rules/99-bwc-dock.rules name the same cameras."""
    from bwc_dock.config import load_config

    repo = Path(__file__).resolve().parent.parent
    rules = (repo / "udev-rules" / "99-bwc-dock.rules").read_text()
    profiles = [p for p in load_config(repo / "config.example.toml").camera if p.usb_vendor_id]
    assert profiles
    for profile in profiles:
        assert (f'ENV{{ID_VENDOR_ID}}=="{profile.usb_vendor_id}", '
                f'ENV{{ID_MODEL_ID}}=="{profile.usb_product_id}", ENV{{BWC_CAMERA}}="1"'
                ) in rules, profile.name
