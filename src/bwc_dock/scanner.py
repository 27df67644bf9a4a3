"""Finding clips on a camera volume, treating every name and entry as hostile.

The walk never follows a symlink, never descends into the same directory twice
(directory loops), stops at a depth and entry budget, and refuses, one entry at a
time with a logged reason, anything that is not a regular file or directory. Names
are kept as raw bytes to reopen the file and shown escaped; staging and remote names
are derived from sanitised names and ledger ids, never from these paths.
Files are reopened relative to directory descriptors with ``O_NOFOLLOW`` so a
symlink or FIFO swapped in after the scan is refused too.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import structlog
from wcmatch import glob

from bwc_dock.config import CameraProfile
from bwc_dock.errors import HostileEntry, SourceGone
from bwc_dock.found import CameraTime, FoundClip, FoundFile, TimeFlag, display_path

log = structlog.get_logger(__name__)

_GLOB_FLAGS = glob.GLOBSTAR | glob.IGNORECASE | glob.DOTGLOB | glob.FORCEUNIX
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO swapped in after the scan must not hang the copier.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class Refusal:
    source_path: str  # escaped for display
    reason: str


ENTRY_BUDGET_EXHAUSTED = "entry budget exhausted"
TIME_BUDGET_EXHAUSTED = "time budget exhausted"
BUDGET_REASONS = (ENTRY_BUDGET_EXHAUSTED, TIME_BUDGET_EXHAUSTED)


@dataclass
class ScanResult:
    clips: list[FoundClip] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    # why the listing stopped short ("entry budget exhausted", "time budget exhausted"):
    # files past the cut were never looked at; None when the volume was read whole
    incomplete: str | None = None


@dataclass(frozen=True)
class ScanLimits:
    max_file_size: int
    max_depth: int = 32
    max_entries: int = 200_000
    # a camera that is slow or huge to list must not keep its scan forever
    max_seconds: float = 300.0


def scan_volume(
    root: Path, profile: CameraProfile, limits: ScanLimits, cancel: threading.Event | None = None
) -> ScanResult:
    """Every clip (with its sidecars) that ``profile`` names on the volume at ``root``;
    ``cancel`` set (the camera undocked, the daemon stopping) ends the walk early."""
    result = ScanResult()
    budget = _Budget(limits, time.monotonic() + limits.max_seconds, cancel)
    result.clips.extend(_group_clips(_walk(root, limits, budget, result.refused), profile))
    result.incomplete = budget.stopped_by if budget.stopped_by in BUDGET_REASONS else None
    for refusal in result.refused:
        log.warning("scan.refused", path=refusal.source_path, reason=refusal.reason)
    return result


@dataclass
class _Budget:
    """How many entries and how much time a scan may still spend."""

    limits: ScanLimits
    deadline: float  # time.monotonic()
    cancel: threading.Event | None = None
    entries_seen: int = 0
    stopped_by: str | None = None  # why it stopped: a budget, or the scan cancelled

    @property
    def stopped(self) -> bool:
        return self.stopped_by is not None

    def remaining(self) -> int:
        return max(self.limits.max_entries - self.entries_seen, 0)

    def exhausted(self) -> str | None:
        """Why the scan must stop now, or None; counts one more entry."""
        self.entries_seen += 1
        if self.entries_seen > self.limits.max_entries:
            self.stopped_by = ENTRY_BUDGET_EXHAUSTED
            return self.stopped_by
        # looked at every 1,024 entries: a look per entry would cost more than the stat
        if self.entries_seen % 1024 == 0:
            if time.monotonic() > self.deadline:
                self.stopped_by = TIME_BUDGET_EXHAUSTED
                return self.stopped_by
            if self.cancel is not None and self.cancel.is_set():
                self.stopped_by = "scan cancelled"
                return self.stopped_by
        return None


@dataclass
class _Directory:
    """A directory being walked: its descriptor, its path, and its subdirectories not
    yet walked (names only: a child is opened when its turn comes, so the walk holds one
    descriptor per level of depth, never one per pending folder)."""

    fd: int
    prefix: bytes  # its path from the volume root
    depth: int
    lineage: frozenset[str] = frozenset()
    subdirectories: list[bytes] = field(default_factory=list)


def _walk(
    root: Path, limits: ScanLimits, budget: _Budget, refused: list[Refusal]
) -> Iterator[FoundFile]:
    try:
        root_fd = os.open(root, _DIRECTORY_FLAGS)
    except OSError as error:
        raise SourceGone(f"cannot open volume {root}: {error.strerror}") from error
    seen_directories: set[tuple[int, int]] = set()
    stack: list[_Directory] = []
    try:
        directory: _Directory | None = _Directory(root_fd, b"", 0)
        while directory is not None:
            stack.append(directory)
            stopped = yield from _list_files(directory, limits, budget, seen_directories, refused)
            if stopped:
                return
            directory = _next_directory(stack, refused)
    finally:
        for level in stack:
            os.close(level.fd)


def _list_files(
    directory: _Directory,
    limits: ScanLimits,
    budget: _Budget,
    seen_directories: set[tuple[int, int]],
    refused: list[Refusal],
) -> Generator[FoundFile, None, bool]:
    """The directory's files; its subdirectories are noted in it. True: stop the walk."""
    listing = _listing_unless_loop(directory, seen_directories, budget, refused)
    directory.lineage = directory.lineage | {_fingerprint(listing)}
    for name, entry_stat in listing:
        yield from _classify(directory, name, entry_stat, limits, refused)
    directory.subdirectories.reverse()  # popped from the end: walked in name order
    return budget.stopped


def _next_directory(stack: list[_Directory], refused: list[Refusal]) -> _Directory | None:
    """The next subdirectory to walk, depth first, opened from its parent; levels with
    nothing left are closed on the way up."""
    while stack:
        parent = stack[-1]
        if not parent.subdirectories:
            os.close(stack.pop().fd)
            continue
        name = parent.subdirectories.pop()
        relative = parent.prefix + b"/" + name if parent.prefix else name
        try:
            child_fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent.fd)
        except OSError as error:
            refused.append(Refusal(display_path(relative), f"cannot open: {error.strerror}"))
            continue
        return _Directory(child_fd, relative, parent.depth + 1, parent.lineage)
    return None


def _listing_unless_loop(
    directory: _Directory, seen: set[tuple[int, int]], budget: _Budget, refused: list[Refusal]
) -> list[tuple[bytes, os.stat_result]]:
    """The directory's entries, or none when it is one already walked (a directory loop).

    Two checks, because FAT has no stable inode numbers: a looped FAT directory gets a
    new inode on every path (fusefat, and the kernel's vfat numbers by entry position),
    so a loop also shows as a directory listing exactly like one of its ancestors.
    """
    directory_stat = os.fstat(directory.fd)
    identity = (directory_stat.st_dev, directory_stat.st_ino)
    if identity in seen:
        refused.append(Refusal(display_path(directory.prefix), "directory loop"))
        return []
    seen.add(identity)
    listing = list(_list_directory(directory.fd, directory.prefix, budget, refused))
    if listing and _fingerprint(listing) in directory.lineage:
        refused.append(
            Refusal(
                display_path(directory.prefix),
                "directory loop (same entries as a parent directory)",
            )
        )
        return []
    return listing


def _fingerprint(listing: list[tuple[bytes, os.stat_result]]) -> str:
    digest = hashlib.sha256()
    for name, entry_stat in listing:
        digest.update(
            b"%s\0%o\0%d\0%d\n"
            % (name, stat.S_IFMT(entry_stat.st_mode), entry_stat.st_size, entry_stat.st_mtime_ns)
        )
    return digest.hexdigest()


def _list_directory(
    directory_fd: int, prefix: bytes, budget: _Budget, refused: list[Refusal]
) -> Iterator[tuple[bytes, os.stat_result]]:
    try:
        # no more names than the budget allows are read: a folder of a million entries
        # costs what the budget lets it, not its size
        with os.scandir(directory_fd) as entries:
            names = sorted(entry.name for entry in islice(entries, budget.remaining() + 1))
    except OSError as error:
        refused.append(Refusal(display_path(prefix), f"unreadable directory: {error.strerror}"))
        return
    for text_name in names:
        reason = budget.exhausted()
        if reason is not None:
            refused.append(Refusal(display_path(prefix), reason))
            return
        name = os.fsencode(text_name)
        if name in (b".", b"..") or b"/" in name or b"\0" in name:
            refused.append(Refusal(display_path(prefix + b"/" + name), "unsafe name"))
            continue
        try:
            yield name, os.stat(name, dir_fd=directory_fd, follow_symlinks=False)
        except OSError as error:
            refused.append(Refusal(display_path(prefix + b"/" + name), error.strerror or "stat"))


def _classify(
    directory: _Directory,
    name: bytes,
    entry_stat: os.stat_result,
    limits: ScanLimits,
    refused: list[Refusal],
) -> Iterator[FoundFile]:
    relative = directory.prefix + b"/" + name if directory.prefix else name
    mode = entry_stat.st_mode
    if stat.S_ISDIR(mode):
        if directory.depth + 1 > limits.max_depth:
            refused.append(Refusal(display_path(relative), "too deep"))
            return
        directory.subdirectories.append(name)
    elif stat.S_ISREG(mode):
        if entry_stat.st_size > limits.max_file_size:
            refused.append(Refusal(display_path(relative), f"too large ({entry_stat.st_size} B)"))
            return
        if not _representable(entry_stat.st_mtime_ns):
            # a date past 2262 (tmpfs, btrfs) fits neither the ledger nor a datetime:
            # refuse this file alone instead of failing the camera's whole scan
            refused.append(Refusal(display_path(relative), "modification time out of range"))
            return
        yield FoundFile(relative, entry_stat.st_size, entry_stat.st_mtime_ns)
    else:
        refused.append(Refusal(display_path(relative), _kind(mode)))


def _representable(mtime_ns: int) -> bool:
    """The time fits a signed 64-bit integer (SQLite) and a timezone-aware datetime."""
    if not -(2**63) <= mtime_ns < 2**63:
        return False
    try:
        datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return False
    return True


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device node"
    return "not a regular file"


def _group_clips(found: Iterable[FoundFile], profile: CameraProfile) -> Iterator[FoundClip]:
    """Clips with their same-stem sidecars from the same folder, in one pass over the
    files: a folder of many thousands of files costs no more than their count."""
    clip_matcher = glob.compile(list(profile.clips), flags=_GLOB_FLAGS)
    sidecar_matcher = glob.compile(list(profile.sidecars), flags=_GLOB_FLAGS)
    clips: list[FoundFile] = []
    sidecars: dict[tuple[bytes, bytes], list[FoundFile]] = {}
    for file in found:
        if clip_matcher.match(file.source_path):
            clips.append(file)
        elif sidecar_matcher.match(_basename(file.source_path)):
            sidecars.setdefault(_folder_and_stem(file.source_path_raw), []).append(file)
    for clip in clips:
        companions = tuple(sidecars.get(_folder_and_stem(clip.source_path_raw), ()))
        camera_time = recorded_time(clip, profile)
        yield FoundClip(clip, camera_time.utc, companions, camera_time)


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def _folder_and_stem(raw_path: bytes) -> tuple[bytes, bytes]:
    folder, _slash, name = raw_path.rpartition(b"/")
    stem, dot, _extension = name.rpartition(b".")
    return folder, (stem if dot else name).lower()


def recorded_time(found: FoundFile, profile: CameraProfile) -> CameraTime:
    """From the profile's file-name pattern when it matches, else the file's mtime, read
    in the zone the profile says the camera's clock keeps."""
    zone = profile.zone
    wall = _name_time(found, profile.recorded_pattern)
    if wall is not None:
        named = _in_zone_if_representable(found, wall, zone, "name")
        if named is not None:
            return named
    mtime = datetime.fromtimestamp(found.mtime_ns / 1e9, tz=UTC)
    if zone is not None and not profile.timestamps_carry_offset:
        # vfat mounted tz=UTC and exFAT entries without an offset: the epoch stat returns
        # is the raw FAT wall clock taken as UTC, so its UTC fields are the camera's reading
        stamped = _in_zone_if_representable(found, mtime.replace(tzinfo=None), zone, "mtime")
        if stamped is not None:
            return stamped
    # a UTC clock, an exFAT driver that already applied the entry's UTC offset, or a
    # wall clock that leaves the calendar once moved into UTC (year 1 or 9999)
    return CameraTime(mtime.replace(tzinfo=None), "UTC", mtime, "mtime")


def _in_zone_if_representable(
    found: FoundFile, wall: datetime, zone: ZoneInfo | None, source: Literal["name", "mtime"]
) -> CameraTime | None:
    try:
        return _in_zone(wall, zone, source)
    except (OverflowError, ValueError):
        log.warning("scan.bad_recorded_time", path=found.source_path, source=source)
        return None


def _name_time(found: FoundFile, pattern: str | None) -> datetime | None:
    if not pattern:
        return None
    match = re.search(pattern, _basename(found.source_path))
    if not match:
        return None
    try:
        parts = {key: int(value) for key, value in match.groupdict().items() if value}
        return datetime(
            parts["Y"],
            parts["m"],
            parts["d"],
            parts.get("H", 0),
            parts.get("M", 0),
            parts.get("S", 0),
        )
    except (KeyError, ValueError):
        log.warning("scan.bad_recorded_time", path=found.source_path, pattern=pattern)
        return None


def _in_zone(
    wall: datetime, zone: ZoneInfo | None, source: Literal["name", "mtime"]
) -> CameraTime:
    """The instant a wall-clock reading names in ``zone``, flagged when daylight saving
    skips it or repeats it. Both are read with fold=0 (Python's and zoneinfo's rule):
    the offset in force before the change."""
    if zone is None:
        return CameraTime(wall, "UTC", wall.replace(tzinfo=UTC), source)
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    utc = first.astimezone(UTC)
    name = str(zone.key)
    if first.utcoffset() == second.utcoffset():
        return CameraTime(wall, name, utc, source)
    exists = utc.astimezone(zone).replace(tzinfo=None) == wall
    flag: TimeFlag = "ambiguous" if exists else "nonexistent"
    offset = _offset_text(first.utcoffset())
    if flag == "ambiguous":
        rule = f"fold=0: the first of the two, before clocks went back (UTC{offset})"
    else:
        rule = f"fold=0: read with the offset before clocks went forward (UTC{offset})"
    return CameraTime(wall, name, utc, source, flag, rule)


def _offset_text(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta()).total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@contextmanager
def parent_directory(root: Path, source_path_raw: bytes) -> Iterator[tuple[int, bytes]]:
    """(descriptor of the directory holding a camera file, the file's name), reached from
    the volume root without following any symlink; raises OSError (ELOOP, ENOTDIR) if one
    is on the way."""
    *directories, name = source_path_raw.split(b"/")
    directory_fd = os.open(root, _DIRECTORY_FLAGS)
    try:
        for directory in directories:
            next_fd = os.open(directory, _DIRECTORY_FLAGS, dir_fd=directory_fd)
            os.close(directory_fd)
            directory_fd = next_fd
        yield directory_fd, name
    finally:
        os.close(directory_fd)


def open_source_file(root: Path, source_path_raw: bytes, expected_size: int) -> int:
    """Open a camera file for reading without following any symlink on the way.

    Raises HostileEntry when what is there now is not the regular file that was
    discovered, SourceGone when the volume cannot be read at all.
    """
    try:
        with parent_directory(root, source_path_raw) as (directory_fd, name):
            file_fd = os.open(name, _FILE_FLAGS, dir_fd=directory_fd)
    except OSError as error:
        raise _open_error(source_path_raw, error) from error
    file_stat = os.fstat(file_fd)
    if not stat.S_ISREG(file_stat.st_mode) or file_stat.st_size != expected_size:
        os.close(file_fd)
        raise HostileEntry(
            f"{display_path(source_path_raw)}: no longer the regular file of "
            f"{expected_size} B that was discovered"
        )
    os.set_blocking(file_fd, True)
    return file_fd


def _open_error(source_path_raw: bytes, error: OSError) -> Exception:
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        return HostileEntry(f"{display_path(source_path_raw)}: symlink on the path")
    return SourceGone(f"{display_path(source_path_raw)}: {error.strerror}")
