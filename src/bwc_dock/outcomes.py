"""What the copier and the uploader do about each kind of error, in one table.

``errors.py`` says what went wrong (and whether a retry can heal it); this module says
what a stage does about it. Each row of :data:`ACTIONS` names an error kind and the
action of each stage; the stage carries the action out (copier.py, uploader.py). A new
error kind is a class in ``errors.py`` and a row here; ``tests/test_outcomes.py`` fails
until it has one. A kind is looked up by its most specific class with a row, so a
subclass without a row of its own would silently take its parent's action: the test
therefore wants a row for every class in ``errors.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from bwc_dock.errors import (
    BwcDockError,
    ConfigError,
    HostileEntry,
    IllegalTransition,
    IntegrityError,
    Interrupted,
    LeaseLost,
    LedgerError,
    PermanentStorageError,
    SourceGone,
    StagingFull,
    StorageConflict,
    StorageError,
    TransientStorageError,
    UsageError,
)


class Action(StrEnum):
    """What a stage does with the clip it was working on when an error came."""

    # another worker holds the clip now: record nothing, touch nothing
    LEAVE = "leave"
    # bwc-dock is shutting down: put the clip back as it was, no attempt counted
    PUT_BACK = "put_back"
    # staging has no room: copy again once there is (no attempt counted)
    WAIT_FOR_ROOM = "wait_for_room"
    # the camera went away or the read was cut short: copy again when it is back
    WAIT_FOR_CAMERA = "wait_for_camera"
    # try again later, the attempt counted (upload: with backoff; copy: copy again)
    RETRY = "retry"
    # needs a person (bad credentials, a hostile entry): say so loudly, try again much later
    REFUSE = "refuse"
    # bytes did not match: read the staged copy back from disk; intact, retry; damaged,
    # send the clip back to the camera (copy left for its upload) or quarantine it
    CHECK_STAGED_COPY = "check_staged_copy"
    # an integrity failure no retry can cure: keep everything, never clear, be loud
    QUARANTINE = "quarantine"
    # not the stage's to handle (a bug, a broken ledger or configuration): let it rise to
    # the worker's error boundary
    RAISE = "raise"


@dataclass(frozen=True)
class StageActions:
    """One row of the table: what the copier and the uploader do about one error kind."""

    copy: Action
    upload: Action


# The table. OSError is the operating system's (a read or write that failed); every
# other row is a kind from errors.py.
ACTIONS: dict[type[BaseException], StageActions] = {
    LeaseLost: StageActions(copy=Action.LEAVE, upload=Action.LEAVE),
    Interrupted: StageActions(copy=Action.RAISE, upload=Action.PUT_BACK),
    StagingFull: StageActions(copy=Action.WAIT_FOR_ROOM, upload=Action.RAISE),
    SourceGone: StageActions(copy=Action.WAIT_FOR_CAMERA, upload=Action.RAISE),
    HostileEntry: StageActions(copy=Action.REFUSE, upload=Action.RAISE),
    IntegrityError: StageActions(copy=Action.QUARANTINE, upload=Action.CHECK_STAGED_COPY),
    StorageConflict: StageActions(copy=Action.RAISE, upload=Action.QUARANTINE),
    PermanentStorageError: StageActions(copy=Action.RAISE, upload=Action.REFUSE),
    TransientStorageError: StageActions(copy=Action.RAISE, upload=Action.RETRY),
    StorageError: StageActions(copy=Action.RAISE, upload=Action.RETRY),
    OSError: StageActions(copy=Action.RETRY, upload=Action.CHECK_STAGED_COPY),
    IllegalTransition: StageActions(copy=Action.RAISE, upload=Action.RAISE),
    LedgerError: StageActions(copy=Action.RAISE, upload=Action.RAISE),
    ConfigError: StageActions(copy=Action.RAISE, upload=Action.RAISE),
    UsageError: StageActions(copy=Action.RAISE, upload=Action.RAISE),
    BwcDockError: StageActions(copy=Action.RAISE, upload=Action.RAISE),
}

_NOT_IN_TABLE = StageActions(copy=Action.RAISE, upload=Action.RAISE)


def actions_for(error: BaseException) -> StageActions:
    """The row of the most specific class of ``error`` that has one (RAISE for anything
    the table does not name, such as a programming error)."""
    for kind in type(error).__mro__:
        row = ACTIONS.get(kind)
        if row is not None:
            return row
    return _NOT_IN_TABLE


def copy_action(error: BaseException) -> Action:
    return actions_for(error).copy


def upload_action(error: BaseException) -> Action:
    return actions_for(error).upload


def without_a_row(kinds: Iterable[type[BaseException]]) -> list[type[BaseException]]:
    """The kinds that have no row of their own (they would take a parent's action)."""
    return [kind for kind in kinds if kind not in ACTIONS]
