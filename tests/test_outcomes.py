"""The error-to-action table (outcomes.py): every error kind has its action per stage."""

from __future__ import annotations

import inspect

from bwc_dock import errors
from bwc_dock.errors import BwcDockError, StorageError
from bwc_dock.outcomes import ACTIONS, Action, copy_action, upload_action, without_a_row

# What each stage does about each kind, written out from docs/design.md ("Errors"),
# not read from the product's table.
DESIGNED: dict[str, tuple[str, str]] = {  # kind: (copier, uploader)
    "LeaseLost": ("leave", "leave"),
    "Interrupted": ("raise", "put_back"),
    "StagingFull": ("wait_for_room", "raise"),
    "SourceGone": ("wait_for_camera", "raise"),
    "HostileEntry": ("refuse", "raise"),
    "IntegrityError": ("quarantine", "check_staged_copy"),
    "StorageConflict": ("raise", "quarantine"),
    "PermanentStorageError": ("raise", "refuse"),
    "TransientStorageError": ("raise", "retry"),
    "StorageError": ("raise", "retry"),
    "OSError": ("retry", "check_staged_copy"),
    "IllegalTransition": ("raise", "raise"),
    "LedgerError": ("raise", "raise"),
    "ConfigError": ("raise", "raise"),
    "UsageError": ("raise", "raise"),
    "BwcDockError": ("raise", "raise"),
}


def _kinds_in_errors_module() -> list[type[BaseException]]:
    return [
        member
        for _name, member in inspect.getmembers(errors, inspect.isclass)
        if issubclass(member, BwcDockError) and member.__module__ == errors.__name__
    ]


def test_every_error_kind_in_errors_py_has_a_row_of_its_own() -> None:
    """A kind added to errors.py without a row here fails this test (it would otherwise
    take its parent's action unseen)."""
    assert without_a_row(_kinds_in_errors_module()) == []


def test_a_kind_without_a_row_is_found() -> None:
    """The check above sees a new kind: one defined here has no row."""

    class NewKindOfStorageTrouble(StorageError):
        """A kind nobody gave an action yet."""

    assert without_a_row([NewKindOfStorageTrouble, StorageError]) == [NewKindOfStorageTrouble]
    # meanwhile it would fall back to its parent's action
    assert upload_action(NewKindOfStorageTrouble()) is Action.RETRY


def test_the_table_is_the_designed_one() -> None:
    """Each kind's copier and uploader actions are the designed ones."""
    assert {kind.__name__: (row.copy.value, row.upload.value)
            for kind, row in ACTIONS.items()} == DESIGNED


def test_an_error_takes_the_action_of_its_most_specific_kind() -> None:
    """A refusal is not a transient failure; an OS error's subclass is an OS error; an
    error no row names (a programming error) rises."""
    assert upload_action(errors.PermanentStorageError("denied")) is Action.REFUSE
    assert upload_action(errors.TransientStorageError("timeout")) is Action.RETRY
    assert copy_action(FileNotFoundError(2, "gone")) is Action.RETRY
    assert copy_action(ValueError("a bug")) is Action.RAISE
