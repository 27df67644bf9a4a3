"""Gatekeeping for tests that need real parts (root, loop devices, udevd, FUSE, SeaweedFS).

On a laptop such a test skips with its reason. In CI ``./scripts/test`` sets
``BWC_DOCK_REQUIRE_REALPARTS=1`` and the same situation fails the test instead, so
nothing real silently falls away.
"""

from __future__ import annotations

import os
import shutil

import pytest

# .ci/run sets both; either one is enough, so a CI that calls ./scripts/test directly
# (with only CI=true, as most CI services set it) cannot skip either
REQUIRED = os.environ.get("BWC_DOCK_REQUIRE_REALPARTS") == "1" or os.environ.get(
    "CI", ""
).lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip (laptop) or fail (CI) because a real part is missing."""
    if REQUIRED:
        pytest.fail(f"real part missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def need_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root")


def need_command(name: str) -> str:
    found = shutil.which(name) or next(
        (path for path in (f"/sbin/{name}", f"/usr/sbin/{name}", f"/lib/systemd/{name}")
         if os.path.exists(path)),
        None,
    )
    if found is None:
        unavailable(f"needs the command {name}")
    assert found is not None
    return found
