"""The clip state machine, written down once.

Every state change in the ledger goes through :func:`check_transition`; a change not
in :data:`ALLOWED_TRANSITIONS` is a bug and raises.
"""

from __future__ import annotations

from enum import StrEnum

from bwc_dock.errors import IllegalTransition


class ClipState(StrEnum):
    DISCOVERED = "discovered"  # seen on a camera, not yet copied
    COPYING = "copying"  # a copier holds the lease and is reading it
    # copied to staging; the clip's ``staged_verified`` says whether a re-read from disk
    # verified the copy or it waits for its upload's read to verify it (handoff.py)
    STAGED = "staged"
    UPLOADING = "uploading"  # an uploader holds the lease and is sending it
    UPLOADED = "uploaded"  # central storage confirmed the SHA-256 taken at first read
    CLEARED = "cleared"  # deleted from the camera after a verified upload
    QUARANTINED = "quarantined"  # an integrity failure retries did not cure; never deleted


ALLOWED_TRANSITIONS: dict[ClipState, frozenset[ClipState]] = {
    ClipState.DISCOVERED: frozenset({ClipState.COPYING}),
    ClipState.COPYING: frozenset(
        # staged when verified; back to discovered when the camera went away or the
        # copy was interrupted; quarantined after repeated verify mismatches
        {ClipState.STAGED, ClipState.DISCOVERED, ClipState.QUARANTINED}
    ),
    ClipState.STAGED: frozenset(
        # discovered: resync found the staged copy damaged and the camera can be read again
        {ClipState.UPLOADING, ClipState.QUARANTINED, ClipState.DISCOVERED}
    ),
    ClipState.UPLOADING: frozenset(
        # staged: the attempt failed, try again later; quarantined: central storage holds
        # different bytes under the key, or the staged copy no longer matches; discovered:
        # a staged copy no re-read verified (staged_verified false, handoff.py) was
        # damaged: read it again (see ONLY_UNVERIFIED)
        {ClipState.UPLOADED, ClipState.STAGED, ClipState.QUARANTINED, ClipState.DISCOVERED}
    ),
    ClipState.UPLOADED: frozenset(
        # staged / discovered: resync found the central object missing or wrong
        {ClipState.CLEARED, ClipState.STAGED, ClipState.DISCOVERED, ClipState.QUARANTINED}
    ),
    ClipState.CLEARED: frozenset({ClipState.QUARANTINED}),
    # only an operator's resync releases a quarantined clip, back to where it can be redone
    ClipState.QUARANTINED: frozenset({ClipState.STAGED, ClipState.DISCOVERED}),
}

# Transitions allowed only while the clip's staged copy is not verified: a verified copy
# found damaged is quarantined, one left for its upload to verify is read off the camera
# again (handoff.py). The same rule in every process, before and after a restart.
ONLY_UNVERIFIED: frozenset[tuple[ClipState, ClipState]] = frozenset(
    {(ClipState.UPLOADING, ClipState.DISCOVERED)}
)

# States in which the clip's bytes exist only on the camera or in staging.
PENDING_STATES = frozenset(
    {ClipState.DISCOVERED, ClipState.COPYING, ClipState.STAGED, ClipState.UPLOADING}
)
# States that a worker holds under a lease; after a crash they fall back.
LEASED_STATES: dict[ClipState, ClipState] = {
    ClipState.COPYING: ClipState.DISCOVERED,
    ClipState.UPLOADING: ClipState.STAGED,
}


def check_transition(
    current: ClipState, target: ClipState, *, staged_verified: bool = False
) -> None:
    """IllegalTransition unless the change is in the table (and, for the changes in
    ONLY_UNVERIFIED, the clip's staged copy is unverified)."""
    if target not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(f"clip state {current} -> {target} is not allowed")
    if staged_verified and (current, target) in ONLY_UNVERIFIED:
        raise IllegalTransition(
            f"clip state {current} -> {target} is only for a staged copy no re-read verified"
        )
