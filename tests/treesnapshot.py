"""What a folder tree holds, to prove that a run left it exactly as it was.

A snapshot maps each path below a root (the root itself excluded: creating an allowed
subfolder changes the root's own mtime) to what a change would alter: its type, mode,
size and mtime, and for a regular file its SHA-256, for a symlink its target, for a
device node its device number. Access times are left out: reading is allowed. Nothing
is opened but regular files, so FIFOs, sockets and device nodes on a hostile camera are
recorded without being touched. Comparing two snapshots shows files added, removed or
changed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection
from pathlib import Path

Entry = tuple[str, int, int, int, str]  # type, mode, size, mtime_ns, content
Snapshot = dict[str, Entry]


def _content(path: Path, status: os.stat_result) -> tuple[str, str]:
    """(type, content digest) without following links or opening special files."""
    if stat.S_ISLNK(status.st_mode):
        return "symlink", os.readlink(path)
    if stat.S_ISREG(status.st_mode):
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
        return "file", digest.hexdigest()
    if stat.S_ISDIR(status.st_mode):
        return "directory", ""
    if stat.S_ISCHR(status.st_mode) or stat.S_ISBLK(status.st_mode):
        return "device", f"{os.major(status.st_rdev)}:{os.minor(status.st_rdev)}"
    if stat.S_ISFIFO(status.st_mode):
        return "fifo", ""
    return "socket", ""


def tree_snapshot(root: Path, exclude: Collection[str] = ()) -> Snapshot:
    """Every path below ``root`` (relative, as bytes-safe text) except those under
    ``exclude`` (relative paths of subtrees that are allowed to change)."""
    snapshot: Snapshot = {}
    excluded = {os.path.normpath(path) for path in exclude}
    for directory, subdirectories, files in os.walk(root, followlinks=False):
        relative_directory = os.path.relpath(directory, root)
        subdirectories[:] = [
            name for name in subdirectories
            if os.path.normpath(os.path.join(relative_directory, name)) not in excluded
        ]
        for name in (*subdirectories, *files):
            relative = os.path.normpath(os.path.join(relative_directory, name))
            if relative in excluded:
                continue
            path = Path(directory, name)
            status = path.lstat()
            kind, content = _content(path, status)
            size = status.st_size if kind in ("file", "symlink") else 0
            snapshot[relative] = (kind, status.st_mode, size, status.st_mtime_ns, content)
    return snapshot


def differences(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    """Paths added, removed and changed between two snapshots (empty lists: identical)."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(path for path in set(before) & set(after)
                          if before[path] != after[path]),
    }


NO_DIFFERENCES: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}
