"""Fixtures of the real-dock rig: the guest image, the accelerator, cameras, dock PCs.

Every test here is marked ``realdock``; it skips with its reason on a machine without
root or QEMU, and fails instead in CI (tests/conftest.py), like every real-parts test.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.realdock.machine import REPO, kvm_works, qemu_available
from tests.realparts import need_root, unavailable

COMMANDS = ("mmdebstrap", "mkfs.vfat", "mcopy", "mmd", "mkfs.exfat", "sfdisk",
            "mount.exfat-fuse", "losetup")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/realdock/" in str(item.path):
            item.add_marker(pytest.mark.realdock)


@pytest.fixture(scope="session")
def realdock_image() -> Path:
    """The guest image (built, or taken from the cache when its inputs did not change)."""
    need_root()
    if not qemu_available():
        unavailable("needs qemu-system-x86_64, qemu-img and mke2fs (scripts/test installs them)")
    for command in COMMANDS:
        if shutil.which(command) is None and not Path(f"/sbin/{command}").exists():
            unavailable(f"needs the command {command} (scripts/test installs it)")
    started = time.monotonic()
    result = subprocess.run([str(REPO / "scripts" / "realdock-image")], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"scripts/realdock-image failed:\n{result.stderr[-4000:]}", pytrace=False)
    print(f"realdock: image ready in {time.monotonic() - started:.0f} s")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def accelerator(realdock_image: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """kvm when a guest kernel prints under it within seconds, else tcg."""
    chosen = "kvm" if kvm_works(realdock_image, tmp_path_factory.mktemp("probe")) else "tcg"
    print(f"realdock: accelerator {chosen}")
    return chosen


@pytest.fixture(scope="module")
def camera_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cameras")
