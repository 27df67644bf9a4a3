"""Shared fixtures: a dock in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dock import Dock


@pytest.fixture
def dock(tmp_path: Path) -> Dock:
    """A dock configured on embedded defaults: SQLite ledger, staging, a folder as NAS."""
    instance = Dock(tmp_path)
    instance.write_config()
    return instance


pytest_plugins = ("tests.udevharness", "tests.seaweedfs")
