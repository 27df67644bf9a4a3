#!/usr/bin/env python3
"""End-to-end benchmark: camera folder to central storage, against cp + sha256sum.

Data: --count clips of --size MiB of random bytes (8 x 256 MiB by default) in a camera
folder, read from the page cache (the folder is read once before every measurement).
The ledger, staging and the folder backend's central storage all sit on the same disk
as the source, in a temporary folder. Each rep, in this order, fresh state each time:

  cp -r + sha256sum   ``sh -c 'cp -r SRC DST && sha256sum DST/.../*'``: the baseline
  ingest --wait       ``bwc-dock ingest SRC --camera-serial CAM --wait`` (subprocess, no
                      daemon): copy, verify, upload, verify in storage, all by hand
  daemon              ``bwc-dock run`` with a watch folder; the clock starts when the
                      camera folder is moved in (docked) and stops when the ledger says
                      the last clip is ``uploaded`` (polled read-only every 50 ms)

and the median of --reps runs is reported with the ratio to the baseline (the median of
each rep's ratio: a rep's methods see much the same load from elsewhere), whose target
is <= 1.0. The baseline writes once and never fsyncs; bwc-dock writes
twice (staging, central storage), fsyncs both and hashes two or three times (the staged
copy is read back before the upload unless an uploader was waiting for it: docs/design.md,
"What each read of a clip's bytes proves").

Each method's column "disk GiB r/w" is what the disk holding --dir read and wrote while
it ran (/proc/diskstats, median): the staging disk's share of the work (docs/design.md,
"What each read of a clip's bytes proves").

With --before-src CHECKOUT the same two are also timed from another checkout's src/
(for before/after figures measured under the same load).

Usage: scripts/bench_e2e.py [--json] [--reps N] [--size MIB] [--count N] [--dir DIR]
                            [--before-src CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIB = 1024**2
TARGET_RATIO = 1.0
CAMERA = "BENCHCAM"
CLIP_FOLDER = Path("DCIM") / "100BWC"
BWC_DOCK = str(Path(sys.executable).with_name("bwc-dock"))
POLL_SECONDS = 0.05
TIMEOUT_SECONDS = 3600
METHODS = ("baseline", "ingest", "daemon")
LABELS = {
    "baseline": "cp -r + sha256sum",
    "ingest": "ingest --wait",
    "daemon": "daemon (docked)",
    "ingest_before": "ingest, --before-src",
    "daemon_before": "daemon, --before-src",
}


def make_source(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` clips of ``size`` random bytes under ``folder``/DCIM/100BWC."""
    clips = folder / CLIP_FOLDER
    clips.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        path = clips / f"VID_{number:04d}.MP4"
        with path.open("wb") as file:
            remaining = size
            while remaining:
                block = min(remaining, 8 * MIB)
                file.write(os.urandom(block))
                remaining -= block
        paths.append(path)
    return paths


def warm(folder: Path) -> None:
    """Read every file once, so each measurement starts from the page cache."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as file:
                while file.read(8 * MIB):
                    pass


def disk_bytes(folder: Path) -> tuple[int, int] | None:
    """(bytes read, bytes written) so far by the block device holding ``folder``, from
    /proc/diskstats; None where it is not a block device listed there (tmpfs, overlay)."""
    device = os.stat(folder).st_dev
    wanted = (str(os.major(device)), str(os.minor(device)))
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if (fields[0], fields[1]) == wanted:
                return int(fields[5]) * 512, int(fields[9]) * 512  # sectors are 512 B here
    return None


def settle() -> None:
    """Write back what the previous measurement left dirty, outside the clock."""
    os.sync()
    time.sleep(0.5)


def write_config(dock: Path, watch_dir: Path | None = None) -> Path:
    (dock / "nas").mkdir(parents=True, exist_ok=True)
    (dock / "nas" / ".bwc-dock-store").touch()  # the share's marker file
    watch = f'"{watch_dir}"' if watch_dir else ""
    config = dock / "config.toml"
    config.write_text(
        f'[dock]\nid = "bench"\nstate_dir = "{dock / "state"}"\nstaging_reserve_mb = 0\n'
        f'[storage]\nbackend = "file"\npath = "{dock / "nas"}"\n'
        f"[sources]\nudev = false\nwatch_dirs = [{watch}]\n"
    )
    return config


def measure_baseline(source: Path, scratch: Path) -> float:
    destination = scratch / "cp-copy"
    command = (
        f"cp -r '{source}' '{destination}' && sha256sum '{destination / CLIP_FOLDER}'/* >/dev/null"
    )
    started = time.perf_counter()
    subprocess.run(["sh", "-c", command], check=True, timeout=TIMEOUT_SECONDS)
    elapsed = time.perf_counter() - started
    shutil.rmtree(destination)
    return elapsed


def _environment(config: Path, source_tree: str | None) -> dict[str, str]:
    """bwc-dock's environment; ``source_tree``: run that checkout's src/ instead."""
    environment = {**os.environ, "BWC_DOCK_CONFIG": str(config)}
    if source_tree:
        environment["PYTHONPATH"] = str(Path(source_tree) / "src")
    return environment


def measure_ingest(source: Path, scratch: Path, source_tree: str | None = None) -> float:
    dock = scratch / "ingest-dock"
    config = write_config(dock)
    environment = _environment(config, source_tree)
    command = [BWC_DOCK, "ingest", str(source), "--camera-serial", CAMERA, "--wait"]
    started = time.perf_counter()
    subprocess.run(command, env=environment, check=True, capture_output=True,
                   timeout=TIMEOUT_SECONDS)
    elapsed = time.perf_counter() - started
    _check_uploaded(dock, len(_clips_of(source)))
    shutil.rmtree(dock)
    return elapsed


def measure_daemon(source: Path, scratch: Path, source_tree: str | None = None) -> float:
    """Dock the folder into a running daemon's watch folder; time until all uploaded."""
    dock = scratch / "daemon-dock"
    watch = dock / "watch"
    watch.mkdir(parents=True)
    config = write_config(dock, watch)
    environment = _environment(config, source_tree)
    daemon = subprocess.Popen([BWC_DOCK, "run"], env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    docked = watch / CAMERA
    try:
        _wait_for_daemon(dock / "state" / "ledger.sqlite3", daemon)
        wanted = len(_clips_of(source))
        started = time.perf_counter()
        source.rename(docked)  # docking: one rename, as a card reader's mount appears
        while _uploaded(dock) < wanted:
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited {daemon.returncode}")
            if time.perf_counter() - started > TIMEOUT_SECONDS:
                raise TimeoutError("the daemon did not upload every clip in time")
            time.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - started
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=120)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        if docked.exists():
            docked.rename(source)
    shutil.rmtree(dock)
    return elapsed


def _wait_for_daemon(ledger: Path, daemon: subprocess.Popen[bytes]) -> None:
    """The daemon is up once it has written its first heartbeat."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited {daemon.returncode} while starting")
        if ledger.exists() and _query(ledger, "SELECT count(*) FROM daemon_heartbeat") > 0:
            return
        time.sleep(0.1)
    raise TimeoutError("the daemon did not start")


def _uploaded(dock: Path) -> int:
    return _query(dock / "state" / "ledger.sqlite3",
                  "SELECT count(*) FROM clips WHERE camera_serial = ? AND state = 'uploaded'",
                  (CAMERA,))


def _query(ledger: Path, statement: str, parameters: tuple[Any, ...] = ()) -> int:
    try:
        connection = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
        try:
            row = connection.execute(statement, parameters).fetchone()
        finally:
            connection.close()
    except sqlite3.OperationalError:
        return 0  # not created (or not migrated) yet
    return int(row[0]) if row else 0


def _check_uploaded(dock: Path, wanted: int) -> None:
    uploaded = _uploaded(dock)
    if uploaded != wanted:
        raise RuntimeError(f"ingest --wait left {wanted - uploaded} clips not uploaded")


def _clips_of(source: Path) -> list[Path]:
    return sorted((source / CLIP_FOLDER).iterdir())


def run(arguments: argparse.Namespace) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="bench-e2e-", dir=arguments.dir))
    try:
        source = scratch / "camera"
        make_source(source, arguments.count, arguments.size * MIB)
        before = arguments.before_src
        measurers: dict[str, Callable[[Path, Path], float]] = {
            "baseline": measure_baseline,
            "ingest": measure_ingest,
            "daemon": measure_daemon,
            "ingest_before": lambda src, scratch: measure_ingest(src, scratch, before),
            "daemon_before": lambda src, scratch: measure_daemon(src, scratch, before),
        }
        methods = [*METHODS, *(("ingest_before", "daemon_before") if before else ())]
        samples: dict[str, list[float]] = {method: [] for method in methods}
        disk: dict[str, list[tuple[int, int]]] = {method: [] for method in methods}
        load = os.getloadavg()[0]
        for _rep in range(arguments.reps):
            for method in methods:
                settle()
                warm(source)
                disk_at_start = disk_bytes(scratch)
                samples[method].append(measurers[method](source, scratch))
                disk_at_end = disk_bytes(scratch)
                if disk_at_start is not None and disk_at_end is not None:
                    disk[method].append((disk_at_end[0] - disk_at_start[0],
                                         disk_at_end[1] - disk_at_start[1]))
        report = summarise(samples, arguments, load, disk)
        print_report(report, arguments.json)
        return 0 if report["met"] else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def summarise(samples: dict[str, list[float]], arguments: argparse.Namespace,
              load: float, disk: dict[str, list[tuple[int, int]]]) -> dict[str, Any]:
    total = arguments.count * arguments.size * MIB
    baseline = statistics.median(samples["baseline"])
    methods = {}
    for method, runs in samples.items():
        seconds = statistics.median(runs)
        # the ratio of each rep (the baseline ran just before, under much the same load
        # from elsewhere on the machine), then the median of those
        ratios = [run / reference for run, reference in zip(runs, samples["baseline"],
                                                            strict=True)]
        methods[method] = {"median_s": round(seconds, 2),
                           "runs_s": [round(s, 2) for s in runs],
                           "mb_per_s": round(total / 1e6 / seconds, 1),
                           "ratio": round(statistics.median(ratios), 2),
                           "ratio_of_medians": round(seconds / baseline, 2),
                           # what reached the disk while it ran: the baseline's copy is
                           # deleted before writeback, bwc-dock fsyncs what it writes
                           "disk_read_gib": _median_gib([r for r, _w in disk[method]]),
                           "disk_written_gib": _median_gib([w for _r, w in disk[method]])}
    return {"clips": arguments.count, "clip_mib": arguments.size, "reps": arguments.reps,
            "load_average_at_start": round(load, 2), "target": TARGET_RATIO,
            "methods": methods,
            "met": all(methods[m]["ratio"] <= TARGET_RATIO for m in ("ingest", "daemon"))}


def _median_gib(counts: list[int]) -> float | None:
    return round(statistics.median(counts) / 1024**3, 2) if counts else None


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(f"end to end: {report['clips']} x {report['clip_mib']} MiB, median of "
          f"{report['reps']}; load average at start {report['load_average_at_start']}; "
          f"target <= {report['target']}x of cp -r + sha256sum")
    print(f"{'method':<20}{'median s':>10}{'MB/s':>8}{'ratio':>8}{'disk GiB r/w':>14}   runs")
    for method, row in report["methods"].items():
        disk = f"{row['disk_read_gib']}/{row['disk_written_gib']}"
        print(f"{LABELS[method]:<20}{row['median_s']:>10}{row['mb_per_s']:>8}"
              f"{row['ratio']:>8}{disk:>14}   {row['runs_s']}")
    print("\ntarget met" if report["met"] else "\ntarget MISSED")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="MiB per clip")
    parser.add_argument("--count", type=int, default=8, help="clips")
    parser.add_argument("--dir", default=None, help="where the data and docks go")
    parser.add_argument("--before-src", default=None, metavar="CHECKOUT",
                        help="also time ingest and the daemon from this checkout (e.g. a "
                        "`git worktree` or `git archive` of main), for before/after")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
