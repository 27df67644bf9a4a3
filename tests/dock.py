"""A dock in a temporary folder, driven through the real ``bwc-dock`` command.

Everything is real: the SQLite ledger file, staging and the central-storage folder on
disk, and ``bwc-dock`` subprocesses that tests kill with real signals.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BWC_DOCK = str(Path(sys.executable).parent / "bwc-dock")
SIDECAR_EXTENSIONS = (".JPG", ".GPS", ".LOG")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table, e.g. a profile's control_transfer
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    return json.dumps(str(value))


def toml_document(sections: dict[str, Any]) -> str:
    """Flat ``[section]`` tables from dicts; arrays of tables (``[[camera]]``) from lists."""
    lines: list[str] = []
    for section, values in sections.items():
        tables = values if isinstance(values, list | tuple) else [values]
        header = f"[[{section}]]" if isinstance(values, list | tuple) else f"[{section}]"
        for table in tables:
            lines.append(header)
            lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
            lines.append("")
    return "\n".join(lines)


@dataclass
class Dock:
    root: Path
    settings: dict[str, Any] = field(default_factory=dict)
    extra_environment: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "staging"

    @property
    def nas(self) -> Path:
        return self.root / "nas"

    @property
    def watch_dir(self) -> Path:
        return self.root / "watch"

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "ledger.sqlite3"

    def write_config(self, **sections: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Defaults merged with ``sections``; a list (``camera=[{...}]``) is an array of tables."""
        # Where these differ from the product's defaults, and why (all else is the
        # product's; a test that is about one of these sets the product's value itself):
        # - staging_reserve_mb 0 (product 1024): the temporary folder's disk is shared
        #   with whatever else runs, so a 1 GiB reserve would make "staging full" depend
        #   on the machine; test_staging_full.py tests the reserve on a small filesystem.
        # - clock_sync_alarm off (product on): the test machine runs no time server, so
        #   its kernel clock is never synchronised.
        # - retries after 0.2 s up to 2 s (product 2 s up to 600 s): a storage outage a
        #   test makes heals within its patience; the retry code is the same.
        # - udev off with a watch folder (product: udev on, no watch folder): the one
        #   udevd is shared and needs root; tests that dock through udev turn it on
        #   (test_docking.py, test_udev_source.py). Both feed the same copier.
        # - rescan every 2 s (product 60 s) and a heartbeat every 1 s (product 5 s): a
        #   test sees a folder looked at again, or a fresh heartbeat, in seconds.
        base: dict[str, Any] = {
            "dock": {"id": "dock-test", "state_dir": str(self.state_dir),
                     "staging_reserve_mb": 0, "clock_sync_alarm": False},
            "storage": {"backend": "file", "path": str(self.nas),
                        "retry_initial_seconds": 0.2, "retry_max_seconds": 2.0},
            "sources": {"udev": False, "watch_dirs": [str(self.watch_dir)],
                        "rescan_interval_seconds": 2},
            "service": {"heartbeat_seconds": 1},
        }
        for name, values in sections.items():
            if isinstance(values, list):
                base[name] = values
            else:
                base.setdefault(name, {}).update(values)
        self.settings = base
        self.nas.mkdir(parents=True, exist_ok=True)
        (self.nas / ".bwc-dock-store").touch()  # what an admin puts on the share once
        self.watch_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(toml_document(base))

    def environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment["BWC_DOCK_CONFIG"] = str(self.config_path)
        environment.pop("JOURNAL_STREAM", None)
        environment.pop("NOTIFY_SOCKET", None)
        environment.update(self.extra_environment)
        return environment

    def cli(self, *arguments: str, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [BWC_DOCK, *arguments], capture_output=True, text=True, timeout=timeout,
            env=self.environment(), check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"bwc-dock {' '.join(arguments)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
            )
        return result

    def manifest_key(self, clip: dict[str, Any]) -> str:
        """The key of this dock's custody record of ``clip``, spelt out as the README says."""
        return f"{clip['remote_key']}.{self.settings['dock']['id']}.clip-{clip['id']}.json"

    def clips(self, *arguments: str) -> list[dict[str, Any]]:
        return json.loads(self.cli("clips", "--json", *arguments).stdout)  # type: ignore[no-any-return]

    def start_daemon(self, log_path: Path | None = None) -> subprocess.Popen[bytes]:
        log_file = (log_path or self.root / "daemon.log").open("ab")
        return subprocess.Popen(
            [BWC_DOCK, "--log-format", "json", "run"], stdout=log_file, stderr=log_file,
            env=self.environment(),
        )

    def stop_daemon(self, process: subprocess.Popen[bytes], timeout: float = 60) -> int:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout)

    def log_events(self, log_path: Path | None = None) -> list[dict[str, Any]]:
        events = []
        for line in (log_path or self.root / "daemon.log").read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip one byte of a file in place (the middle one by default; a negative offset
    counts from the end), as a failing disk or a bad RAM page would."""
    with path.open("r+b") as file:
        if offset is None:
            file.seek(os.path.getsize(path) // 2)
        else:
            file.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))


def write_random(path: Path, size: int, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        remaining = size
        while remaining:
            chunk = min(remaining, 1 << 20)
            out.write(rng.randbytes(chunk))
            remaining -= chunk


def make_camera(folder: Path, sizes: Iterable[int], *, seed: int = 1,
                sidecars: bool = True) -> dict[str, str]:
    """A DCIM-style camera tree of random clips (and sidecars); {relative path: sha256}."""
    rng = random.Random(seed)
    expected: dict[str, str] = {}
    for number, size in enumerate(sizes, start=1):
        directory = f"DCIM/{100 + number // 25}BWC"
        stem = f"20261124_{number // 3600:02d}{number // 60 % 60:02d}{number % 60:02d}_{number:04d}"
        clip = folder / directory / f"{stem}.MP4"
        write_random(clip, size, rng)
        expected[f"{directory}/{stem}.MP4"] = sha256_of(clip)
        if sidecars:
            for extension in SIDECAR_EXTENSIONS[: 1 + number % 3]:
                sidecar = folder / directory / f"{stem}{extension}"
                write_random(sidecar, 100 + number * 7, rng)
                expected[f"{directory}/{stem}{extension}"] = sha256_of(sidecar)
    return expected


def central_objects(nas: Path) -> dict[str, str]:
    """{key: sha256} of every stored object except manifests, SHA256SUMS anchors and the
    fleet's status documents and signing keys (under ``_fleet/``)."""
    return {
        str(path.relative_to(nas)): sha256_of(path)
        for path in nas.rglob("*")
        if path.is_file()
        and path.relative_to(nas).parts[0] != "_fleet"
        and not path.name.endswith(".json")
        and not path.name.startswith("SHA256SUMS")
        and path.name != ".bwc-dock-store"
    }


def wait_until(condition: Callable[[], bool], timeout: float, message: str,
               interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {message}")


BLKIO_ROOT = Path("/sys/fs/cgroup/blkio")


class CameraReadThrottle:
    """Reads from chosen block devices slowed to a camera's speed (a blkio cgroup, v1).

    A loop-device camera reads at memory speed; a camera on USB does not, and a test
    that must pull a camera out mid-copy needs the copy to take a while. This process
    joins the group, so what it starts afterwards (the daemon, and the FUSE helpers the
    daemon's mounts start) is in it too; only devices passed to ``throttle`` slow down.
    """

    def __init__(self, bytes_per_second: int) -> None:
        self.bytes_per_second = bytes_per_second
        self.group = BLKIO_ROOT / f"bwc-dock-slow-{os.getpid()}-{time.monotonic_ns()}"
        self.group.mkdir()
        (self.group / "cgroup.procs").write_text(str(os.getpid()))

    @staticmethod
    def available() -> bool:
        return (BLKIO_ROOT / "blkio.throttle.read_bps_device").exists()

    def throttle(self, device: str) -> None:
        rdev = os.stat(device).st_rdev
        (self.group / "blkio.throttle.read_bps_device").write_text(
            f"{os.major(rdev)}:{os.minor(rdev)} {self.bytes_per_second}"
        )

    def close(self) -> None:
        """Everyone back to the root group (helpers may outlive a test), then remove ours."""
        for _ in range(50):
            for pid in (self.group / "cgroup.procs").read_text().split():
                try:
                    (BLKIO_ROOT / "cgroup.procs").write_text(pid)
                except OSError:
                    continue  # exited meanwhile
            try:
                self.group.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"could not remove {self.group}")


def utc_datetime() -> datetime:
    return datetime.now(UTC)
