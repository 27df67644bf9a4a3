"""A review as documents: the ``--json`` object, ``--csv`` rows, counts, the monthly aggregate.

Everything here is a pure function of the rows, sorted the same way every time, and
carries no time of its own making: the same inputs give byte-identical output.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bwc_dock.coverage.cad import Invalid
from bwc_dock.coverage.review import CAUSES, STATUSES, Row
from bwc_dock.coverage.shared import Problem

CSV_COLUMNS = (
    "event",
    "officer",
    "call_type",
    "dispatched",
    "cleared",
    "status",
    "cause",
    "rule",
    "clips",
    "cameras",
    "explanation",
    "lines",
)


@dataclass(frozen=True)
class Review:
    """A finished review: its rows, the CAD rows set aside, the records not usable."""

    rows: tuple[Row, ...]
    invalid: tuple[Invalid, ...]
    unreadable: tuple[Problem, ...]

    @property
    def accepted(self) -> bool:
        return all(row.accepted for row in self.rows) and not self.invalid


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def row_document(row: Row) -> dict[str, Any]:
    return {
        "event": row.event,
        "officer": row.officer,
        "call_type": row.call_type,
        "dispatched": iso(row.dispatched),
        "cleared": iso(row.cleared),
        "lines": list(row.lines),
        "status": row.status,
        "cause": row.cause,
        "rule": row.rule,
        "clips": list(row.clips),
        "cameras": list(row.cameras),
        "explanation": (
            {
                "key": row.explanation.key,
                "reason": row.explanation.reason,
                "note": row.explanation.note,
            }
            if row.explanation
            else None
        ),
    }


def summary(rows: Iterable[Row]) -> dict[str, Any]:
    """Counts by status and by cause, and the share of reviewed rows with video."""
    rows = list(rows)
    statuses = Counter(row.status for row in rows)
    causes = Counter(row.cause for row in rows if row.cause)
    return {
        "rows": len(rows),
        "by_status": {status: statuses.get(status, 0) for status in STATUSES},
        "by_cause": {cause: causes.get(cause, 0) for cause in CAUSES},
        "video_rate": video_rate(rows),
    }


def video_rate(rows: Sequence[Row]) -> float | None:
    """Rows with video among those that should have it (excluded and pending left out),
    as a fraction rounded to 4 places; None when there are none."""
    judged = [row for row in rows if row.status in ("video", "explained", "no_video")]
    if not judged:
        return None
    return round(sum(row.status == "video" for row in judged) / len(judged), 4)


def review_document(review: Review) -> dict[str, Any]:
    return {
        "rows": [row_document(row) for row in review.rows],
        "invalid": [{"line": item.line, "reason": item.reason} for item in review.invalid],
        "unreadable": [
            {"key": problem.key, "reason": problem.reason} for problem in review.unreadable
        ],
        "summary": summary(review.rows),
    }


def encode_json(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def csv_text(rows: Iterable[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                _csv_safe(row.event),
                _csv_safe(row.officer),
                _csv_safe(row.call_type),
                iso(row.dispatched),
                iso(row.cleared),
                row.status,
                row.cause or "",
                row.rule or "",
                " ".join(row.clips),
                " ".join(row.cameras),
                row.explanation.key if row.explanation else "",
                " ".join(str(line) for line in row.lines),
            ]
        )
    return out.getvalue()


def _csv_safe(text: str) -> str:
    """A value a spreadsheet will not run as a formula (=, +, -, @ first)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# -- for publication ------------------------------------------------------------------


def aggregate_by_month(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Per month of dispatch (UTC): counts by status and cause, no event or officer ids."""
    months: dict[str, list[Row]] = {}
    for row in rows:
        months.setdefault(row.dispatched.astimezone(UTC).strftime("%Y-%m"), []).append(row)
    return [{"month": month} | summary(found) for month, found in sorted(months.items())]


def aggregate_by_officer(rows: Iterable[Row]) -> list[dict[str, Any]]:
    officers: dict[str, list[Row]] = {}
    for row in rows:
        officers.setdefault(row.officer, []).append(row)
    return [{"officer": officer} | summary(found) for officer, found in sorted(officers.items())]
