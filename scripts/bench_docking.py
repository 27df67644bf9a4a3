#!/usr/bin/env python3
"""Benchmark docking: udev event -> first byte copied, and offload throughput against cat.

Real parts only, as in tests/test_docking.py: systemd-udevd with the project's rules and
the loop-identity test rule, exFAT and FAT32 camera images on loop devices, FUSE mounts,
and ``bwc-dock run`` as a subprocess (file backend, SQLite ledger, in a temporary folder).

For each camera, one at a time:

1. the page cache of its image and loop device is dropped, then ``losetup`` attaches it
   (the udev event); the latency is from just before ``losetup`` to the daemon's
   ``clip.copying`` event of the first clip (logged as the copier opens the file);
2. the daemon's offload throughput is the bytes of every clip and sidecar over the time
   from the first ``clip.copying`` to the last ``clip.staged`` (read once, hashed,
   written, fsynced, re-read from disk to verify);
3. after the daemon has released the camera, the same device is mounted again the way
   the daemon mounts it (bwc_dock.mounting.Mounter: same helper, same options), caches
   are dropped again, and ``cat`` reads the same files to /dev/null.

Target: the daemon within 10% of cat. A loop device reads at memory speed,
far faster than any camera, so on a small machine the daemon's hashing (once on the
read, once more to verify the staged copy from disk) is what limits it, not the camera.
``--camera-mbps N`` makes the camera behave like a real USB one: a blkio cgroup (v1)
throttles reads from the loop devices to N MB/s, for the daemon and cat alike.

Run as root:

    .venv/bin/python scripts/bench_docking.py [--clips 4] [--clip-mb 64] [--camera-mbps 40]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.dock import CameraReadThrottle, Dock  # noqa: E402
from tests.udevharness import (  # noqa: E402
    CameraBay,
    ClipSource,
    LoopCamera,
    settle,
    start_udevd,
    stop_udevd,
)

from bwc_dock.logs import configure_logging  # noqa: E402
from bwc_dock.mounting import Mounter  # noqa: E402

VENDOR_ID = "b0c1"
PRODUCT_ID = f"{random.SystemRandom().randrange(0x1000, 0xF000):04x}"
TARGET_RATIO = 0.90
EVENT_TIMEOUT_SECONDS = 60.0
OFFLOAD_TIMEOUT_SECONDS = 600.0
BLKFLSBUF = 0x1261  # linux/fs.h: flush a block device's buffer cache


class CameraSpeed:
    """Camera reads at a USB camera's speed (tests/dock.py's blkio throttle), or unthrottled."""

    def __init__(self, megabytes_per_second: float) -> None:
        self.throttle: CameraReadThrottle | None = None
        if megabytes_per_second > 0:
            if not CameraReadThrottle.available():
                raise SystemExit("bench_docking: --camera-mbps needs the blkio cgroup (v1)")
            # joined before the daemon starts: it and its FUSE helpers are throttled too
            self.throttle = CameraReadThrottle(int(megabytes_per_second * 1e6))

    def slow_down(self, device: str) -> None:
        if self.throttle is not None:
            self.throttle.throttle(device)

    def close(self) -> None:
        if self.throttle is not None:
            self.throttle.close()


@dataclass
class Result:
    fs_type: str
    serial: str
    files: int
    mebibytes: float
    udev_to_docked_s: float
    udev_to_first_copy_s: float
    daemon_mb_per_s: float
    cat_mb_per_s: float

    @property
    def ratio(self) -> float:
        return self.daemon_mb_per_s / self.cat_mb_per_s


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


def wait_event(path: Path, name: str, timeout: float, **fields: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in log_events(path) if e.get("event") == name
                 and all(e.get(key) == value for key, value in fields.items())]
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {name} {fields} within {timeout:.0f}s; see {path}")
        time.sleep(0.02)


def epoch(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def drop_caches(camera: LoopCamera) -> None:
    """Cold reads: drop the image's pages and the loop device's buffer cache."""
    subprocess.run(["sync"], check=True)
    with open(camera.image, "rb") as image:
        os.posix_fadvise(image.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if camera.device is not None:
        with open(camera.device, "rb") as device:
            fcntl.ioctl(device.fileno(), BLKFLSBUF)


def camera_files(camera: LoopCamera) -> list[str]:
    return [name for name in camera.files if name.startswith("DCIM/")]


def camera_bytes(camera: LoopCamera) -> int:
    tree = camera.image.parent / "tree"
    return sum((tree / name).stat().st_size for name in camera_files(camera))


def offload(camera: LoopCamera, bay: CameraBay, log: Path,
            speed: CameraSpeed) -> tuple[float, float, float]:
    """Dock the camera; (s to dock.docked, s to first clip.copying, daemon MB/s)."""
    drop_caches(camera)
    started = time.time()
    bay.attach(camera)
    assert camera.device is not None
    speed.slow_down(camera.device)  # udev and the daemon's settle time take longer than this
    serial = camera.serial
    docked = wait_event(log, "dock.docked", EVENT_TIMEOUT_SECONDS, camera=serial)[0]
    first = wait_event(log, "clip.copying", EVENT_TIMEOUT_SECONDS, camera=serial)[0]
    wait_event(log, "dock.released", OFFLOAD_TIMEOUT_SECONDS, camera=serial)
    events = log_events(log)
    staged = [epoch(e) for e in events if e.get("event") == "clip.staged"
              and e.get("camera") == serial]
    failures = [e for e in events if e.get("camera") == serial
                and e.get("level") in ("error", "critical")]
    if failures or len(staged) * 3 != len(camera_files(camera)):
        raise RuntimeError(f"offload of {serial} incomplete: {failures or staged}; see {log}")
    seconds = max(staged) - epoch(first)
    return epoch(docked) - started, epoch(first) - started, camera_bytes(camera) / 1e6 / seconds


def cat_throughput(camera: LoopCamera, mount_dir: Path) -> float:
    """MB/s of cat reading the camera's files from a mount made as the daemon makes it."""
    assert camera.device is not None and camera.fs_type is not None
    drop_caches(camera)
    mounted = Mounter(mount_dir).mount(camera.device, camera.fs_type, Path(camera.device).name, ())
    try:
        paths = [str(mounted.mount_point / name) for name in camera_files(camera)]
        started = time.monotonic()
        subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)
        seconds = time.monotonic() - started
    finally:
        Mounter(mount_dir).unmount(mounted)
    return camera_bytes(camera) / 1e6 / seconds


def configure(dock: Dock) -> None:
    dock.write_config(
        dock={"copy_workers": 2, "upload_workers": 2},
        sources={"udev": True, "watch_dirs": [], "rescan_interval_seconds": 60},
        camera=[{"name": "bench", "usb_vendor_id": VENDOR_ID, "usb_product_id": PRODUCT_ID}],
        logging={"level": "info"},
    )


def run_benchmark(arguments: argparse.Namespace, root: Path) -> list[Result]:
    udevd = start_udevd()
    speed = CameraSpeed(arguments.camera_mbps)
    bay = CameraBay(root, ClipSource(root), udevd)
    dock = Dock(root / "dock")
    configure(dock)
    log = dock.root / "daemon.log"
    daemon: subprocess.Popen[bytes] | None = None
    results = []
    try:
        cameras = [
            bay.make_camera(fs_type, serial=f"BENCH{number}", vendor_id=VENDOR_ID,
                            product_id=PRODUCT_ID, clip_count=arguments.clips,
                            padding=arguments.clip_mb * 1024 * 1024)
            for number, fs_type in enumerate(arguments.filesystems, start=1)
        ]
        settle()
        daemon = dock.start_daemon(log)
        wait_event(log, "udev.started", EVENT_TIMEOUT_SECONDS)
        for camera in cameras:
            to_docked, to_copy, daemon_rate = offload(camera, bay, log, speed)
            cat_rate = cat_throughput(camera, root / "cat-mounts")
            bay.detach(camera)
            bay.wait_detached(camera)
            results.append(Result(
                camera.fs_type, str(camera.serial), len(camera_files(camera)),
                round(camera_bytes(camera) / 2**20, 1), round(to_docked, 3), round(to_copy, 3),
                round(daemon_rate, 1), round(cat_rate, 1),
            ))
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        bay.cleanup([root])
        speed.close()
        stop_udevd(udevd)
    return results


def print_table(results: list[Result]) -> None:
    header = ("fs", "camera", "files", "MiB", "udev->docked s", "udev->1st copy s",
              "daemon MB/s", "cat MB/s", "daemon/cat")
    rows = [(r.fs_type, r.serial, str(r.files), f"{r.mebibytes:.1f}", f"{r.udev_to_docked_s:.3f}",
             f"{r.udev_to_first_copy_s:.3f}", f"{r.daemon_mb_per_s:.1f}",
             f"{r.cat_mb_per_s:.1f}", f"{r.ratio:.2f}") for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    met = bool(results) and all(r.ratio >= TARGET_RATIO for r in results)
    print(f"target: daemon within 10% of cat -> {'met' if met else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="clips per camera (default 4)")
    parser.add_argument("--clip-mb", type=int, default=64, help="MiB per clip (default 64)")
    parser.add_argument("--filesystems", nargs="+", default=["exfat", "vfat"],
                        choices=["exfat", "vfat"], help="one camera per entry")
    parser.add_argument("--camera-mbps", type=float, default=0,
                        help="throttle camera reads to this many MB/s, like a USB camera "
                             "(default 0: as fast as the loop device goes)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_docking: needs root (udevd, loop devices, mounts)", file=sys.stderr)
        return 2
    configure_logging(level="warning")  # cat's own mounts: only trouble is worth a line
    root = Path(tempfile.mkdtemp(prefix="bwc-bench-docking-"))
    try:
        results = run_benchmark(arguments, root)
    finally:
        if arguments.keep:
            print(f"work folder kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if arguments.json:
        print(json.dumps([{**asdict(r), "ratio": round(r.ratio, 3)} for r in results], indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
