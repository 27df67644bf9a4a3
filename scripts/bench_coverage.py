#!/usr/bin/env python3
"""Coverage benchmark: a month of a 400-camera agency reviewed against SeaweedFS.

A local SeaweedFS (started here on free loopback ports, in a temporary directory) gets,
in one bucket, what 10 docks would have written for November: --clips clips (a small
object each, with the custody record a dock leaves beside it), an assignment record and
a docking record per camera; and a CAD export of --rows rows (two-officer units, one row
per officer). It then times `bwc-dock coverage --cad FILE --json` against the bucket,
and again against a second bucket holding half the clips with half the rows: the cost is
linear when the full review takes about twice the half one (the check allows 2.5x). The
target is the full review within 30 s.

    .venv/bin/python scripts/bench_coverage.py [--json] [--clips 15000] [--rows 20000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from tests.seaweedfs import SeaweedServer  # noqa: E402

BWC_DOCK = str(Path(sys.executable).with_name("bwc-dock"))
TARGET_SECONDS = 30.0
LINEAR_LIMIT = 2.5  # full / half: 2 is linear; more is allowed for noise, not for n log n
MONTH_START = datetime(2026, 11, 1, tzinfo=UTC)
MONTH_SECONDS = 30 * 86400
WRITERS = 32


def officer_of(camera: int) -> str:
    return f"B{camera:04d}"


def camera_name(camera: int) -> str:
    return f"CAM{camera:04d}"


def objects(clips: int, cameras: int, docks: int, seed: int) -> list[tuple[str, bytes]]:
    """(key, bytes) of everything the docks wrote: clips, custody records, fleet records."""
    rng = random.Random(seed)
    written: list[tuple[str, bytes]] = []
    for camera in range(cameras):
        for kind, moment, document in (
            ("_assignments", "20261001T000000Z", {"schema": "bwc-dock/assignment/1", "camera": camera_name(camera),
                              "officer_id": officer_of(camera),
                              "assigned_at": "2026-10-01T00:00:00+00:00",
                              "dock": "dock-01", "forced": False}),
            ("_coverage/dockings", "20261201T080000Z", {"schema": "bwc-dock/camera-evidence/1",
                                   "camera": camera_name(camera), "kind": "docking",
                                   "dock": f"dock-{camera % docks:02d}",
                                   "at": "2026-12-01T08:00:00+00:00"}),
        ):
            data = json.dumps(document).encode()
            digest = hashlib.sha256(data).hexdigest()[:16]
            written.append((f"{kind}/{camera_name(camera)}/{moment}.{digest}.json", data))
    for number in range(clips):
        camera = rng.randrange(cameras)
        recorded = MONTH_START + timedelta(seconds=rng.randrange(MONTH_SECONDS))
        body = f"clip {number}\n".encode()
        sha = hashlib.sha256(body).hexdigest()
        stem = f"BWC_{recorded:%Y%m%d_%H%M%S}_{number % 10000:04d}"
        key = f"{camera_name(camera)}/{recorded:%Y/%m/%d}/{stem}.{sha[:16]}.MP4"
        dock = f"dock-{camera % docks:02d}"
        manifest = {
            "schema": "bwc-dock/manifest/1", "clip_id": number, "camera": camera_name(camera),
            "dock": dock, "docking_id": 1, "officer": officer_of(camera),
            "original_path": f"DCIM/{stem}.MP4", "size": len(body), "sha256": sha,
            "key": key, "recorded_at": recorded.isoformat(),
            "times": {"discovered_at": "2026-12-01T08:00:00+00:00",
                      "staged_at": "2026-12-01T08:01:00+00:00",
                      "uploaded_at": "2026-12-01T08:02:00+00:00"},
            "sidecars": [], "audit_chain_head": {"id": 1, "hash": "0" * 64},
            "software": "bwc-dock bench",
        }
        written.append((key, body))
        written.append((f"{key}.{dock}.clip-{number}.json",
                        json.dumps(manifest, indent=2, sort_keys=True).encode()))
    return written


def cad_rows(rows: int, cameras: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = ["Event ID,Officer Badge ID,Officer Dispatched DateTime,"
             "Officer Cleared DateTime,Call Type"]
    for number in range(rows):
        if number % 2 == 0:
            dispatched = MONTH_START + timedelta(seconds=rng.randrange(MONTH_SECONDS))
            cleared = dispatched + timedelta(minutes=rng.randrange(10, 90))
            call_type = rng.choice(("THEFT", "ALARM", "ASSAULT", "TRAFFIC STOP"))
        officer = officer_of(rng.randrange(cameras))
        lines.append(f"E{number // 2:06d},{officer},{dispatched.isoformat()},"
                     f"{cleared.isoformat()},{call_type}")
    return "\n".join(lines) + "\n"


def fill(server: SeaweedServer, bucket: str, written: list[tuple[str, bytes]]) -> float:
    client = server.client()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
                      written))
    return time.monotonic() - started


def config_file(work: Path, server: SeaweedServer, bucket: str) -> Path:
    path = work / f"{bucket}.toml"
    path.write_text(
        f'[dock]\nid = "bench"\nstate_dir = "{work / bucket}-state"\n'
        f'[storage]\nbackend = "s3"\nendpoint_url = "{server.endpoint_url}"\n'
        'allow_plaintext = true\n'
        f'bucket = "{bucket}"\naddressing_style = "path"\n'
        '[coverage]\nexcluded_call_types = ["TRAFFIC STOP"]\n'
    )
    return path


def review(config: Path, cad: Path) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    result = subprocess.run(
        [BWC_DOCK, "--config", str(config), "coverage", "--cad", str(cad), "--json",
         "--as-of", "2026-12-31T00:00:00Z"],
        capture_output=True, text=True, check=False,
    )
    seconds = time.monotonic() - started
    if result.returncode not in (0, 1):
        raise SystemExit(f"coverage exited {result.returncode}: {result.stderr[-2000:]}")
    document = json.loads(result.stdout)
    return seconds, document["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--clips", type=int, default=15_000)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--cameras", type=int, default=400)
    parser.add_argument("--docks", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None)
    arguments, _unknown = parser.parse_known_args()  # options other sections take
    work = Path(tempfile.mkdtemp(prefix="bwc-bench-coverage-", dir=arguments.dir))
    server = SeaweedServer(work / "seaweedfs-dir")
    server.directory.mkdir()
    os.environ.update(server.environment())
    results: dict[str, Any] = {"clips": arguments.clips, "rows": arguments.rows,
                               "cameras": arguments.cameras, "docks": arguments.docks}
    try:
        server.start()
        for label, share in (("half", 2), ("full", 1)):
            bucket = server.create_bucket(f"coverage-{label}")
            written = objects(arguments.clips // share, arguments.cameras, arguments.docks, 7)
            fill_seconds = fill(server, bucket, written)
            cad = work / f"{label}.csv"
            cad.write_text(cad_rows(arguments.rows // share, arguments.cameras, 11))
            seconds, summary = review(config_file(work, server, bucket), cad)
            results[label] = {"clips": arguments.clips // share, "rows": arguments.rows // share,
                              "objects": len(written), "fill_seconds": round(fill_seconds, 1),
                              "review_seconds": round(seconds, 2), "summary": summary}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    ratio = results["full"]["review_seconds"] / max(results["half"]["review_seconds"], 1e-9)
    results |= {"ratio_full_to_half": round(ratio, 2), "linear": ratio <= LINEAR_LIMIT,
                "target_seconds": TARGET_SECONDS,
                "met": results["full"]["review_seconds"] <= TARGET_SECONDS
                and ratio <= LINEAR_LIMIT,
                "loadavg": os.getloadavg()}
    if arguments.json:
        print(json.dumps(results, indent=2))
    else:
        for label in ("half", "full"):
            part = results[label]
            print(f"{label:5} {part['clips']:>6} clips {part['rows']:>6} CAD rows: review "
                  f"{part['review_seconds']:6.2f} s  (store filled in {part['fill_seconds']} s; "
                  f"video rate {part['summary']['video_rate']})")
        print(f"full / half = {results['ratio_full_to_half']} (linear: <= {LINEAR_LIMIT}); "
              f"target {TARGET_SECONDS:.0f} s: {'met' if results['met'] else 'MISSED'}; "
              f"load average {results['loadavg'][0]:.2f}")
    sys.exit(0 if results["met"] else 1)


if __name__ == "__main__":
    main()
