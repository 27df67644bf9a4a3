"""The review as one self-contained HTML page (written in a later step)."""

from __future__ import annotations

from pathlib import Path

from bwc_dock.coverage.report import Review
from bwc_dock.errors import UsageError


def write_page(review: Review, path: Path, *, public: bool) -> None:
    raise UsageError("--html: not available yet")
