"""The ledger's counters, written down once: clips per state, bytes copied and uploaded
ever, and each docking's ``sums_due`` flag.

``status``, the metrics and the anchorer would otherwise aggregate every clip the dock
has ever seen. Instead triggers on ``clips`` keep the answers in the same transaction as
each insert, delete and change, whichever code makes it (a transition, a bulk release, a
repair by hand). The triggers are generated here from the models and from nothing else:
the state count follows ``clips.state`` whatever its value, so a new state in
``states.py`` is counted without a change here; the byte totals follow the time columns
named in :data:`BYTES_MARKED_BY`. A migration installs them with :func:`install`, and
``tests/test_ledger_counters.py`` checks that a ledger at the newest revision has exactly
these triggers and that they follow a transition into and out of every state.
"""

# ruff: noqa: S608  (every name put into this SQL is a constant of the models; no values)

from __future__ import annotations

from collections.abc import Callable

from bwc_dock.ledger.models import Clip, ClipByteTotal, ClipStateCount, Docking

CLIPS = Clip.__tablename__
STATE_COUNTS = ClipStateCount.__tablename__
BYTE_TOTALS = ClipByteTotal.__tablename__
DOCKINGS = Docking.__tablename__

# A clip's bytes count as copied while its staged_at is set, as uploaded while its
# uploaded_at is set (a resync that sends a clip back clears the time and the bytes).
BYTES_MARKED_BY: dict[str, str] = {
    "copied": Clip.staged_at.key,
    "uploaded": Clip.uploaded_at.key,
}

_ADD_ONE = (
    f"INSERT INTO {STATE_COUNTS} (state, count) VALUES (NEW.state, 1) "
    "ON CONFLICT (state) DO UPDATE SET count = count + 1;"
)
_TAKE_ONE = f"UPDATE {STATE_COUNTS} SET count = count - 1 WHERE state = OLD.state;"


def _state_count_triggers() -> dict[str, str]:
    return {
        "clips_counted_insert": f"AFTER INSERT ON {CLIPS} BEGIN {_ADD_ONE} END",
        "clips_counted_delete": f"AFTER DELETE ON {CLIPS} BEGIN {_TAKE_ONE} END",
        "clips_counted_state": (
            f"AFTER UPDATE OF state ON {CLIPS} WHEN NEW.state IS NOT OLD.state "
            f"BEGIN {_TAKE_ONE} {_ADD_ONE} END"
        ),
    }


def _byte_total_triggers(kind: str, column: str) -> dict[str, str]:
    def change(sign: str, row: str) -> str:
        return f"UPDATE {BYTE_TOTALS} SET bytes = bytes {sign} {row}.size WHERE kind = '{kind}';"

    flip = (
        f"UPDATE {BYTE_TOTALS} SET bytes = bytes + CASE WHEN NEW.{column} IS NULL "
        f"THEN -NEW.size ELSE NEW.size END WHERE kind = '{kind}';"
    )
    return {
        f"clips_{kind}_bytes": (
            f"AFTER UPDATE OF {column} ON {CLIPS} "
            f"WHEN (OLD.{column} IS NULL) != (NEW.{column} IS NULL) BEGIN {flip} END"
        ),
        f"clips_{kind}_bytes_insert": (
            f"AFTER INSERT ON {CLIPS} WHEN NEW.{column} IS NOT NULL "
            f"BEGIN {change('+', 'NEW')} END"
        ),
        f"clips_{kind}_bytes_delete": (
            f"AFTER DELETE ON {CLIPS} WHEN OLD.{column} IS NOT NULL "
            f"BEGIN {change('-', 'OLD')} END"
        ),
    }


def _sums_due_triggers() -> dict[str, str]:
    # a docking whose clip changed state may need its SHA256SUMS (re)written
    return {
        "clips_flag_docking": (
            f"AFTER UPDATE OF state ON {CLIPS} WHEN NEW.state IS NOT OLD.state "
            f"BEGIN UPDATE {DOCKINGS} SET sums_due = 1 WHERE id = NEW.docking_id; END"
        ),
    }


def triggers() -> dict[str, str]:
    """Every counter trigger: name -> its CREATE TRIGGER statement."""
    bodies = {**_state_count_triggers(), **_sums_due_triggers()}
    for kind, column in BYTES_MARKED_BY.items():
        bodies.update(_byte_total_triggers(kind, column))
    return {name: f"CREATE TRIGGER {name} {body}" for name, body in bodies.items()}


def recount_statements() -> list[str]:
    """Statements that set every counter from the clips themselves (one full read)."""
    statements = [
        f"DELETE FROM {STATE_COUNTS}",
        f"INSERT INTO {STATE_COUNTS} (state, count) "
        f"SELECT state, count(*) FROM {CLIPS} GROUP BY state",
        f"DELETE FROM {BYTE_TOTALS}",
    ]
    for kind, column in BYTES_MARKED_BY.items():
        statements.append(
            f"INSERT INTO {BYTE_TOTALS} (kind, bytes) SELECT '{kind}', "
            f"coalesce(sum(size), 0) FROM {CLIPS} WHERE {column} IS NOT NULL"
        )
    return statements


def install(execute: Callable[[str], object], existing: set[str]) -> None:
    """Replace the triggers named in ``existing`` (those of an older revision) by the ones
    generated here and recount, through ``execute`` (a migration's ``op.execute``)."""
    for name in sorted(existing):
        execute(f"DROP TRIGGER IF EXISTS {name}")
    for statement in recount_statements():
        execute(statement)
    for statement in triggers().values():
        execute(statement)
