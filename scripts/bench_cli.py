#!/usr/bin/env python3
"""Command-line start-up benchmark: how long the commands people run in loops take.

IT staff run `bwc-dock status` in monitoring loops; `--help`,
`status --json` and `clips --state staged --json` must finish within 0.3 s, or within 3x of
`python3 -c 'import sqlite3, json'` measured in the same run with the same interpreter.
Each command runs --reps times against a small real dock (file backend, a ledger with a
few ingested clips); the median is printed with its ratio to that baseline, and the
heavy libraries each command loaded (read from its own process), so a regression shows
what crept in.

`status --json` is measured twice: with no daemon (it then asks central storage itself,
which loads the storage backend) and with a real `bwc-dock run` beside it (it then takes
the daemon's last finding), the usual case on a dock.

The commands of a phase (no daemon, then daemon running) run in rounds, each once per
round with the baseline among them, so load from other work on a shared machine, which
drifts over seconds, falls on all of them alike and the ratios stay comparable.

PYTHONDONTWRITEBYTECODE is dropped for the measured commands and each runs once before
timing: an installed bwc-dock runs from compiled bytecode, and timing the compiler
would measure the sandbox, not the command.

Usage: scripts/bench_cli.py [--json] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BWC_DOCK = str(Path(sys.executable).with_name("bwc-dock"))
TARGET_SECONDS = 0.3
TARGET_RATIO = 3.0
HEAVY = ("alembic", "sqlalchemy", "rich", "structlog", "pydantic", "boto3", "botocore")
# Runs the command in its own process, then names the heavy libraries it loaded.
LOADS = """
import sys
from bwc_dock.cli import main
sys.argv[0] = "bwc-dock"
try:
    main()
except SystemExit:
    pass
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
sys.stderr.write("BWC_BENCH_LOADS " + ",".join(heavy) + "\\n")
"""
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("--help", ("--help",)),
    ("status --json (no daemon)", ("status", "--json")),
    ("clips --state staged --json", ("clips", "--state", "staged", "--json")),
)
DAEMON_COMMAND = ("status --json (daemon running)", ("status", "--json"))


def _environment(config: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environment["BWC_DOCK_CONFIG"] = str(config)
    return environment


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _median_seconds(
    commands: dict[str, list[str]], environment: dict[str, str], reps: int
) -> dict[str, tuple[float, float]]:
    """(median wall seconds, median CPU seconds) of each command over ``reps`` rounds,
    after one warm-up each; every round runs every command once. CPU time barely moves
    when other work shares the machine; wall time does."""
    for command in commands.values():
        subprocess.run(command, env=environment, stdout=subprocess.DEVNULL, check=False)
    walls: dict[str, list[float]] = {label: [] for label in commands}
    cpus: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(reps):
        for label, command in commands.items():
            cpu_before = _children_cpu_seconds()
            started = time.perf_counter()
            subprocess.run(command, env=environment, stdout=subprocess.DEVNULL, check=False)
            walls[label].append(time.perf_counter() - started)
            cpus[label].append(_children_cpu_seconds() - cpu_before)
    return {
        label: (statistics.median(walls[label]), statistics.median(cpus[label]))
        for label in commands
    }


def _loads(arguments: tuple[str, ...], environment: dict[str, str]) -> list[str]:
    script = LOADS.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    for line in done.stderr.splitlines():
        if line.startswith("BWC_BENCH_LOADS "):
            return [name for name in line.split(" ", 1)[1].split(",") if name]
    raise RuntimeError(f"bwc-dock {' '.join(arguments)} failed: {done.stderr.strip()}")


def _make_dock(root: Path) -> Path:
    """A config, a central folder, and a ledger holding a few ingested clips."""
    central = root / "central"
    central.mkdir()
    (central / ".bwc-dock-store").touch()  # the share's marker file
    camera = root / "camera" / "DCIM"
    camera.mkdir(parents=True)
    for number in range(5):
        (camera / f"CLIP{number:04d}.MP4").write_bytes(os.urandom(4096))
    config = root / "config.toml"
    config.write_text(
        f'[dock]\nid = "bench-cli"\nstate_dir = "{root / "state"}"\n'
        f'[storage]\nbackend = "file"\npath = "{central}"\n'
        "[sources]\nudev = false\n"
        "[service]\nheartbeat_seconds = 1\n"
    )
    subprocess.run(
        [BWC_DOCK, "ingest", str(camera.parent), "--camera-serial", "CAM1", "--wait"],
        env=_environment(config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return config


def _start_daemon(config: Path) -> subprocess.Popen[bytes]:
    environment = _environment(config)
    daemon = subprocess.Popen(
        [BWC_DOCK, "run"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = subprocess.run(
            [BWC_DOCK, "status", "--json"], env=environment, capture_output=True, check=False
        )
        if status.returncode == 0 and json.loads(status.stdout)["daemon_alive"]:
            return daemon
        time.sleep(0.5)
    daemon.kill()
    raise RuntimeError("bwc-dock run did not come up within 60 s")


BASELINE = "baseline"


def _measure_phase(
    commands: tuple[tuple[str, tuple[str, ...]], ...], config: Path, reps: int
) -> tuple[tuple[float, float], list[dict[str, Any]]]:
    """The baseline and one row per command, all measured in the same rounds."""
    environment = _environment(config)
    to_run = {BASELINE: [sys.executable, "-c", "import sqlite3, json"]}
    to_run.update({label: [BWC_DOCK, *arguments] for label, arguments in commands})
    medians = _median_seconds(to_run, environment, reps)
    baseline = medians[BASELINE]
    rows = []
    for label, arguments in commands:
        seconds, cpu_seconds = medians[label]
        ratio = seconds / baseline[0]
        rows.append({
            "command": label,
            "median_seconds": round(seconds, 4),
            "ratio": round(ratio, 2),
            "median_cpu_seconds": round(cpu_seconds, 4),
            "cpu_ratio": round(cpu_seconds / baseline[1], 2) if baseline[1] else None,
            "baseline_seconds": round(baseline[0], 4),
            "loads": _loads(arguments, environment),
            "met": seconds <= TARGET_SECONDS or ratio <= TARGET_RATIO,
        })
    return baseline, rows


def run(reps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bwc-bench-cli-") as directory:
        config = _make_dock(Path(directory))
        baseline, rows = _measure_phase(COMMANDS, config, reps)
        daemon = _start_daemon(config)
        try:
            rows.extend(_measure_phase((DAEMON_COMMAND,), config, reps)[1])
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    return {
        "baseline": "python3 -c 'import sqlite3, json' (same interpreter)",
        "baseline_seconds": round(baseline[0], 4),
        "baseline_cpu_seconds": round(baseline[1], 4),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "target": f"<= {TARGET_SECONDS} s or <= {TARGET_RATIO}x the baseline",
        "reps": reps,
        "commands": rows,
        "met": all(row["met"] for row in rows),
    }


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"baseline {report['baseline']}: {report['baseline_seconds']:.3f} s wall, "
        f"{report['baseline_cpu_seconds']:.3f} s CPU (load average {report['load_average']})"
    )
    print(
        f"target: {report['target']}; median of {report['reps']} rounds, each command once"
        " per round with the baseline (ratios to that phase's baseline)"
    )
    print(f"{'command':32} {'wall s':>7} {'ratio':>6} {'CPU s':>6} {'ratio':>6}  met  loads")
    for row in report["commands"]:
        cpu_ratio = f"{row['cpu_ratio']:5.1f}x" if row["cpu_ratio"] is not None else "     -"
        print(
            f"{row['command']:32} {row['median_seconds']:7.3f} {row['ratio']:5.1f}x "
            f"{row['median_cpu_seconds']:6.3f} {cpu_ratio}  "
            f"{'yes' if row['met'] else 'NO ':3}  {','.join(row['loads']) or '-'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--reps", type=int, default=15)
    arguments = parser.parse_args()
    report = run(max(1, arguments.reps))
    _print(report, arguments.json)
    return 0 if report["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
