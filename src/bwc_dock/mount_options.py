"""Which mount options a camera may have: the product's own, and the few a profile may add.

A profile's ``mount_options`` may only change how names, times and owners are shown; an
option that would undo a safety flag, change what is mounted, or carry syntax is refused.
The mount helper applies an allowlist of its own on top of this.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bwc_dock.mount_paths import MountError

# Options a profile may never add: each would undo a safety flag or change what is mounted.
FORBIDDEN_OPTIONS = frozenset(
    {
        "rw",
        "exec",
        "suid",
        "dev",
        "defaults",
        "user",
        "users",
        "owner",
        "group",
        "remount",
        "bind",
        "rbind",
        "move",
        "loop",
        "rw+",
        "nonempty",
        # the time options below are the product's, not a profile's: a camera's times
        # are interpreted in its profile's zone, which needs the raw values
        "tz",
        "time_offset",
        "sys_tz",
    }
)
_OPTION_SHAPE = re.compile(r"[A-Za-z0-9_.+-]+(=[A-Za-z0-9_.:/+-]+)?")
# mount point names (the helper's are kernel names): no dot, no separator, no leading dash
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # fullmatch: "$" lets "\n" by
# Filesystem options that make the kernel hand over a camera's timestamps unshifted.
# FAT stores local wall-clock time with no zone. Without an option the vfat driver shifts
# it by the kernel's idea of local time (sys_tz, set by whoever booted the dock), silently
# and differently on each dock; with tz=UTC it does no shifting, so stat returns the raw
# FAT wall clock as if it were a UTC epoch, and the scanner re-reads that wall clock in
# the profile's zone. exFAT needs nothing: the kernel driver shifts a timestamp that has
# no UTC-offset field only by its time_offset option (default 0, kept: a profile cannot
# set it), and one that has the field it converts to true UTC itself (see scanner).
FS_TIME_OPTIONS: dict[str, tuple[str, ...]] = {"vfat": ("tz=UTC",)}


def validate_profile_options(options: Sequence[str]) -> tuple[str, ...]:
    """Refuse profile mount options that would weaken the mount or inject syntax."""
    for option in options:
        name = option.split("=", 1)[0].lower()
        shaped = _OPTION_SHAPE.fullmatch(option) is not None
        if name in FORBIDDEN_OPTIONS or name.startswith("x-") or not shaped:
            raise MountError(f"mount option not allowed in a camera profile: {option!r}")
    return tuple(options)
