#!/usr/bin/env python3
"""Ledger-age benchmark: the same commands on a fresh ledger and on one grown for years.

The aged ledger is a busy station after a few years: 1,000,000 `uploaded` clips from 400
cameras and 3,000,000 audit rows, written with raw SQL into the schema that bwc-dock
itself created (so every index and migration is the real one). It comes in two kinds,
since SQLite plans each statement from the statistics it finds: "aged" has none, as every
ledger bwc-dock grows itself (it never runs ANALYZE) and one an earlier version left;
"analyzed" is the same ledger after ANALYZE, as one whose owner ran it (or `PRAGMA
optimize`) would be. The fresh ledger is the same schema with one earlier docking in it.
On each, --reps runs of:

  ingest 20     `bwc-dock ingest DIR --camera-serial NEW --wait` of 20 tiny new clips
                (file backend, same disk), on its own copy of the ledger each time
  status        `bwc-dock status --json`
  clips staged  `bwc-dock clips --state staged --json`
  clips camera  `bwc-dock clips --camera NEW --json` (the 20 clips just ingested)

The fresh and both aged ledgers' runs are interleaved command by command (fresh, aged,
analyzed, analyzed, aged, fresh, ...), so load from other work shifts every side alike;
the report gives the median of each side, the ratio of each aged median to the fresh one,
every run, and the load average and CPU pressure while the timings ran. The target for
aged / fresh (both kinds) is <= 1.2 ("nothing slows as the ledger ages"). With
--explain it also records every SQL statement one ingest, the three commands and a daemon
offloading a docked camera folder run (through an SQLAlchemy hook and a trace of the
quick reader's sqlite3 connection, in each command's own process), runs EXPLAIN QUERY
PLAN for each on each kind of aged ledger and counts the SQLite steps of one run of it
there, and lists those that scan a table that grows with history (clips,
audit_log, dockings, sidecars) or take more steps than a hundredth of the aged clips (a
search of an index the statistics call unselective reads as much as a scan). The daemon
offloads a camera with years of history (OLD00007), so that a statement reading one
camera's history shows too.

Usage: scripts/bench_ledger.py [--json] [--reps N] [--clips N] [--explain] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_copier import cpu_pressure_microseconds  # scripts/ is this script's path

REPOSITORY = Path(__file__).resolve().parent.parent
BWC_DOCK = str(Path(sys.executable).with_name("bwc-dock"))
TARGET_RATIO = 1.2
NEW_CLIPS = 20
DAEMON_CAMERA = "OLD00007"  # one of the aged ledger's cameras: its own history is long
GROWING_TABLES = ("clips", "audit_log", "dockings", "sidecars")
# --explain flags a statement that takes more SQLite steps than a hundredth of the aged
# clips (reading a row takes several, and one camera's history is 1/400 of all), and at
# least this many; the hot path's statements take a few hundred
MIN_STEPS_FLAGGED = 10_000
STEP_GRAIN = 100  # steps between two calls of the counting handler
# Runs inside the command's own process: every statement it sends, to a file.
CAPTURE = """
import json, os, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
capture = open(os.environ["BWC_BENCH_SQL_CAPTURE"], "a")
@event.listens_for(Engine, "before_cursor_execute")
def _record(connection, cursor, statement, parameters, context, executemany):
    if not executemany:
        capture.write(json.dumps([statement, list(parameters or ())], default=str) + "\\n")
        capture.flush()
# status and clips answer over plain sqlite3 (the quick reader): its statements, values inline
from bwc_dock.ledger import quick
_reader_init = quick.QuickReader.__init__
def _traced(self, connection):
    _reader_init(self, connection)
    connection.set_trace_callback(lambda sql: (capture.write(json.dumps([sql, []]) + "\\n"),
                                               capture.flush()))
quick.QuickReader.__init__ = _traced
from bwc_dock.cli import main
sys.argv[0] = "bwc-dock"
main()
"""


def write_config(dock: Path, watch_dir: Path | None = None) -> Path:
    (dock / "nas").mkdir(parents=True, exist_ok=True)
    (dock / "nas" / ".bwc-dock-store").touch()  # the share's marker file
    config = dock / "config.toml"
    watch = f'"{watch_dir}"' if watch_dir else ""
    config.write_text(
        f'[dock]\nid = "bench"\nstate_dir = "{dock / "state"}"\nstaging_reserve_mb = 0\n'
        f'[storage]\nbackend = "file"\npath = "{dock / "nas"}"\n'
        f'[sources]\nudev = false\nwatch_dirs = [{watch}]\nrescan_interval_seconds = 2\n'
    )
    return config


def make_card(folder: Path, count: int, tag: str) -> Path:
    clips = folder / "DCIM" / "100BWC"
    clips.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        (clips / f"VID_{number:04d}.MP4").write_bytes(f"{tag}-{number}".encode() * 256)
    return folder


def bwc(config: Path, *arguments: str, capture: Path | None = None) -> float:
    """Run one command; its wall time in seconds."""
    environment = {**os.environ, "BWC_DOCK_CONFIG": str(config)}
    command = [BWC_DOCK, *arguments]
    if capture is not None:
        environment["BWC_BENCH_SQL_CAPTURE"] = str(capture)
        command = [sys.executable, "-c", CAPTURE, *arguments]
    started = time.perf_counter()
    subprocess.run(command, env=environment, check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - started


def fresh_template(work: Path) -> Path:
    """A dock whose ledger bwc-dock created itself, with one earlier docking in it."""
    dock = work / "template"
    config = write_config(dock)
    card = make_card(work / "first-card", 2, "first")
    bwc(config, "ingest", str(card), "--camera-serial", "FIRST", "--wait")
    return dock


def age(ledger: Path, clip_count: int) -> None:
    """Grow ``ledger`` with raw SQL to ``clip_count`` uploaded clips, 3 audit rows each,
    gathering no statistics (see ``analyze``)."""
    connection = sqlite3.connect(ledger)
    connection.execute("PRAGMA synchronous=OFF")
    cameras = 400
    per_docking = 50
    start = datetime(2023, 1, 1, tzinfo=UTC)
    with connection:
        connection.executemany(
            "INSERT INTO cameras (serial, first_seen_at) VALUES (?, ?)",
            ((f"OLD{number:05d}", _sql_time(start)) for number in range(cameras)),
        )
        docking_count = clip_count // per_docking
        connection.executemany(
            "INSERT INTO dockings (id, camera_serial, dock_id, source, device, volume_root,"
            " docked_at, scanned_at, undocked_at, refused_entries, sums_written_at)"
            " VALUES (?, ?, 'bench', 'udev', '/dev/sdb1', '/mnt', ?, ?, ?, 0, ?)",
            (
                (1000 + number, f"OLD{number % cameras:05d}", *[_sql_time(
                    start + timedelta(hours=number))] * 4)
                for number in range(docking_count)
            ),
        )
        connection.executemany(
            "INSERT INTO clips (camera_serial, docking_id, source_path_raw, source_path, name,"
            " size, mtime_ns, recorded_at, sha256, state, priority, remote_key, remote_sha256,"
            " copy_attempts, upload_attempts, discovered_at, staged_at, uploaded_at,"
            " staged_purged_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 1000, ?, ?, ?, 'uploaded', 0, ?, ?, 1, 1, ?, ?, ?, ?, ?)",
            (_old_clip(number, cameras, per_docking, start) for number in range(clip_count)),
        )
        connection.executemany(
            "INSERT INTO audit_log (at, dock_id, actor, event, camera_serial, clip_id, sha256,"
            " details, prev_hash, hash) VALUES (?, 'bench', 'daemon', ?, ?, ?, ?, '{}', ?, ?)",
            (_old_audit(number, cameras, start) for number in range(clip_count * 3)),
        )
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()


def analyze(ledger: Path) -> None:
    """Gather SQLite's statistics (sqlite_stat1) on ``ledger``, as ANALYZE does."""
    connection = sqlite3.connect(ledger)
    connection.execute("ANALYZE")
    connection.close()


def _sql_time(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(sep=" ")


def _old_clip(number: int, cameras: int, per_docking: int, start: datetime) -> tuple[Any, ...]:
    when = _sql_time(start + timedelta(seconds=number * 90))
    digest = hashlib.sha256(number.to_bytes(8, "big")).hexdigest()
    path = f"DCIM/100BWC/VID_{number:08d}.MP4"
    serial = f"OLD{(number // per_docking) % cameras:05d}"
    return (serial, 1000 + number // per_docking, path.encode(), path, path.rsplit("/", 1)[1],
            number, when, digest, f"{serial}/{digest}.MP4", digest, when, when, when, when, when)


def _old_audit(number: int, cameras: int, start: datetime) -> tuple[Any, ...]:
    clip = number // 3 + 1
    moment = (start + timedelta(seconds=number * 30)).isoformat()
    event = ("clip.staged", "clip.uploading", "clip.uploaded")[number % 3]
    link = hashlib.sha256(number.to_bytes(8, "big")).hexdigest()
    return (moment, event, f"OLD{clip % cameras:05d}", clip, link, link, link)


AGED_KINDS = ("aged", "analyzed")
OPERATIONS = ("ingest", "status", "staged", "camera")
LABELS = {"ingest": "ingest 20", "status": "status", "staged": "clips staged",
          "camera": "clips camera"}


def measure(templates: dict[str, Path], work: Path, reps: int) -> dict[str, dict[str, list[float]]]:
    """Timings of the four operations, fresh and aged interleaved command by command.

    Each rep copies both templates, then runs every operation on one ledger right after the
    same operation on the others, so a change in the machine's load between runs (other
    benchmarks, the page cache) lands on every side of a ratio instead of on one. The
    order flips each rep (fresh first, then last), so none always runs in one place."""
    timings: dict[str, dict[str, list[float]]] = {
        name: {operation: [] for operation in OPERATIONS} for name in templates
    }
    for rep in range(reps):
        order = list(templates) if rep % 2 == 0 else list(reversed(templates))
        configs = {}
        for name in order:
            dock = work / f"{name}-{rep}"
            shutil.copytree(templates[name] / "state", dock / "state")
            configs[name] = (write_config(dock),
                             make_card(work / f"{name}-card-{rep}", NEW_CLIPS, f"{name}{rep}"))
        # the copy of the aged ledger is GBs of dirty pages; written back during the
        # timings, they slowed the aged side's fsyncs (ingest 2.3 s against 1.4 s synced)
        os.sync()
        for operation in OPERATIONS:
            for name in order:
                config, card = configs[name]
                print(f"rep {rep + 1}/{reps}: {name} {LABELS[operation]}", file=sys.stderr)
                timings[name][operation].append(bwc(config, *_arguments(operation, card)))
        for name in order:
            shutil.rmtree(work / f"{name}-{rep}")
    return timings


def _arguments(operation: str, card: Path) -> tuple[str, ...]:
    return {
        "ingest": ("ingest", str(card), "--camera-serial", "NEW", "--wait"),
        "status": ("status", "--json"),
        "staged": ("clips", "--state", "staged", "--json"),
        "camera": ("clips", "--camera", "NEW", "--json"),
    }[operation]


def explain(template: Path, work: Path, clip_count: int) -> list[dict[str, Any]]:
    """Statements of the hot path that read rows in proportion to history: their plan
    scans a table that grows with it, or one run of them on the aged ledger takes more
    SQLite steps than a hundredth of its clips (a search of a non-selective index reads
    as much as a scan, and its plan says SEARCH)."""
    work.mkdir(parents=True, exist_ok=True)
    dock = work / "explain"
    shutil.copytree(template / "state", dock / "state")
    config = write_config(dock)
    capture = work / "statements.jsonl"
    card = make_card(work / "explain-card", NEW_CLIPS, "explain")
    bwc(config, "ingest", str(card), "--camera-serial", "NEW", "--wait", capture=capture)
    for arguments in (("status", "--json"), ("clips", "--state", "staged", "--json"),
                      ("clips", "--camera", "NEW", "--json")):
        bwc(config, *arguments, capture=capture)
    daemon_offload(template, work, capture)
    connection = sqlite3.connect(dock / "state" / "ledger.sqlite3", isolation_level=None)
    partial = {name for name, sql in connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'")}
    most_steps = max(clip_count // 100, MIN_STEPS_FLAGGED)
    findings: dict[str, dict[str, Any]] = {}
    for line in sorted(set(capture.read_text().splitlines())):
        # each statement with each of its parameters: the same one reads little for a new
        # camera and much for an old one
        statement, parameters = json.loads(line)
        if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            continue
        try:
            plan = connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
        except sqlite3.Error:
            continue
        steps = _steps(connection, statement, parameters)
        scans = [row[3] for row in plan
                 if _scans_history(row[3], statement) and not _partial(row[3], partial)]
        if scans or (steps is not None and steps > most_steps):
            entry = findings.setdefault(statement, {
                "statement": " ".join(statement.split()), "count": 0, "steps": steps,
                "plan": scans or [row[3] for row in plan]})
            entry["count"] += 1
            entry["steps"] = max(entry["steps"] or 0, steps or 0)
    connection.close()
    return list(findings.values())


def _steps(connection: sqlite3.Connection, statement: str, parameters: list[Any]) -> int | None:
    """SQLite virtual-machine steps of one run of ``statement`` (rolled back): the rows
    it reads, whatever the machine's speed or load. None when it cannot run again."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    connection.set_progress_handler(count, STEP_GRAIN)
    try:
        connection.execute("BEGIN")
        connection.execute(statement, parameters).fetchall()
    except sqlite3.Error:
        return None
    finally:
        connection.set_progress_handler(None, 0)
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    return steps * STEP_GRAIN


def _scans_history(detail: str, statement: str) -> bool:
    """A full scan of a growing table. Not one walking the rowid backwards to its first
    row (``ORDER BY id DESC LIMIT 1``: the chain head), which reads one row."""
    words = detail.split()
    if len(words) < 2 or words[0] != "SCAN" or words[1] not in GROWING_TABLES:
        return False
    newest_first = f"ORDER BY {words[1]}.id DESC LIMIT" in " ".join(statement.split())
    return not newest_first


def daemon_offload(template: Path, work: Path, capture: Path) -> None:
    """The daemon's own statements (claim, finish, anchor, heartbeat, status hooks) while
    it offloads a docked camera folder on the aged ledger, until every clip is uploaded.
    The camera is an old one, with 2,500 clips and 7,500 audit entries of history."""
    dock = work / "explain-daemon"
    shutil.copytree(template / "state", dock / "state")
    make_card(dock / "watch" / DAEMON_CAMERA, NEW_CLIPS, "daemon")
    config = write_config(dock, dock / "watch")
    environment = {**os.environ, "BWC_DOCK_CONFIG": str(config),
                   "BWC_BENCH_SQL_CAPTURE": str(capture)}
    daemon = subprocess.Popen([sys.executable, "-c", CAPTURE, "run"], env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and _uploaded(config, DAEMON_CAMERA) < NEW_CLIPS:
            time.sleep(0.5)
        time.sleep(3)  # a few more turns of the main loop: heartbeat, anchor, status hooks
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)


def _uploaded(config: Path, camera: str) -> int:
    environment = {**os.environ, "BWC_DOCK_CONFIG": str(config)}
    listing = subprocess.run([BWC_DOCK, "clips", "--camera", camera, "--json"], env=environment,
                             capture_output=True, text=True, timeout=600, check=False)
    if listing.returncode != 0:
        return 0
    new_clips = {f"DCIM/100BWC/VID_{number:04d}.MP4" for number in range(NEW_CLIPS)}
    return sum(clip["state"] == "uploaded" and clip["source_path"] in new_clips
               for clip in json.loads(listing.stdout))


def _partial(detail: str, partial_indexes: set[str]) -> bool:
    """A scan of a partial index reads only the rows it holds (the open dockings, say)."""
    return any(detail.endswith(f"INDEX {name}") for name in partial_indexes)


def run(arguments: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-ledger-", dir=arguments.dir))
    try:
        fresh = fresh_template(work)
        aged, analyzed = work / "aged", work / "analyzed"
        shutil.copytree(fresh, aged)
        started = time.perf_counter()
        age(aged / "state" / "ledger.sqlite3", arguments.clips)
        shutil.copytree(aged, analyzed)
        analyze(analyzed / "state" / "ledger.sqlite3")
        build_seconds = time.perf_counter() - started
        load = Load.start()
        templates = {"fresh": fresh, "aged": aged, "analyzed": analyzed}
        results = measure(templates, work, arguments.reps)
        report = _report(results, arguments.clips, build_seconds)
        report["load"] = load.finish()
        if arguments.explain:
            report["scans"] = [
                {"ledger": kind, **scan}
                for kind in AGED_KINDS
                for scan in explain(templates[kind], work / f"explain-{kind}", arguments.clips)
            ]
        _print(report, arguments.json)
        return 0 if report["met"] else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Load:
    """How busy the machine was while the timings ran: load averages and CPU pressure."""

    def __init__(self, pressure: int | None, started: float, load_before: float) -> None:
        self.pressure = pressure
        self.started = started
        self.load_before = load_before

    @classmethod
    def start(cls) -> Load:
        return cls(cpu_pressure_microseconds(), time.monotonic(), os.getloadavg()[0])

    def finish(self) -> dict[str, Any]:
        after = cpu_pressure_microseconds()
        seconds = time.monotonic() - self.started
        pressure = (None if self.pressure is None or after is None
                    else round((after - self.pressure) / 1e6 / seconds * 100, 1))
        return {"cpus": os.cpu_count(), "load_1min_before": round(self.load_before, 2),
                "load_1min_after": round(os.getloadavg()[0], 2),
                "cpu_pressure_percent": pressure, "seconds": round(seconds, 1)}


def _report(results: dict[str, dict[str, list[float]]], clips: int,
            build_seconds: float) -> dict[str, Any]:
    """Median of each side and the ratio of each aged median to the fresh one, with every
    run kept for reading."""
    rows: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        fresh = statistics.median(results["fresh"][operation])
        row: dict[str, Any] = {"fresh_s": round(fresh, 3)}
        for kind in AGED_KINDS:
            aged = statistics.median(results[kind][operation])
            row[f"{kind}_s"] = round(aged, 3)
            row[f"{kind}_ratio"] = round(aged / fresh, 2)
        for kind in ("fresh", *AGED_KINDS):
            row[f"{kind}_runs_s"] = [round(value, 3) for value in results[kind][operation]]
        rows[operation] = row
    return {"aged_clips": clips, "build_s": round(build_seconds, 1), "target": TARGET_RATIO,
            "reps": len(results["fresh"]["ingest"]), "operations": rows,
            "met": all(row[f"{kind}_ratio"] <= TARGET_RATIO
                       for row in rows.values() for kind in AGED_KINDS)}


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    load = report["load"]
    print(f"ledger age: {report['aged_clips']:,} uploaded clips (built in "
          f"{report['build_s']} s), without statistics (aged) and after ANALYZE "
          f"(analyzed); {report['reps']} reps, fresh and both aged interleaved; median of "
          f"each, ratio of medians; target aged/fresh <= {report['target']}")
    print(f"{load['cpus']} CPUs; load average {load['load_1min_before']} before, "
          f"{load['load_1min_after']} after; CPU pressure from other work during the "
          f"{load['seconds']} s of timings {load['cpu_pressure_percent']}%")
    print(f"{'operation':<14}{'fresh s':>9}{'aged s':>9}{'ratio':>7}{'analyzed s':>12}"
          f"{'ratio':>7}  runs fresh | aged | analyzed (s)")
    for operation, row in report["operations"].items():
        runs = " | ".join(" ".join(f"{value:.2f}" for value in row[f"{kind}_runs_s"])
                          for kind in ("fresh", *AGED_KINDS))
        print(f"{LABELS[operation]:<14}{row['fresh_s']:>9}{row['aged_s']:>9}"
              f"{row['aged_ratio']:>7}{row['analyzed_s']:>12}{row['analyzed_ratio']:>7}  {runs}")
    for scan in report.get("scans", []):
        statement = scan["statement"]
        shown = statement[statement.find(" FROM "):] if " FROM " in statement else statement
        print(f"\nreads history on the {scan['ledger']} ledger ({scan['count']}x, up to "
              f"{scan['steps']} SQLite steps): {scan['plan']}\n  ...{shown[:400]}")
    print("\ntarget met" if report["met"] else "\ntarget MISSED")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clips", type=int, default=1_000_000, help="uploaded clips, aged")
    parser.add_argument("--explain", action="store_true", help="list statements that scan")
    parser.add_argument("--dir", default=None, help="where the temporary ledgers go")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
