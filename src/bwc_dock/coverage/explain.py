"""``coverage explain``: a lasting, audited record of why a video does not exist.

The record goes to central storage, create-only, where every dock and every later
review sees it; the audit event (``coverage.explained``) names its key, so the local
hash chain holds it too. Nothing is ever replaced: a correction is a new record whose
``corrects`` names the key of the one it corrects, and the review uses the newest
record that no other corrects.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bwc_dock.config import Config
from bwc_dock.coverage.records import EXPLANATION_SCHEMA, ExplanationRecord
from bwc_dock.coverage.shared import (
    EXPLANATIONS_PREFIX,
    load_json,
    read_small,
    write_record,
)
from bwc_dock.errors import UsageError
from bwc_dock.ledger import Ledger
from bwc_dock.names import safe_name
from bwc_dock.storage import StorageBackend

EXPLAINED_EVENT = "coverage.explained"
MAX_NOTE = 4000
MAX_ID = 256


def _checked_text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit or not value.isprintable():
        raise UsageError(f"{what} {value[:40]!r}: 1 to {limit} printable characters")
    return value


def explain(
    config: Config,
    backend: StorageBackend,
    ledger: Ledger,
    *,
    event: str,
    officer: str,
    reason: str,
    note: str,
    corrects: str | None,
    actor: str,
    now: datetime | None = None,
) -> str:
    """Store the explanation and audit it; return its key in central storage."""
    event = _checked_text(event, "event", MAX_ID)
    officer = _checked_text(officer, "officer", MAX_ID)
    note = _checked_text(note, "--note", MAX_NOTE)
    if reason not in config.coverage.reason_codes:
        known = ", ".join(config.coverage.reason_codes)
        raise UsageError(f"--reason {reason!r}: not a reason code; known: {known}")
    if corrects is not None:
        _check_corrected(backend, corrects, event, officer)
    made_at = (now or datetime.now(UTC)).astimezone(UTC)
    document = {
        "schema": EXPLANATION_SCHEMA,
        "event": event,
        "officer": officer,
        "reason": reason,
        "note": note,
        "made_at": made_at.isoformat(),
        "dock": config.dock.id,
        "actor": actor,
        "corrects": corrects,
    }
    prefix = f"{EXPLANATIONS_PREFIX}{safe_name(event.encode())}/"
    key = write_record(backend, prefix, officer, made_at, document)
    ledger.record_event(
        EXPLAINED_EVENT,
        details={
            "key": key,
            "event": event,
            "officer": officer,
            "reason": reason,
            "note": note,
            "corrects": corrects,
        },
    )
    return key


def _check_corrected(backend: StorageBackend, key: str, event: str, officer: str) -> None:
    """A correction names an explanation that exists, of the same event and officer."""
    if not key.startswith(EXPLANATIONS_PREFIX):
        raise UsageError(f"--corrects {key!r}: not the key of an explanation")
    data = read_small(backend, key)
    document = data if isinstance(data, str) else load_json(data, EXPLANATION_SCHEMA)
    if isinstance(document, str):
        raise UsageError(f"--corrects {key!r}: {document}")
    try:
        record = ExplanationRecord.model_validate(document)
    except ValueError as error:
        raise UsageError(f"--corrects {key!r}: malformed explanation") from error
    if record.event != event or record.officer.casefold() != officer.casefold():
        raise UsageError(
            f"--corrects {key!r}: it explains event {record.event!r} for {record.officer!r}"
        )
