"""The review as one self-contained HTML page a supervisor opens: the summary table, and
bar charts (inline SVG) of the video rate by month and by officer and of the causes of
no video. The page loads nothing (no script, style sheet, font or image from anywhere;
its Content-Security-Policy forbids it), and every text from the CAD file or the store
is escaped. Each number carries a ``data-*`` name, so a test reads it as the --json
output names it. ``public`` leaves out officers and events (``--aggregate month``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bwc_dock.coverage.report import (
    Review,
    aggregate_by_month,
    aggregate_by_officer,
    iso,
    summary,
)
from bwc_dock.coverage.review import CAUSES, STATUSES
from bwc_dock.durable import write_bytes_durably
from bwc_dock.errors import UsageError

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
td.n { text-align: right; }
tr.no_video td { background: #fde2e2; }
svg text { font-size: 12px; font-family: sans-serif; }
"""
_BAR_WIDTH = 360
_ROW_HEIGHT = 22
_LABEL_WIDTH = 150


def _escape(value: object) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def render(review: Review, *, public: bool) -> str:
    rows = review.rows
    total = summary(rows)
    months = aggregate_by_month(rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        "<title>bwc-dock coverage review</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Body-worn camera coverage review</h1>",
        _summary_table(total),
        "<h2>Video rate by month</h2>",
        _rate_chart("month", [(m["month"], m["video_rate"]) for m in months]),
        "<h2>Causes of no video</h2>",
        _count_chart("cause", [(cause, total["by_cause"][cause]) for cause in CAUSES]),
    ]
    if not public:
        officers = aggregate_by_officer(rows)
        parts += [
            "<h2>Video rate by officer</h2>",
            _rate_chart("officer", [(o["officer"], o["video_rate"]) for o in officers]),
            "<h2>Every call</h2>",
            _rows_table(review),
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_page(review: Review, path: Path, *, public: bool) -> None:
    try:
        write_bytes_durably(path, render(review, public=public).encode("utf-8"))
    except OSError as error:
        raise UsageError(f"--html {path}: cannot write the page: {error.strerror}") from error


def _summary_table(total: Mapping[str, Any]) -> str:
    cells = [
        f'<tr><th>rows reviewed</th><td class="n" data-count="rows">{total["rows"]}</td></tr>'
    ]
    cells += [
        f'<tr><th>{status}</th><td class="n" data-count="status:{status}">'
        f"{total['by_status'][status]}</td></tr>"
        for status in STATUSES
    ]
    cells += [
        f'<tr><th>no video: {cause}</th><td class="n" data-count="cause:{cause}">'
        f"{total['by_cause'][cause]}</td></tr>"
        for cause in CAUSES
    ]
    cells.append(
        f'<tr><th>video rate</th><td class="n" data-rate="all">'
        f"{percent(total['video_rate'])}</td></tr>"
    )
    return "<table>" + "".join(cells) + "</table>"


def _bars(kind: str, items: Sequence[tuple[str, float, str]]) -> str:
    """A horizontal bar per item: (label, fraction of the full width, text shown)."""
    height = max(1, len(items)) * _ROW_HEIGHT + 4
    width = _LABEL_WIDTH + _BAR_WIDTH + 80
    shapes = []
    for index, (label, fraction, shown) in enumerate(items):
        y = index * _ROW_HEIGHT + 2
        bar = max(0.0, min(1.0, fraction)) * _BAR_WIDTH
        shapes.append(
            f'<g data-{kind}="{_escape(label)}">'
            f'<text x="0" y="{y + 15}">{_escape(label)}</text>'
            f'<rect x="{_LABEL_WIDTH}" y="{y}" width="{bar:.1f}" height="{_ROW_HEIGHT - 6}" '
            'fill="#3b6ea8"></rect>'
            f'<text x="{_LABEL_WIDTH + bar + 6:.1f}" y="{y + 15}" data-value="">'
            f"{_escape(shown)}</text></g>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img">{"".join(shapes)}</svg>'
    )


def _rate_chart(kind: str, items: Sequence[tuple[str, float | None]]) -> str:
    return _bars(kind, [(label, rate or 0.0, percent(rate)) for label, rate in items])


def _count_chart(kind: str, items: Sequence[tuple[str, int]]) -> str:
    largest = max((count for _label, count in items), default=0) or 1
    return _bars(kind, [(label, count / largest, str(count)) for label, count in items])


def _rows_table(review: Review) -> str:
    header = "".join(
        f"<th>{name}</th>"
        for name in ("event", "officer", "dispatched", "status", "cause", "rule", "clips")
    )
    body = [
        f'<tr class="{_escape(row.status)}"><td>{_escape(row.event)}</td>'
        f"<td>{_escape(row.officer)}</td><td>{iso(row.dispatched)}</td>"
        f"<td>{row.status}</td><td>{_escape(row.cause)}</td><td>{_escape(row.rule)}</td>"
        f'<td class="n">{len(row.clips)}</td></tr>'
        for row in review.rows
    ]
    return f"<table><tr>{header}</tr>{''.join(body)}</table>"
