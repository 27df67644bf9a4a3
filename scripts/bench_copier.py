#!/usr/bin/env python3
"""Copier benchmark: the copier against cp+sha256sum and openssl, in the same run.

Data: one 1 GiB clip and 100 clips of 10 MiB of random bytes, read from the page cache
(each source is read once before every measurement), written to a temporary folder on
the same disk. For each data set, three times, the median is reported of:

  copier (no verify)  Copier.copy_next through a real ledger as the daemon and `ingest`
                      run it (clip N fsynced, renamed and recorded in a thread of its
                      own while clip N+1 is read), the verify re-read switched off in
                      the benchmark process only (copy, .part, fsync, rename, directory
                      fsync, ledger transactions all real)
  copier (verify)     the same with the re-read from disk, i.e. the real copier
  cp + sha256sum      cp of the files, then sha256sum of the copies (no fsync!)
  openssl sha256      openssl dgst -sha256 of the sources: the hash-speed ceiling

The limit is min(openssl's SHA-256 speed, buffered write+fsync of the disk), both
measured in every round (the disk probe writes 256 MiB), each method's ratio taken against
its own round's limit and the median reported; targets: copy+hash+fsync >= 0.9 of the limit for one
1 GiB clip and >= 0.8 for 100 x 10 MiB, >= 0.5 with the verify re-read, peak RSS under
100 MiB. SQL/clip counts the statements the copier sent (an SQLAlchemy hook on its
engine, BEGIN included) over the timed part, per clip.

CPU seconds come from getrusage: the copier's own (all its threads, over the timed
part only) and the children's for the command-line tools. Kernel writeback threads are
charged to nobody, for all methods alike. Peak RSS is the copier process's VmHWM
(the whole process: interpreter, SQLAlchemy, ledger, buffers).

Usage: scripts/bench_copier.py [--json] [--dir DIR] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024**2
GIB = 1024**3
READ_CHUNK = 8 * MIB
# against the limit: min(openssl's SHA-256 speed, buffered write+fsync), same run
TARGET_NO_VERIFY_ONE_CLIP = 0.9  # copy+hash+fsync of one big clip (1 GiB)
TARGET_NO_VERIFY_MANY_CLIPS = 0.8  # the same over many clips (100 x 10 MiB)
TARGET_VERIFY = 0.5  # with the verify re-read
TARGET_RSS_MIB = 100
METHODS = ("copier_no_verify", "copier_verify", "cp_sha256sum", "openssl_sha256")
LABELS = {
    "copier_no_verify": "(a) copier, no verify",
    "copier_verify": "(b) copier + verify",
    "cp_sha256sum": "(c) cp + sha256sum",
    "openssl_sha256": "(d) openssl sha256",
    "baseline_no_verify": "(a0) --baseline, no verify",
    "baseline_verify": "(b0) --baseline + verify",
}
BASELINE_ENVIRONMENT = "BWC_BENCH_BASELINE_HASHING"


@dataclass
class Dataset:
    name: str
    root: Path  # the "camera volume"
    files: list[Path]
    size: int


@dataclass
class Sample:
    seconds: float
    cpu_seconds: float
    max_rss_kib: int | None = None
    baseline_rss_kib: int | None = None
    statements: int | None = None  # SQL statements the copier sent, over the timed part
    digests: dict[str, str] = field(default_factory=dict)  # file name -> sha256


# -- data ----------------------------------------------------------------------------


def make_dataset(base: Path, name: str, count: int, size: int, seed: int) -> Dataset:
    """``count`` clips of ``size`` random bytes in a DCIM-style tree."""
    generator = random.Random(seed)
    folder = base / name / "DCIM" / "100BWC"
    folder.mkdir(parents=True)
    files = []
    for number in range(1, count + 1):
        path = folder / f"CLIP{number:04d}.MP4"
        with path.open("wb") as output:
            remaining = size
            while remaining:
                piece = min(remaining, READ_CHUNK)
                output.write(generator.randbytes(piece))
                remaining -= piece
        files.append(path)
    return Dataset(name, base / name, files, count * size)


def warm(dataset: Dataset) -> None:
    """Read every source byte so the measurement reads from the page cache."""
    buffer = bytearray(READ_CHUNK)
    for path in dataset.files:
        with path.open("rb", buffering=0) as source:
            while source.readinto(buffer):
                pass


# -- the copier, in its own process ---------------------------------------------------


def _status_kib(key: str) -> int:
    """A memory figure of this process from /proc (VmRSS now, VmHWM its peak).

    Not ru_maxrss: Linux carries that over exec from the forking parent, so a child of
    a big benchmark process would report the parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _disable_verify() -> None:
    """Benchmark only: make the copier's verify re-read return the hash just computed
    for that file (by its staged path: the next clip is read while one is verified).

    Everything else of Copier.copy stays the real code; this isolates the cost of the
    re-read from disk.
    """
    import bwc_dock.copier as copier_module

    copier_class = copier_module.Copier
    real_copy_once = copier_class._copy_once
    read: dict[str, str] = {}  # staged path -> SHA-256 of its one read

    def copy_once_remembered(self: Any, source: Any, destination: Path, *args: Any) -> str:
        sha256: str = real_copy_once(self, source, destination, *args)
        read[str(destination)] = sha256
        return sha256

    def trust_the_copy(path: object, *_args: object, **_kwargs: object) -> str:
        return read[str(path)]

    setattr(copier_class, "_copy_once", copy_once_remembered)  # noqa: B010  (a patch)
    vars(copier_module)["hash_file_from_disk"] = trust_the_copy


def _use_baseline_hashing(path: str) -> None:
    """Benchmark only: run the copier with another hashing.py (before/after tuning)."""
    import importlib.util

    import bwc_dock.copier as copier_module

    spec = importlib.util.spec_from_file_location("baseline_hashing", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    copier_names = vars(copier_module)  # the copier's own bindings of the hashing functions

    def copy_hashing(*arguments: Any, parts: Any = None, **options: Any) -> Any:
        """The baseline's copy_hashing; a hashing.py from before part digests takes no
        ``parts`` (the copier here is given no part digests to take)."""
        assert parts is None
        return module.copy_hashing(*arguments, **options)

    copier_names["copy_hashing"] = copy_hashing
    copier_names["hash_file_from_disk"] = module.hash_file_from_disk


def copier_worker(mode: str, volume: Path, work: Path) -> None:
    """Copy every clip of ``volume`` through a real ledger; print one JSON result."""
    from bwc_dock.config import parse_config
    from bwc_dock.copier import Copier
    from bwc_dock.found import DockedVolume
    from bwc_dock.ledger import Ledger
    from bwc_dock.ledger.leases import current_owner
    from bwc_dock.logs import configure_logging
    from bwc_dock.scanner import scan_volume
    from bwc_dock.scanning import folder_profile, scan_limits
    from bwc_dock.staging import StagingArea

    configure_logging("warning")
    config = parse_config(
        {
            "dock": {"id": "bench", "state_dir": str(work / "state"), "staging_reserve_mb": 64},
            "storage": {"backend": "file", "path": str(work / "central")},
            "sources": {"udev": False},
        }
    )
    ledger = Ledger.open(config, "bench")
    owner = current_owner("copier")
    profile = folder_profile(config)
    volume_record = DockedVolume(
        source="ingest",
        device=str(volume),
        root=volume,
        camera_serial="BENCH0001",
        profile_name=profile.name,
    )
    docking_id = ledger.record_docking(volume_record, owner)
    found = scan_volume(volume, profile, scan_limits(config))
    ledger.record_scan(docking_id, found.clips, len(found.refused))
    staging = StagingArea(config.staging_dir, config.dock.staging_reserve_mb * MIB)
    copier = Copier(ledger, staging, owner)
    if os.environ.get(BASELINE_ENVIRONMENT):
        _use_baseline_hashing(os.environ[BASELINE_ENVIRONMENT])
    if mode == "no-verify":
        _disable_verify()
    cancel = threading.Event()
    statements = _count_statements(ledger.engine)
    baseline_rss = _status_kib("VmRSS")
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    statements_before = statements[0]
    # as the daemon and `ingest` run it: clip N is put in place (and re-read) in a thread
    # of its own while clip N+1 is read
    while copier.copy_next(cancel, docking_id, verify_in_background=True):
        pass
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    clips = ledger.clips()
    ledger.close()
    result = {
        "seconds": seconds,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "max_rss_kib": _status_kib("VmHWM"),
        "baseline_rss_kib": baseline_rss,
        "statements": statements[0] - statements_before,
        "states": sorted({clip.state.value for clip in clips}),
        "digests": {clip.source_path.rsplit("/", 1)[-1]: clip.sha256 for clip in clips},
    }
    print(json.dumps(result))


def _count_statements(engine: Any) -> list[int]:
    """A one-item list that counts every statement sent on ``engine`` from now on
    (BEGIN IMMEDIATE included; COMMIT is not a statement the cursor sends)."""
    from sqlalchemy import event

    counter = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _counted(*_arguments: Any) -> None:
        counter[0] += 1

    return counter


def measure_copier(
    dataset: Dataset, scratch: Path, verify: bool, baseline: str | None = None
) -> Sample:
    work = scratch / "copier"
    work.mkdir()
    try:
        completed = subprocess.run(
            [
                sys.executable,
                __file__,
                "--copier-worker",
                "verify" if verify else "no-verify",
                str(dataset.root),
                str(work),
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, BASELINE_ENVIRONMENT: baseline or ""},
        )
        result = json.loads(completed.stdout)
        if result["states"] != ["staged"]:
            raise RuntimeError(f"copier left clips in {result['states']}: {completed.stderr}")
        return Sample(
            seconds=result["seconds"],
            cpu_seconds=result["cpu_seconds"],
            max_rss_kib=result["max_rss_kib"],
            baseline_rss_kib=result["baseline_rss_kib"],
            statements=result["statements"],
            digests=result["digests"],
        )
    finally:
        shutil.rmtree(work)


# -- the baselines ------------------------------------------------------------------


def run_tool(argv: list[str]) -> tuple[float, float, str]:
    """Run a command; (wall seconds, its CPU seconds, its stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {process.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, output


def parse_digests(output: str, openssl: bool) -> dict[str, str]:
    digests = {}
    for line in output.splitlines():
        if openssl:  # SHA2-256(path)= hex
            path, _, digest = line.rpartition("= ")
            path = path[path.index("(") + 1 : -1]
        else:  # hex  path
            digest, _, path = line.partition("  ")
        digests[Path(path).name] = digest.strip()
    return digests


def measure_cp_sha256sum(dataset: Dataset, scratch: Path) -> Sample:
    target = scratch / "cp"
    target.mkdir()
    try:
        copy_seconds, copy_cpu, _ = run_tool(["cp", "--", *map(str, dataset.files), str(target)])
        copies = [str(target / path.name) for path in dataset.files]
        hash_seconds, hash_cpu, output = run_tool(["sha256sum", "--", *copies])
        return Sample(
            copy_seconds + hash_seconds,
            copy_cpu + hash_cpu,
            digests=parse_digests(output, openssl=False),
        )
    finally:
        shutil.rmtree(target)


def measure_openssl(dataset: Dataset) -> Sample:
    seconds, cpu, output = run_tool(["openssl", "dgst", "-sha256", "--", *map(str, dataset.files)])
    return Sample(seconds, cpu, digests=parse_digests(output, openssl=True))


# -- the disk, for context ----------------------------------------------------------


def probe_payload() -> bytes:
    generator = random.Random(7)
    return b"".join(generator.randbytes(READ_CHUNK) for _ in range(256 * MIB // READ_CHUNK))


def probe_disk(scratch: Path, payload: bytes) -> tuple[float, float]:
    """(MB/s of a buffered write + fsync of ``payload``, ms of a 4 KiB write + fsync)."""
    path = scratch / "probe"
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(payload)
        for offset in range(0, len(view), 4 * MIB):
            os.write(fd, view[offset : offset + 4 * MIB])
        os.fsync(fd)
    finally:
        os.close(fd)
    rate = len(payload) / 1e6 / (time.perf_counter() - started)
    path.unlink()
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload[:4096])
        os.fsync(fd)
    finally:
        os.close(fd)
    latency = (time.perf_counter() - started) * 1000
    path.unlink()
    settle()
    return rate, latency


# -- the run ------------------------------------------------------------------------


def settle() -> None:
    """Finish the previous method's writeback so it does not slow the next one."""
    os.sync()


def measure(dataset: Dataset, scratch: Path, method: str, baseline: str | None) -> Sample:
    warm(dataset)
    if method == "baseline_no_verify":
        sample = measure_copier(dataset, scratch, verify=False, baseline=baseline)
    elif method == "baseline_verify":
        sample = measure_copier(dataset, scratch, verify=True, baseline=baseline)
    elif method == "copier_no_verify":
        sample = measure_copier(dataset, scratch, verify=False)
    elif method == "copier_verify":
        sample = measure_copier(dataset, scratch, verify=True)
    elif method == "cp_sha256sum":
        sample = measure_cp_sha256sum(dataset, scratch)
    else:
        sample = measure_openssl(dataset)
    settle()
    return sample


def summarise(
    dataset: Dataset, samples: dict[str, list[Sample]], disk_mb_per_s: list[float]
) -> dict[str, Any]:
    """Medians per method, checked for agreeing digests, with ratios against openssl and
    against the limit, min(openssl, buffered write+fsync of the disk), each taken in the
    round the method ran in (``disk_mb_per_s`` has one probe per round)."""
    reference = samples["openssl_sha256"][0].digests
    if len(reference) != len(dataset.files):
        raise RuntimeError(f"openssl hashed {len(reference)} of {len(dataset.files)} files")
    for method, runs in samples.items():
        for run in runs:
            if run.digests != reference:
                raise RuntimeError(f"{method} produced digests that differ from openssl's")
    methods: dict[str, Any] = {}
    for method, runs in samples.items():
        seconds = statistics.median(run.seconds for run in runs)
        cpu = statistics.median(run.cpu_seconds for run in runs)
        entry: dict[str, Any] = {
            "seconds": round(seconds, 3),
            "mb_per_s": round(dataset.size / 1e6 / seconds, 1),
            "cpu_seconds_per_gib": round(cpu / (dataset.size / GIB), 3),
            "runs_seconds": [round(run.seconds, 3) for run in runs],
        }
        if runs[0].max_rss_kib is not None:
            entry["peak_rss_mib"] = round(max(run.max_rss_kib or 0 for run in runs) / 1024, 1)
            entry["rss_before_copy_mib"] = round(
                max(run.baseline_rss_kib or 0 for run in runs) / 1024, 1
            )
        methods[method] = entry
    # Ratios per round (openssl ran just before the others), then the median: other load
    # on the machine comes and goes, and a round's methods see much the same of it.
    ceiling = samples["openssl_sha256"]
    for method, runs in samples.items():
        rounds = list(zip(ceiling, runs, disk_mb_per_s, strict=True))
        wall = statistics.median(reference.seconds / run.seconds for reference, run, _ in rounds)
        cpu = statistics.median(
            reference.cpu_seconds / run.cpu_seconds for reference, run, _ in rounds
        )
        limit = statistics.median(
            max(reference.seconds, dataset.size / 1e6 / disk) / run.seconds
            for reference, run, disk in rounds
        )
        methods[method]["ratio_to_openssl"] = round(wall, 3)
        methods[method]["ratio_to_limit"] = round(limit, 3)
        methods[method]["cpu_ratio_to_openssl"] = round(cpu, 3)
        if runs[0].statements is not None:
            statements = statistics.median(run.statements or 0 for run in runs)
            methods[method]["statements_per_clip"] = round(statements / len(dataset.files), 2)
    return {"bytes": dataset.size, "files": len(dataset.files), "methods": methods}


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for name, result in results.items():
        methods = result["methods"]
        no_verify_target = (
            TARGET_NO_VERIFY_ONE_CLIP if result["files"] == 1 else TARGET_NO_VERIFY_MANY_CLIPS
        )
        checks.append(
            {
                "dataset": name,
                "check": "(a) copy+hash+fsync vs limit",
                "value": methods["copier_no_verify"]["ratio_to_limit"],
                "target": f">= {no_verify_target}",
                "met": methods["copier_no_verify"]["ratio_to_limit"] >= no_verify_target,
            }
        )
        checks.append(
            {
                "dataset": name,
                "check": "(b) with verify re-read vs limit",
                "value": methods["copier_verify"]["ratio_to_limit"],
                "target": f">= {TARGET_VERIFY}",
                "met": methods["copier_verify"]["ratio_to_limit"] >= TARGET_VERIFY,
            }
        )
        peak = max(methods[m]["peak_rss_mib"] for m in ("copier_no_verify", "copier_verify"))
        checks.append(
            {
                "dataset": name,
                "check": "copier peak RSS MiB",
                "value": peak,
                "target": f"< {TARGET_RSS_MIB}",
                "met": peak < TARGET_RSS_MIB,
            }
        )
    return checks


def print_table(report: dict[str, Any]) -> None:
    disk = report["disk"]
    print(
        f"copier benchmark: {report['reps']} runs each, median; scratch {report['scratch_fs']}; "
        f"{report['cpus']} CPUs; CPU pressure from other work during the run "
        f"{report['cpu_pressure_percent']}% (wall-clock figures are noisy when it is high)"
    )
    print(
        f"disk (median of the rounds): buffered write+fsync of 256 MiB "
        f"{disk['write_fsync_mb_per_s']:.0f} MB/s, "
        f"4 KiB write+fsync {disk['small_fsync_ms']:.1f} ms"
    )
    header = (
        f"{'data':<12} {'method':<27} {'MB/s':>8} {'CPU s/GiB':>10} {'vs openssl':>10} "
        f"{'vs limit':>9} {'CPU vs openssl':>14} {'SQL/clip':>8} "
        f"{'peak RSS MiB':>13}  runs (s)"
    )
    print(header)
    print("-" * len(header))
    for name, result in report["results"].items():
        for method, label in LABELS.items():
            if method not in result["methods"]:
                continue
            entry = result["methods"][method]
            rss = entry.get("peak_rss_mib")
            rss_text = f"{rss:.1f}" if rss is not None else "-"
            runs = " ".join(f"{value:.2f}" for value in entry["runs_seconds"])
            statements = entry.get("statements_per_clip")
            statements_text = f"{statements:.1f}" if statements is not None else "-"
            print(
                f"{name:<12} {label:<27} {entry['mb_per_s']:>8.0f} "
                f"{entry['cpu_seconds_per_gib']:>10.2f} {entry['ratio_to_openssl']:>10.2f} "
                f"{entry['ratio_to_limit']:>9.2f} {entry['cpu_ratio_to_openssl']:>14.2f} "
                f"{statements_text:>8} "
                f"{rss_text:>13}  {runs}"
            )
    print()
    for check in report["checks"]:
        mark = "ok  " if check["met"] else "MISS"
        print(
            f"{mark} {check['dataset']:<12} {check['check']:<40} "
            f"{check['value']} (target {check['target']})"
        )


def filesystem_of(path: Path) -> str:
    completed = subprocess.run(
        ["df", "--output=source,fstype", str(path)], capture_output=True, text=True, check=False
    )
    lines = completed.stdout.split()
    return " ".join(lines[-2:]) if len(lines) >= 2 else "unknown"


def cpu_pressure_microseconds() -> int | None:
    """Total time some task waited for a CPU (Linux PSI), to show how busy the box was."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first.rsplit("total=", 1)[1])


def pressure_percent(before: int | None, started: float) -> float | None:
    after = cpu_pressure_microseconds()
    if before is None or after is None:
        return None
    return round((after - before) / 1e6 / (time.monotonic() - started) * 100, 1)


def size_name(count: int, mib: int) -> str:
    return f"{count}x{mib // 1024}GiB" if mib % 1024 == 0 else f"{count}x{mib}MiB"


def run(arguments: argparse.Namespace) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="bwc-bench-", dir=arguments.dir))
    try:
        print(f"preparing data in {scratch} ...", file=sys.stderr)
        datasets = [
            make_dataset(scratch, size_name(1, arguments.big_mib), 1, arguments.big_mib * MIB, 1),
            make_dataset(
                scratch,
                size_name(arguments.small_count, arguments.small_mib),
                arguments.small_count,
                arguments.small_mib * MIB,
                2,
            ),
        ]
        settle()
        payload = probe_payload()
        pressure_before, started = cpu_pressure_microseconds(), time.monotonic()
        results = {}
        probes: list[tuple[float, float]] = []
        for dataset in datasets:
            # openssl first in each round: the ceiling every ratio is taken against
            order = ["openssl_sha256", *METHODS[:3]]
            if arguments.baseline:
                order += ["baseline_no_verify", "baseline_verify"]
            samples: dict[str, list[Sample]] = {method: [] for method in order}
            disk_rates: list[float] = []
            for repetition in range(arguments.reps):
                # the disk too, in every round: its speed drifts with other work as much
                probes.append(probe_disk(scratch, payload))
                disk_rates.append(probes[-1][0])
                for method in order:
                    print(
                        f"{dataset.name} run {repetition + 1}/{arguments.reps}: {method}",
                        file=sys.stderr,
                    )
                    samples[method].append(measure(dataset, scratch, method, arguments.baseline))
            results[dataset.name] = summarise(dataset, samples, disk_rates)
        disk = {
            "write_fsync_mb_per_s": statistics.median(rate for rate, _ in probes),
            "small_fsync_ms": statistics.median(latency for _, latency in probes),
        }
        report = {
            "reps": arguments.reps,
            "cpus": os.cpu_count(),
            "scratch_fs": filesystem_of(scratch),
            "disk": {key: round(value, 2) for key, value in disk.items()},
            "cpu_pressure_percent": pressure_percent(pressure_before, started),
            "results": results,
        }
        report["checks"] = verdicts(results)
        if arguments.json:
            print(json.dumps(report, indent=2))
        else:
            print_table(report)
        return 0 if all(check["met"] for check in report["checks"]) else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _terminate(_signal: int, _frame: object) -> None:
    raise SystemExit(130)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--dir", default=None, help="where the temporary data goes")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small-count", type=int, default=100)
    parser.add_argument("--small-mib", type=int, default=10)
    parser.add_argument(
        "--copier-worker", nargs=3, metavar=("MODE", "VOLUME", "WORK"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--baseline",
        metavar="HASHING_PY",
        help="also run the copier with this hashing.py, for before/after comparisons "
        "(e.g. from git show OLD:src/bwc_dock/hashing.py)",
    )
    arguments = parser.parse_args()
    if arguments.baseline:
        arguments.baseline = str(Path(arguments.baseline).resolve())
    if arguments.copier_worker:
        mode, volume, work = arguments.copier_worker
        copier_worker(mode, Path(volume), Path(work))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
