"""A command run by hand under a lax umask leaves the ledger and staging private.

Real parts: ``bwc-dock`` run through a shell whose umask is 022 (as a supervisor's login
shell would have), the SQLite ledger with its WAL files, staging and the camera folder.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.dock import BWC_DOCK, Dock, make_camera


def run_with_umask_022(dock: Dock, *arguments: str) -> None:
    done = subprocess.run(
        ["sh", "-c", 'umask 022 && exec "$@"', "sh", BWC_DOCK, *arguments],
        env=dock.environment(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_hand_run_ingest_under_umask_022_keeps_ledger_and_staging_private(dock: Dock) -> None:
    """ingest under umask 022: ledger (and its WAL files) 0600, state and staging
    folders 0700, every staged clip folder 0700 and no staged file readable by others."""
    dock.write_config()
    make_camera(dock.root / "card", [1000, 2000])

    run_with_umask_022(dock, "ingest", str(dock.root / "card"), "--camera-serial", "CAM1")

    assert mode(dock.ledger_path) == 0o600
    for suffix in ("-wal", "-shm"):
        side = Path(f"{dock.ledger_path}{suffix}")
        if side.exists():
            assert mode(side) == 0o600, side
    assert mode(dock.state_dir) == 0o700
    assert mode(dock.staging_dir) == 0o700
    staged = list(dock.staging_dir.rglob("*"))
    assert any(path.is_file() for path in staged)
    for path in staged:
        if path.is_dir():
            assert mode(path) == 0o700, path
        else:
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


def test_a_ledger_left_world_readable_is_made_private_when_opened(dock: Dock) -> None:
    """A ledger an older release left at 0644 is 0600 after the next command opens it."""
    dock.write_config()
    run_with_umask_022(dock, "cameras", "--json")
    os.chmod(dock.ledger_path, 0o644)

    run_with_umask_022(dock, "cameras", "--json")

    assert mode(dock.ledger_path) == 0o600
