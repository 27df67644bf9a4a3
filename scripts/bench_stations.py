#!/usr/bin/env python3
"""Station benchmark: cameras docked at once, each read at a USB camera's speed, and the
daemon's CPU per MB of evidence against the floor of what it must do with each byte.

Real parts only: ``bwc-dock run`` as a subprocess (SQLite ledger, staging on this
machine's disk, a folder store or the SeaweedFS fixture as central storage), camera
images on loop devices in RAM, and the blkio cgroup throttle the docking tests use:
reads from each camera's loop device slowed to --camera-mbps (40 MB/s by default), for
the daemon and cat alike. Two kinds of camera (--source):

  kernel  ext4 images the kernel mounts (read-only), handed to the daemon as watch
          folders: reads cost what a camera's kernel filesystem costs (the page cache,
          one copy to user space), so the ratio to cat measures bwc-dock. (This kernel
          has no FAT or exFAT driver; ext4 stands in for it.)
  fuse    exFAT and FAT32 images found by udev and mounted by the daemon itself through
          the FUSE helpers (exfat-fuse, fusefat): the real docking path, where every
          read also costs the FUSE helper's CPU and a copy more.

For each store (--stores) and number of cameras (--cameras, default 1, 4 and 8):

1. Every camera is docked one right after the other; the daemon (one copier per bay)
   offloads and uploads them all at once. A camera's rate is its bytes over the time
   from its first ``clip.copying`` to its last ``clip.staged``. The daemon's own
   threads' CPU (``/proc/PID/stat``) is counted from the first docking, once the daemon
   has settled after its start, until every clip is ``uploaded``: read off the camera,
   hashed, staged, verified, stored and proven.
2. One ``cat`` per camera reads its files to /dev/null, all at once, cold, through the
   same throttle: the camera link's own speed. Target: every camera's daemon rate >=
   0.9 of its concurrent cat rate.
3. The floor, measured in the same run just before each offload: ``openssl dgst
   -sha256``'s CPU per MB times the hashed passes the configuration makes (counted from
   the code, below, and from the daemon's own ``copy.done`` events), plus ``cat``'s CPU
   per MB for each copy (a read and a write) and each further read. Target: the daemon's
   own threads within 1.3x of it.

With --before-src CHECKOUT every configuration also runs the daemon from another
checkout's src/ (on PYTHONPATH), alternately with this one (before, after, before, ...),
and the report gives each one's CPU per MB and the ratio after/before.

Needs root; run it under the real-parts lock:

    flock -o /tmp/bwc-realparts.lock .venv/bin/python scripts/bench_stations.py \\
        [--cameras 1,4,8] [--stores folder,s3] [--source kernel|fuse] [--clips 4] \\
        [--clip-mb 64] [--camera-mbps 40] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import bench_docking as docking  # noqa: E402  (puts the repository and src/ on the path)
from tests.dock import Dock  # noqa: E402
from tests.seaweedfs import SeaweedServer  # noqa: E402
from tests.udevharness import (  # noqa: E402
    CameraBay,
    ClipSource,
    LoopCamera,
    populate_tree,
    settle,
    start_udevd,
    stop_udevd,
)

from bwc_dock.logs import configure_logging  # noqa: E402
from bwc_dock.mounting import MountedVolume, Mounter  # noqa: E402

TARGET_RATIO = 0.90
TARGET_FLOOR = 1.30
OFFLOAD_TIMEOUT_SECONDS = 1800.0
# An offload that kept the CPUs this busy was bound by CPU, not by the camera link (the
# rest is iowait and the moments between clips).
SATURATED_BUSY = 0.85
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FLOOR_PROBE_MIB = 256
FLOOR_PROBE_ROUNDS = 3
# the S3 store's default multipart threshold (settings.py): larger clips go by parts
S3_MULTIPART_THRESHOLD = 64 * 1024 * 1024


class CpuMeter:
    """CPU time over a phase: every CPU's (``/proc/stat``) and one process's threads."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.first = self._system()
        self.first_process = self._process()

    @staticmethod
    def _system() -> tuple[int, int]:
        """(busy, all) ticks of every CPU; idle and iowait are not busy."""
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def _process(self) -> int:
        if self.pid is None:
            return 0
        # utime and stime, fields 14 and 15; the name (field 2) may hold spaces
        after_name = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(after_name[11]) + int(after_name[12])

    def stop(self, megabytes: float) -> dict[str, float]:
        busy, total = (b - a for a, b in zip(self.first, self._system(), strict=True))
        process = self._process() - self.first_process
        return {
            "seconds": round(time.monotonic() - self.started, 2),
            "cpus_busy": round(busy / total, 3) if total else 0.0,
            "cpu_ms_per_mb": round(busy / CLOCK_TICKS * 1000 / megabytes, 2),
            "daemon_cpu_ms_per_mb": round(process / CLOCK_TICKS * 1000 / megabytes, 2),
        }


def wait_settled(pid: int, timeout: float = 60.0) -> None:
    """Until the daemon's start-up work is done (its fleet key, the store's probe, the
    first status): a one-off cost of starting, not of any megabyte. Settled: under 20 ms
    of CPU in each of two half seconds in a row."""
    quiet, deadline, before = 0, time.monotonic() + timeout, CpuMeter(pid)
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = CpuMeter(pid)
        ticks = now.first_process - before.first_process
        quiet = quiet + 1 if ticks < 0.02 * CLOCK_TICKS else 0
        before = now


# -- the floor ------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """CPU ms per MB of the command-line tools, medians of the same run."""

    sha256: float  # openssl dgst -sha256 of a cached file
    copy: float  # cat of a cached file into a new file on the staging disk, fsynced
    read: float  # cat of a cached file to /dev/null
    send: float  # cat of a cached file into a TCP connection on loopback


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tool_ms_per_mb(command: str, megabytes: float) -> float:
    before = _children_cpu()
    subprocess.run(["sh", "-c", command], check=True)
    return (_children_cpu() - before) * 1000 / megabytes


def _send_ms_per_mb(source: Path, megabytes: float) -> float:
    """cat's CPU writing a file into a TCP connection on loopback (a thread here reads it)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        receiver, _address = server.accept()

        def drain() -> None:
            while receiver.recv(1024 * 1024):
                pass

        reader = threading.Thread(target=drain)
        reader.start()
        before = _children_cpu()
        with sender:
            subprocess.run(["cat", str(source)], stdout=sender.fileno(), check=True)
        spent = _children_cpu() - before
        reader.join()
        receiver.close()
    return spent * 1000 / megabytes


def probe_tools(source_dir: Path, disk_dir: Path) -> Probe:
    """openssl and cat on a file in RAM, the copy written to the staging disk."""
    source = source_dir / "floor-probe.bin"
    target = disk_dir / "floor-probe.copy"
    with source.open("wb") as output:
        for _ in range(FLOOR_PROBE_MIB):
            output.write(os.urandom(1024 * 1024))
    megabytes = FLOOR_PROBE_MIB * 1024 * 1024 / 1e6
    rounds: dict[str, list[float]] = {"sha256": [], "copy": [], "read": [], "send": []}
    try:
        for _ in range(FLOOR_PROBE_ROUNDS):  # interleaved: the load is the same for all
            rounds["sha256"].append(
                _tool_ms_per_mb(f"openssl dgst -sha256 '{source}' >/dev/null", megabytes))
            rounds["copy"].append(_tool_ms_per_mb(
                f"cat '{source}' >'{target}' && sync -d '{target}'", megabytes))
            rounds["read"].append(_tool_ms_per_mb(f"cat '{source}' >/dev/null", megabytes))
            rounds["send"].append(_send_ms_per_mb(source, megabytes))
    finally:
        source.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
    return Probe(*(round(statistics.median(rounds[name]), 3)
                   for name in ("sha256", "copy", "read", "send")))


@dataclass(frozen=True)
class Passes:
    """What the daemon must do with each byte of a clip: hashed passes, copies (a read
    and a write) and further reads, averaged over the clips of the run; and sends over the network."""

    hashed: float
    copies: float
    reads: float
    sends: float = 0

    def floor(self, probe: Probe) -> float:
        return (self.hashed * probe.sha256 + self.copies * probe.copy + self.reads * probe.read
                + self.sends * probe.send)


def passes_of(store: str, verified_by_copier: float, multipart: float) -> Passes:
    """The passes per byte that prove something, counted from the code.

    Every store: the camera read, hashed (copier.py, pass 1), is a copy into staging;
    the copier's re-read of the staged copy from disk (pass 2) is a hashed read unless
    the clip was handed to a waiting uploader (handoff.py: its upload then proves it),
    ``verified_by_copier`` being the share of clips the copier re-read.
    folder: the upload is a copy to the share, unhashed, and the share's copy is read
    back and hashed before it is named (storage/filesystem.py): one copy, one hashed read.
    s3: the upload reads the staged copy once and hashes it (the digest is the request's
    x-amz-checksum-sha256 too, for a single PUT). A clip sent by parts needs each part's
    SHA-256 besides the whole's: taken in the read off the camera (one more hashed pass
    there, none in the upload), or, where they were not, hashed by the upload with the
    whole (``multipart`` is the share of bytes sent that way): the store checks each
    part, and its composite of those checksums is the proof it holds the bytes. The bytes
    go out once over a TCP connection (a send, costed as cat's into a loopback
    connection: the store here is on loopback).
    """
    if store == "folder":
        return Passes(hashed=2 + verified_by_copier, copies=2, reads=verified_by_copier + 1)
    return Passes(hashed=2 + verified_by_copier + multipart, copies=1,
                  reads=verified_by_copier + 1, sends=1)


# -- cameras ------------------------------------------------------------------------------


class KernelCameras:
    """ext4 camera images on throttled loop devices, mounted read-only by the kernel and
    handed to the daemon as watch folders."""

    def __init__(self, bay_root: Path, stage: Path, speed: docking.CameraSpeed) -> None:
        self.bay_root = bay_root
        self.stage = stage  # mounted here first, then moved into the watch folder at once
        self.speed = speed
        self.clips = ClipSource(bay_root)
        self.cameras: list[LoopCamera] = []
        self.mounts: list[Path] = []

    def make(self, serial: str, clips: int, padding: int) -> LoopCamera:
        folder = self.bay_root / serial
        tree = folder / "tree"
        tree.mkdir(parents=True)
        files = populate_tree(tree, self.clips, clips, padding)
        image = folder / "camera.img"
        megabytes = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) // 10**6
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", serial[-16:], "-d", str(tree),
                        str(image), f"{megabytes * 11 // 10 + 32}M"], check=True,
                       stdout=subprocess.DEVNULL)
        device = subprocess.run(["losetup", "--find", "--show", "--read-only", str(image)],
                                check=True, capture_output=True, text=True).stdout.strip()
        camera = LoopCamera(image, "ext4", docking.VENDOR_ID, docking.PRODUCT_ID, serial,
                            serial, files, device)
        self.cameras.append(camera)
        self.speed.slow_down(device)
        card = self.stage / serial / "card"
        card.mkdir(parents=True)
        subprocess.run(["mount", "-t", "ext4", "-o", "ro,noload,nosuid,nodev,noexec",
                        device, str(card)], check=True)
        self.mounts.append(card)
        return camera

    def files_of(self, camera: LoopCamera, watch: Path) -> list[Path]:
        return [watch / str(camera.serial) / "card" / name for name in
                docking.camera_files(camera)]

    def drop_caches(self, watch: Path) -> None:
        """Cold reads: the files' pages and each loop device's buffer cache."""
        for camera in self.cameras:
            for path in [*self.files_of(camera, watch), *self.files_of(camera, self.stage)]:
                if path.exists():
                    with path.open("rb") as file:
                        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            docking.drop_caches(camera)

    def dock_all(self, watch: Path) -> None:
        """Every camera into the watch folder, one right after the other (a rename each)."""
        for camera in self.cameras:
            (self.stage / str(camera.serial)).rename(watch / str(camera.serial))
        self.mounts = [watch / str(camera.serial) / "card" for camera in self.cameras]

    def close(self) -> None:
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        for camera in self.cameras:
            if camera.device:
                subprocess.run(["losetup", "-d", camera.device], check=False)


def concurrent_cat(files: dict[str, list[Path]], megabytes: float,
                   sizes: dict[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    """MB/s of one cat per camera, all started together; and the CPU the cats took."""
    started = time.monotonic()
    cpu = CpuMeter()
    children = _children_cpu()
    running = {serial: subprocess.Popen(["cat", *map(str, paths)], stdout=subprocess.DEVNULL)
               for serial, paths in files.items()}
    rates = {}
    for serial, process in running.items():
        if process.wait() != 0:
            raise RuntimeError(f"cat of {serial} failed")
        rates[serial] = sizes[serial] / 1e6 / (time.monotonic() - started)
    # the cats' own CPU, as the daemon's is its own: the machine is shared
    return rates, {**cpu.stop(megabytes),
                   "cat_cpu_ms_per_mb": round((_children_cpu() - children) * 1000 / megabytes, 2)}


def fuse_cat(cameras: list[LoopCamera], mount_dir: Path) -> tuple[dict[str, float],
                                                                   dict[str, float]]:
    """cat per camera on mounts made as the daemon's (FUSE), cold."""
    mounter = Mounter(mount_dir)
    mounted: list[tuple[LoopCamera, MountedVolume]] = []
    try:
        for camera in cameras:
            assert camera.device is not None and camera.fs_type is not None
            mounted.append((camera, mounter.mount(camera.device, camera.fs_type,
                                                  Path(camera.device).name, ())))
        for camera, _volume in mounted:
            docking.drop_caches(camera)
        return concurrent_cat(
            {str(c.serial): [v.mount_point / n for n in docking.camera_files(c)]
             for c, v in mounted},
            megabytes_of(cameras), {str(c.serial): docking.camera_bytes(c) for c in cameras})
    finally:
        for _camera, volume in mounted:
            mounter.unmount(volume)


# -- the daemon ---------------------------------------------------------------------------


def configure(dock: Dock, cameras: int, store: dict[str, Any], source: str) -> None:
    sources = ({"udev": False, "watch_dirs": [str(dock.watch_dir)],
                "rescan_interval_seconds": 60} if source == "kernel" else
               {"udev": True, "watch_dirs": [], "rescan_interval_seconds": 60})
    dock.write_config(
        dock={"copy_workers": cameras, "upload_workers": 2},
        storage=store, sources=sources,
        camera=[{"name": "bench", "usb_vendor_id": docking.VENDOR_ID,
                 "usb_product_id": docking.PRODUCT_ID}],
        logging={"level": "info"},
    )


def daemon_rates(cameras: list[LoopCamera], events: list[dict[str, Any]]) -> dict[str, float]:
    """MB/s of each camera's offload, from the daemon's own events."""
    rates = {}
    for camera in cameras:
        serial = str(camera.serial)
        mine = [e for e in events if e.get("camera") == serial]
        copying = [docking.epoch(e) for e in mine if e.get("event") == "clip.copying"]
        staged = [docking.epoch(e) for e in mine if e.get("event") == "clip.staged"]
        failures = [e for e in mine if e.get("level") in ("error", "critical")]
        if failures or len(staged) * 3 != len(docking.camera_files(camera)):
            raise RuntimeError(f"offload of {serial} incomplete: {failures or staged}")
        rates[serial] = docking.camera_bytes(camera) / 1e6 / (max(staged) - min(copying))
    return rates


def wait_uploaded(log: Path, clips: int, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + OFFLOAD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        events = docking.log_events(log)
        if sum(1 for e in events if e.get("event") == "upload.done") >= clips:
            return
        alarms = [e for e in events if e.get("event") == "alarm.raised"]
        if alarms:
            raise RuntimeError(f"the daemon raised an alarm: {alarms[0]}; see {log}")
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited {daemon.returncode}; see {log}")
        time.sleep(0.2)
    raise RuntimeError(f"not every clip uploaded within {OFFLOAD_TIMEOUT_SECONDS} s; see {log}")


def megabytes_of(cameras: list[LoopCamera]) -> float:
    return sum(docking.camera_bytes(camera) for camera in cameras) / 1e6


def stop_daemon(daemon: subprocess.Popen[bytes] | None) -> None:
    if daemon is not None and daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()


def clip_shares(events: list[dict[str, Any]], cameras: list[LoopCamera]) -> tuple[float, float]:
    """(share of clips the copier itself re-read, share of bytes sent by parts that the
    upload hashed: those whose parts were not hashed in the read off the camera, as an
    S3 upload's ``s3.put.verified`` event says; a daemon that does not say hashed all)."""
    done = [e for e in events if e.get("event") == "copy.done"]
    by_copier = sum(1 for e in done if e.get("verified_by") == "copier") / max(1, len(done))
    total = sum(int(e.get("size") or 0) for e in done)
    verified = [e for e in events if e.get("event") == "s3.put.verified"]
    hashed_by_parts = sum(int(e.get("size") or 0) for e in verified
                          if int(e.get("size") or 0) >= S3_MULTIPART_THRESHOLD
                          and e.get("hashed_here", True))
    return by_copier, hashed_by_parts / max(1, total)


def run_kernel(arguments: argparse.Namespace, count: int, root: Path, bay_root: Path,
               store: dict[str, Any], speed: docking.CameraSpeed) -> dict[str, Any]:
    dock = Dock(root / "dock")
    configure(dock, count, store, "kernel")
    log = dock.root / "daemon.log"
    cameras_here = KernelCameras(bay_root, root / "stage", speed)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        cameras = [cameras_here.make(f"STATION{n}", arguments.clips,
                                     arguments.clip_mb * 1024 * 1024)
                   for n in range(1, count + 1)]
        daemon = dock.start_daemon(log)
        docking.wait_event(log, "daemon.started", docking.EVENT_TIMEOUT_SECONDS)
        wait_settled(daemon.pid)
        cameras_here.drop_caches(dock.watch_dir)
        meter = CpuMeter(daemon.pid)
        cameras_here.dock_all(dock.watch_dir)
        wait_uploaded(log, count * arguments.clips, daemon)
        offload = meter.stop(megabytes_of(cameras))
        events = docking.log_events(log)
        stop_daemon(daemon)
        cameras_here.drop_caches(dock.watch_dir)
        cat_rate, cat = concurrent_cat(
            {str(c.serial): cameras_here.files_of(c, dock.watch_dir) for c in cameras},
            megabytes_of(cameras), {str(c.serial): docking.camera_bytes(c) for c in cameras})
    finally:
        stop_daemon(daemon)
        cameras_here.close()
    return summary(cameras, events, offload, cat_rate, cat)


def run_fuse(arguments: argparse.Namespace, count: int, root: Path, bay_root: Path,
             store: dict[str, Any], speed: docking.CameraSpeed) -> dict[str, Any]:
    udevd = start_udevd()
    bay = CameraBay(bay_root, ClipSource(bay_root), udevd)
    dock = Dock(root / "dock")
    configure(dock, count, store, "fuse")
    log = dock.root / "daemon.log"
    daemon: subprocess.Popen[bytes] | None = None
    try:
        cameras = [
            bay.make_camera(("exfat", "vfat")[number % 2], serial=f"STATION{number}",
                            vendor_id=docking.VENDOR_ID, product_id=docking.PRODUCT_ID,
                            clip_count=arguments.clips,
                            padding=arguments.clip_mb * 1024 * 1024)
            for number in range(1, count + 1)
        ]
        settle()
        daemon = dock.start_daemon(log)
        docking.wait_event(log, "udev.started", docking.EVENT_TIMEOUT_SECONDS)
        wait_settled(daemon.pid)
        for camera in cameras:
            docking.drop_caches(camera)
        meter = CpuMeter(daemon.pid)
        for camera in cameras:  # docked together: a station's bays at the end of a shift
            bay.attach(camera)
            assert camera.device is not None
            speed.slow_down(camera.device)
        for camera in cameras:
            docking.wait_event(log, "dock.released", OFFLOAD_TIMEOUT_SECONDS,
                               camera=str(camera.serial))
        wait_uploaded(log, count * arguments.clips, daemon)
        offload = meter.stop(megabytes_of(cameras))
        events = docking.log_events(log)
        cat_rate, cat = fuse_cat(cameras, root / "cat-mounts")
    finally:
        stop_daemon(daemon)
        bay.cleanup([root, bay_root])
        stop_udevd(udevd)
    return summary(cameras, events, offload, cat_rate, cat)


def summary(cameras: list[LoopCamera], events: list[dict[str, Any]], offload: dict[str, float],
            cat_rate: dict[str, float], cat: dict[str, float]) -> dict[str, Any]:
    daemon_rate = daemon_rates(cameras, events)
    by_copier, multipart = clip_shares(events, cameras)
    rows = {
        serial: {"daemon_mb_per_s": round(daemon_rate[serial], 1),
                 "cat_mb_per_s": round(cat_rate[serial], 1),
                 "ratio": round(daemon_rate[serial] / cat_rate[serial], 3)}
        for serial in daemon_rate
    }
    return {"rows": rows, "cpu": {"offload": offload, "cat": cat},
            "verified_by_copier": round(by_copier, 3), "parts_hashed_by_upload": round(multipart, 3)}


def run_one(arguments: argparse.Namespace, store_name: str, count: int,
            server: SeaweedServer | None, speed: docking.CameraSpeed,
            source_tree: str | None = None) -> dict[str, Any]:
    """One configuration; with ``source_tree`` the daemon runs from that checkout."""
    saved = os.environ.get("PYTHONPATH")
    if source_tree is not None:
        os.environ["PYTHONPATH"] = str(Path(source_tree).resolve() / "src")
    try:
        return _run_one(arguments, store_name, count, server, speed)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _run_one(arguments: argparse.Namespace, store_name: str, count: int,
             server: SeaweedServer | None, speed: docking.CameraSpeed) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bwc-bench-stations-"))
    bay_root = Path(tempfile.mkdtemp(prefix="bwc-bench-stations-", dir=arguments.cameras_in))
    try:
        probe = probe_tools(bay_root, root)  # the floor's tools, just before the offload
        load = os.getloadavg()[0]
        if server is not None:
            store = {"backend": "s3", "endpoint_url": server.endpoint_url,
                     "allow_plaintext": True, "bucket": server.create_bucket(),
                     "addressing_style": "path"}
        else:
            store = {"path": str(bay_root / "central")}  # a NAS is not the dock's own disk
            (bay_root / "central").mkdir()
            (bay_root / "central" / ".bwc-dock-store").touch()  # the share's marker
        run = run_kernel if arguments.source == "kernel" else run_fuse
        result = run(arguments, count, root, bay_root, store, speed)
    finally:
        if arguments.keep:
            print(f"work folder kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(bay_root, ignore_errors=True)
    passes = passes_of(store_name, result["verified_by_copier"], result["parts_hashed_by_upload"])
    floor = passes.floor(probe)
    daemon_ms = result["cpu"]["offload"]["daemon_cpu_ms_per_mb"]
    offload = result["cpu"]["offload"]
    return {
        "store": store_name, "cameras": count, "load_average_at_start": round(load, 2),
        **result,
        "probe_ms_per_mb": {"openssl_sha256": probe.sha256, "cat_copy": probe.copy,
                            "cat_read": probe.read, "cat_send": probe.send},
        "passes": {"hashed": round(passes.hashed, 2), "copies": passes.copies,
                   "reads": round(passes.reads, 2), "sends": passes.sends},
        "floor_ms_per_mb": round(floor, 2),
        "daemon_to_floor": round(daemon_ms / floor, 3),
        "cpu_bound": offload["cpus_busy"] >= SATURATED_BUSY,
        "camera_link_met": all(row["ratio"] >= TARGET_RATIO for row in result["rows"].values()),
        "floor_met": daemon_ms / floor <= TARGET_FLOOR,
    }


def four_core_estimate(report: dict[str, Any], camera_mbps: float) -> dict[str, float]:
    """What a dock with four CPUs would reach: the camera link, or four CPUs spent at this
    run's CPU per MB: the daemon's own threads and the reads' own cost (cat's), the
    machine's other load left out (other processes share this one)."""
    offload = report["cpu"]["offload"]
    cpus = 4
    per_mb = offload["daemon_cpu_ms_per_mb"] + report["cpu"]["cat"]["cat_cpu_ms_per_mb"]
    per_camera_cpu_bound = cpus * 1000 / per_mb / report["cameras"]
    return {"cpus": cpus, "mb_per_s_per_camera": round(min(camera_mbps, per_camera_cpu_bound), 1),
            "daemon_cpu_ms_per_mb": offload["daemon_cpu_ms_per_mb"]}


def print_report(report: dict[str, Any]) -> None:
    print(f"station: {report['source']} cameras, {report['clips_per_camera']} x "
          f"{report['clip_mib']} MiB each, reads throttled to {report['camera_mbps']} MB/s per"
          f" camera, {os.cpu_count()} CPUs")
    print(f"{'daemon':<7}{'store':<7}{'cams':>5}{'load':>6}{'min ratio':>10}{'MB/s/cam':>9}{'busy':>6}"
          f"{'daemon ms/MB':>13}{'floor':>7}{'x floor':>8}  passes (hashed/copies/reads/"
          "sends), openssl/cat-copy/cat-read/cat-send ms/MB")
    for run in report["runs"]:
        rows = run["rows"].values()
        offload = run["cpu"]["offload"]
        passes, probe = run["passes"], run["probe_ms_per_mb"]
        print(f"{run['daemon']:<7}{run['store']:<7}{run['cameras']:>5}{run['load_average_at_start']:>6}"
              f"{min(r['ratio'] for r in rows):>10.3f}"
              f"{statistics.median(r['daemon_mb_per_s'] for r in rows):>9.1f}"
              f"{offload['cpus_busy']:>6.0%}{offload['daemon_cpu_ms_per_mb']:>13}"
              f"{run['floor_ms_per_mb']:>7}{run['daemon_to_floor']:>8}  "
              f"{passes['hashed']}/{passes['copies']}/{passes['reads']}/{passes['sends']}, "
              f"{probe['openssl_sha256']}/{probe['cat_copy']}/{probe['cat_read']}/"
              f"{probe['cat_send']}")
        if run["cpu_bound"] and not run["camera_link_met"]:
            estimate = run["four_cpu_estimate"]
            print(f"{'':<12}CPU-bound: the daemon's threads took "
                  f"{estimate['daemon_cpu_ms_per_mb']} ms per MB; a "
                  f"{estimate['cpus']}-CPU dock would reach ~{estimate['mb_per_s_per_camera']}"
                  f" MB/s per camera")
    befores = {(r["store"], r["cameras"]): r for r in report["runs"] if r["daemon"] == "before"}
    for run in report["runs"]:
        before = befores.get((run["store"], run["cameras"]))
        if run["daemon"] == "this" and before is not None:
            this_ms = run["cpu"]["offload"]["daemon_cpu_ms_per_mb"]
            before_ms = before["cpu"]["offload"]["daemon_cpu_ms_per_mb"]
            print(f"{run['store']}, {run['cameras']} cameras: the daemon's CPU per MB "
                  f"{before_ms} before, {this_ms} now: x{this_ms / before_ms:.3f}")
    print(f"targets: every camera >= {TARGET_RATIO} of its concurrent cat -> "
          f"{'met' if report['camera_link_met'] else 'MISSED'}; the daemon's threads <= "
          f"{TARGET_FLOOR}x the floor -> {'met' if report['floor_met'] else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", default="1,4,8", help="numbers of cameras, e.g. 1,4,8")
    parser.add_argument("--stores", default="folder,s3", help="folder, s3 or both")
    parser.add_argument("--source", choices=("kernel", "fuse"), default="kernel")
    parser.add_argument("--clips", type=int, default=4, help="clips per camera")
    parser.add_argument("--clip-mb", type=int, default=64, help="MiB per clip")
    parser.add_argument("--camera-mbps", type=float, default=40.0,
                        help="camera read speed, MB/s (a blkio throttle per loop device)")
    parser.add_argument(
        "--cameras-in", default="/dev/shm",
        help="folder for the camera images (default: RAM, so each camera is its own "
             "throttled device, as a USB camera is, not a share of the staging disk)")
    parser.add_argument("--before-src", default=None, metavar="CHECKOUT",
                        help="also run each configuration with the daemon from CHECKOUT/src")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_stations: needs root (loop devices, mounts)", file=sys.stderr)
        return 2
    configure_logging(level="warning")
    counts = [int(n) for n in arguments.cameras.split(",")]
    stores = [s.strip() for s in arguments.stores.split(",")]
    speed = docking.CameraSpeed(arguments.camera_mbps)
    server: SeaweedServer | None = None
    runs = []
    try:
        if "s3" in stores:
            server = SeaweedServer(Path(tempfile.mkdtemp(prefix="bwc-bench-weed-")))
            server.directory.mkdir(exist_ok=True)
            server.start()
            os.environ.update(server.environment())  # the daemon's and this process's
        for store in stores:
            for count in counts:
                store_server = server if store == "s3" else None
                if arguments.before_src:
                    before = run_one(arguments, store, count, store_server, speed,
                                     arguments.before_src)
                    runs.append({**before, "daemon": "before"})
                runs.append({**run_one(arguments, store, count, store_server, speed),
                             "daemon": "this"})
                print(f"({store}, {count} cameras done)", file=sys.stderr, flush=True)
    finally:
        speed.close()
        if server is not None:
            server.stop()
            shutil.rmtree(server.directory, ignore_errors=True)
    for run in runs:
        run["four_cpu_estimate"] = four_core_estimate(run, arguments.camera_mbps)
    report = {"source": arguments.source, "clips_per_camera": arguments.clips,
              "clip_mib": arguments.clip_mb, "camera_mbps": arguments.camera_mbps,
              "target_ratio": TARGET_RATIO, "target_floor": TARGET_FLOOR, "runs": runs,
              "camera_link_met": all(r["camera_link_met"] for r in runs if r["daemon"] == "this"),
              "floor_met": all(r["floor_met"] for r in runs if r["daemon"] == "this")}
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["camera_link_met"] and report["floor_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
