"""One error taxonomy for bwc-dock.

Every error the code raises on purpose is a :class:`BwcDockError`. Each class says
whether retrying can heal it (``transient``) and which exit code the command line
uses for it. Retry decisions everywhere go through :func:`is_transient`, so the
question "is this worth another try?" is answered in exactly one place.
"""

from __future__ import annotations

import errno
from enum import StrEnum

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

# OS errors that a later attempt can cure: the network share came back, space was freed.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ESTALE,
        errno.EIO,
        errno.ENOTCONN,
        errno.ENODEV,
        errno.ENXIO,
        errno.ENOENT,  # an unmounted NAS folder shows as a missing directory
    }
)


class BwcDockError(Exception):
    """Base class; the docstring of a subclass is its default message."""

    exit_code: int = EXIT_PROBLEM
    transient: bool = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class ConfigError(BwcDockError):
    """The configuration is not valid."""

    exit_code = EXIT_USAGE


class UsageError(BwcDockError):
    """The command was called wrongly."""

    exit_code = EXIT_USAGE


class LedgerError(BwcDockError):
    """The ledger cannot be used safely."""

    exit_code = EXIT_USAGE


class IllegalTransition(BwcDockError):
    """A clip was asked to move between states the state machine does not allow (a bug)."""


class IntegrityError(BwcDockError):
    """A hash did not match: the bytes are not the evidence the ledger recorded."""


class StorageError(BwcDockError):
    """Central storage failed."""


class TransientStorageError(StorageError):
    """Central storage is unreachable or overloaded for now; a later attempt may work."""

    transient = True


class RefusalKind(StrEnum):
    """What kind of refusal a PermanentStorageError is: what the operator has to fix.

    Set where the store's own error is translated (the backends), so that callers decide
    on the kind, never on the wording of the message.
    """

    CREDENTIALS = "credentials"  # the store does not accept our key or secret
    PERMISSION = "permission"  # access denied, a read-only or non-writable folder
    MISSING_BUCKET = "missing_bucket"
    WRONG_LOCATION = "wrong_location"  # the bucket lives in another region or endpoint
    TLS = "tls"  # the store's certificate could not be verified
    INVALID_REQUEST = "invalid_request"  # an unusable key or setting on our side
    MISSING_OBJECT = "missing_object"  # the object a request is about is not stored
    LINK_REFUSED = "link_refused"  # a symlink on the way to a key (someone planted it)
    ROOT_CHANGED = "root_changed"  # the storage folder is no longer the one first opened
    OTHER = "other"  # any other refusal the store gave


class PermanentStorageError(StorageError):
    """Central storage refused the request (credentials, permissions, missing bucket)."""

    def __init__(self, message: str | None = None, kind: RefusalKind = RefusalKind.OTHER) -> None:
        super().__init__(message)
        self.kind = kind


class StorageConflict(StorageError):
    """Central storage already holds a different object under this key; nothing was overwritten."""


class SourceGone(BwcDockError):
    """The camera went away (undocked, unmounted or read error) while it was being read."""

    transient = True


class StagingFull(BwcDockError):
    """The staging area has no room above its reserve for this clip."""

    transient = True


class HostileEntry(BwcDockError):
    """An entry on a camera volume was refused (symlink, device node, unsafe name, too large)."""


def is_transient(error: BaseException) -> bool:
    """Whether retrying the operation that raised ``error`` can succeed."""
    if isinstance(error, BwcDockError):
        return error.transient
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    if isinstance(error, OSError):
        return error.errno in _TRANSIENT_ERRNOS
    return False


class LeaseLost(BwcDockError):
    """Another worker took over this clip (our lease expired); our result was not recorded."""

    transient = True


class Interrupted(BwcDockError):
    """Work was stopped because bwc-dock is shutting down; it resumes on the next start."""

    transient = True
