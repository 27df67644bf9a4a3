"""scripts/install and scripts/uninstall, run for real into a temporary root, twice.

Nothing here touches the machine: every path is under a temporary --root. The installer
builds a real venv there and pip-installs a copy of this source tree into it (from the
package index the machine is set up with), so the first run takes half a minute. To
build that venv once, the tests share one installed root and run in file order: install
twice, verify the installed unit, then uninstall.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bwc_dock.config import load_config
from bwc_dock.udev_rules import render_rules
from tests import realparts
from tests.test_unit_file import helper_with_program, unit_with_program, verify

REPOSITORY = Path(__file__).resolve().parent.parent
# What the tree ships as config.installed.toml here: a site's profile, so that the udev
# rules can be seen generated from it. The example (with its clearing profile) is real.
INSTALLED_CONFIG = (
    '[storage]\nbackend = "file"\npath = "/mnt/evidence"\n'
    '[[camera]]\nname = "site-camera"\nusb_vendor_id = "0x4321"\nusb_product_id = "0xAB"\n'
)
RULES = 'SUBSYSTEM=="block", ENV{ID_BUS}=="usb", TAG+="bwc-dock"\n'
INSTALLED_PROGRAM = "/opt/bwc-dock/venv/bin/bwc-dock"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this source tree with an installed config and udev rules of the test's own."""
    tree = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".venv", ".git")
    for name in ("src", "systemd", "scripts"):
        shutil.copytree(REPOSITORY / name, tree / name, ignore=ignore)
    shutil.copy(REPOSITORY / "pyproject.toml", tree)
    (tree / "README.md").write_text("# bwc-dock\n")
    shutil.copy(REPOSITORY / "config.example.toml", tree)
    (tree / "config.installed.toml").write_text(INSTALLED_CONFIG)
    (tree / "udev-rules").mkdir()
    (tree / "udev-rules" / "99-bwc-dock.rules").write_text(RULES)
    return tree


@pytest.fixture(scope="module")
def root(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary root after the first run of the installer."""
    installed = tmp_path_factory.mktemp("installed") / "root"
    first = run(source, "install", installed)
    assert first.returncode == 0, first.stderr
    return installed


def run(source: Path, script: str, root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(source / "scripts" / script), "--root", str(root), *arguments,
         *(["--python", sys.executable] if script == "install" else [])],
        capture_output=True, text=True, timeout=600, check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def tree_outside_venv(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every file, link and folder outside the venv: mode and content (or link target)."""
    listing: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative.startswith("opt/bwc-dock/venv"):
            continue
        if path.is_symlink():
            listing[relative] = (mode(path), os.readlink(path))
        elif path.is_file():
            listing[relative] = (mode(path), path.read_bytes())
        else:
            listing[relative] = (mode(path), "directory")
    return listing


def installed_module_file(root: Path) -> str:
    python = root / "opt/bwc-dock/venv/bin/python"
    return subprocess.run(
        [str(python), "-c", "import bwc_dock.journald as m; print(m.__file__)"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()


def kernel_has_exfat() -> bool:
    return "exfat" in Path("/proc/filesystems").read_text().split()


def test_install_twice_is_idempotent_and_keeps_local_changes(source: Path, root: Path) -> None:
    """Second run upgrades the code, changes nothing else, and keeps config, keys and state."""
    machine_unit = Path("/etc/systemd/system/bwc-dock.service")
    machine_unit_existed = machine_unit.exists()
    venv_python = root / "opt/bwc-dock/venv/bin/python"
    assert installed_module_file(root).startswith(str(root / "opt/bwc-dock/venv/lib"))
    assert (root / INSTALLED_PROGRAM.lstrip("/")).exists()
    for name in ("bwc-dock.service", "bwc-dock-mount.socket", "bwc-dock-mount.service"):
        unit = root / "etc/systemd/system" / name
        assert unit.read_bytes() == (source / "systemd" / name).read_bytes(), name
        assert mode(unit) == 0o644, name
    assert (root / "opt/bwc-dock/venv/bin/bwc-dock-mount").exists()  # the helper's ExecStart
    rules = root / "etc/udev/rules.d/99-bwc-dock.rules"
    # generated from the installed config's [[camera]] profiles, not copied from the tree
    assert rules.read_text() == render_rules(load_config(root / "etc/bwc-dock/config.toml").camera)
    assert 'ENV{ID_VENDOR_ID}=="4321", ENV{ID_MODEL_ID}=="00ab", ENV{BWC_CAMERA}="1"' in (
        rules.read_text()
    )
    assert rules.read_text() != RULES
    assert mode(rules) == 0o644
    command = root / "usr/local/bin/bwc-dock"
    assert os.readlink(command) == INSTALLED_PROGRAM  # the README's commands are on PATH
    modules = root / "etc/modules-load.d/bwc-dock.conf"
    assert {"usb_storage", "sd_mod", "vfat", "exfat"} <= set(modules.read_text().split())
    config = root / "etc/bwc-dock/config.toml"
    # the installed config, never the example with its sample profile that clears cameras
    assert config.read_text() == INSTALLED_CONFIG
    assert mode(config) == 0o640
    reference = root / "opt/bwc-dock/config.example.toml"
    assert reference.read_bytes() == (REPOSITORY / "config.example.toml").read_bytes()
    assert mode(reference) == 0o644
    assert mode(root / "etc/bwc-dock") == 0o750
    credentials = root / "etc/bwc-dock/aws-credentials"
    assert credentials.read_bytes() == b""
    assert mode(credentials) == 0o600
    for state in ("var/lib/bwc-dock", "var/lib/bwc-dock/staging", "var/lib/bwc-dock/mounts"):
        assert mode(root / state) == 0o750, state
    wants = root / "etc/systemd/system/multi-user.target.wants/bwc-dock.service"
    socket_wants = root / "etc/systemd/system/sockets.target.wants/bwc-dock-mount.socket"
    if shutil.which("systemctl"):
        assert os.readlink(wants) == "/etc/systemd/system/bwc-dock.service"
        assert os.readlink(socket_wants) == "/etc/systemd/system/bwc-dock-mount.socket"
    exfat_link = root / "sbin/mount.exfat"
    if not kernel_has_exfat() and Path("/sbin/mount.exfat-fuse").exists():
        assert os.readlink(exfat_link) == "mount.exfat-fuse"
    else:
        assert not exfat_link.is_symlink()
    after_first = tree_outside_venv(root)

    # the operator's edits, the keys and evidence in staging, then an upgrade of the code
    config.write_text(INSTALLED_CONFIG + "# edited on site\n")
    credentials.write_text("[default]\naws_access_key_id = AKIAEXAMPLE\n")
    (root / "var/lib/bwc-dock/ledger.sqlite3").write_bytes(b"SQLite format 3\0")
    (root / "var/lib/bwc-dock/staging/42.MP4").write_bytes(b"evidence")
    marker = "\nUPGRADE_MARKER = 'second build'\n"
    (source / "src/bwc_dock/journald.py").write_text(
        (REPOSITORY / "src/bwc_dock/journald.py").read_text() + marker
    )
    try:
        second = run(source, "install", root)
    finally:
        shutil.copy(REPOSITORY / "src/bwc_dock/journald.py", source / "src/bwc_dock/journald.py")
    assert second.returncode == 0, second.stderr
    assert "keeping existing" in second.stdout
    assert config.read_text().endswith("# edited on site\n")
    assert mode(config) == 0o640
    assert credentials.read_text().startswith("[default]")
    assert mode(credentials) == 0o600
    assert (root / "var/lib/bwc-dock/staging/42.MP4").read_bytes() == b"evidence"
    upgraded = subprocess.run(
        [str(venv_python), "-c", "import bwc_dock.journald as m; print(m.UPGRADE_MARKER)"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert upgraded.stdout.strip() == "second build"
    after_second = tree_outside_venv(root)
    changed = {
        path for path in set(after_first) | set(after_second)
        if after_first.get(path) != after_second.get(path)
    }
    assert changed == {
        "etc/bwc-dock/config.toml", "etc/bwc-dock/aws-credentials",
        "var/lib/bwc-dock/ledger.sqlite3", "var/lib/bwc-dock/staging/42.MP4",
    }
    assert machine_unit.exists() == machine_unit_existed


def test_installed_unit_requires_the_nas_mount(root: Path) -> None:
    """The installer gives bwc-dock.service RequiresMountsFor= and ReadWritePaths= for the
    config's NAS folder, so a share mounted anywhere needs no hand-made drop-in."""
    dropin = root / "etc/systemd/system/bwc-dock.service.d/storage-mount.conf"
    assert dropin.read_text().splitlines()[1:] == [
        "[Unit]", "RequiresMountsFor=/mnt/evidence", "[Service]", "ReadWritePaths=-/mnt/evidence"
    ]
    assert mode(dropin) == 0o644


def test_installed_unit_verifies_against_the_installed_program(root: Path, tmp_path: Path) -> None:
    """systemd-analyze verify accepts the installed unit run by the installed console script."""
    realparts.need_command("systemd-analyze")
    program = root / INSTALLED_PROGRAM.lstrip("/")
    check_directory = tmp_path / "check"
    check_directory.mkdir()
    installed_unit = (root / "etc/systemd/system/bwc-dock.service").read_text()
    result = verify(unit_with_program(check_directory, program, installed_unit))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_installed_helper_unit_verifies_against_the_installed_helper(
    root: Path, tmp_path: Path
) -> None:
    """systemd-analyze verify accepts the installed mount helper unit run by its installed
    console script (the venv really has bwc-dock-mount)."""
    realparts.need_command("systemd-analyze")
    program = root / "opt/bwc-dock/venv/bin/bwc-dock-mount"
    installed_unit = (root / "etc/systemd/system/bwc-dock-mount.service").read_text()
    result = verify(helper_with_program(tmp_path, program, installed_unit))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_uninstall_keeps_evidence_unless_purged_and_forced(source: Path, root: Path) -> None:
    """Uninstall keeps config and state; --purge refuses while staging holds files."""
    (root / "var/lib/bwc-dock/staging/7.MP4").write_bytes(b"not uploaded yet")
    removed = run(source, "uninstall", root)
    assert removed.returncode == 0, removed.stderr
    for gone in ("opt/bwc-dock", "etc/systemd/system/bwc-dock.service",
                 "etc/systemd/system/bwc-dock-mount.socket",
                 "etc/systemd/system/bwc-dock-mount.service",
                 "etc/systemd/system/sockets.target.wants/bwc-dock-mount.socket",
                 "etc/udev/rules.d/99-bwc-dock.rules", "etc/modules-load.d/bwc-dock.conf",
                 "usr/local/bin/bwc-dock",
                 "etc/systemd/system/multi-user.target.wants/bwc-dock.service",
                 "sbin/mount.exfat"):
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    assert (root / "etc/bwc-dock/config.toml").exists()
    assert (root / "var/lib/bwc-dock/staging/7.MP4").exists()

    # purging refuses while staging holds files, and changes nothing then
    refused = run(source, "uninstall", root, "--purge")
    assert refused.returncode != 0
    assert "staging still holds files" in refused.stderr
    assert (root / "var/lib/bwc-dock/staging/7.MP4").exists()
    forced = run(source, "uninstall", root, "--purge", "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (root / "var/lib/bwc-dock").exists()
    assert not (root / "etc/bwc-dock").exists()


def test_install_refuses_a_tree_without_the_package(tmp_path: Path) -> None:
    """Pointed at something that is not a bwc-dock source tree, the installer stops at once."""
    result = subprocess.run(
        [str(REPOSITORY / "scripts/install"), "--root", str(tmp_path / "root"),
         "--source", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert "not a bwc-dock source tree" in result.stderr
    assert not (tmp_path / "root/opt").exists()


def test_the_shipped_installed_config_mounts_offloads_and_clears_nothing(tmp_path: Path) -> None:
    """config.installed.toml loads, has no camera profile and waits for a mounted NAS."""
    config = load_config(REPOSITORY / "config.installed.toml")
    assert config.camera == ()
    assert (config.storage.backend, config.storage.path) == ("file", Path("/mnt/evidence"))
    assert config.storage.path_must_be_mountpoint is True
    assert 'ENV{BWC_CAMERA}="1"' not in render_rules(config.camera)  # udev tags no device

    # its commented profile template, uncommented as an admin would, is a valid profile
    text = (REPOSITORY / "config.installed.toml").read_text()
    template = text[text.index("# [[camera]]"):]
    uncommented = tmp_path / "config.toml"
    uncommented.write_text(text + "".join(
        line.removeprefix("# ") + "\n" for line in template.splitlines()
    ))
    (profile,) = load_config(uncommented).camera
    assert (profile.name, profile.usb_vendor_id, profile.usb_product_id) == (
        "my-camera-model", "1234", "5678"
    )
    assert profile.clear_after_upload is False
