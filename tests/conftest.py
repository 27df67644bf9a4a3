"""Shared fixtures: a dock in a temporary folder; in CI, no test may skip."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from tests.dock import Dock
from tests.realparts import REQUIRED

pytest_plugins = ("tests.udevharness", "tests.seaweedfs")


@pytest.fixture
def dock(tmp_path: Path) -> Dock:
    """A dock configured on embedded defaults: SQLite ledger, staging, a folder as NAS."""
    instance = Dock(tmp_path)
    instance.write_config()
    return instance


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """With BWC_DOCK_REQUIRE_REALPARTS=1 (CI) a skip of any kind, also a plain pytest.skip
    that bypassed tests/realparts.py, is a failure: nothing real silently falls away."""
    report = yield
    if REQUIRED and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """The same for a whole file skipped as it is collected (a module-level pytest.skip or
    pytest.importorskip): in CI that is a collection error, not a quiet gap."""
    report = yield
    if REQUIRED and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"file skipped in CI, which must run every test: {report.longrepr}"
    return report
