"""Start-up recovery that fails in central storage raises storage_recovery_failed, seen in
the log, the metrics, `bwc-dock status --json` and the fleet document, and clears once a
later run of it succeeds (a real daemon, a real folder store it cannot read)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.dock import BWC_DOCK, Dock, make_camera, wait_until

# stops a hung test only; start-up on a busy 2-core machine has needed about 10 s
STARTUP_DEADLINE_SECONDS = 120.0
# the daemon runs recovery's storage part again every 15 s until it completes
RETRY_DEADLINE_SECONDS = 120.0


def alarm_metric(path: Path, alarm: str) -> float | None:
    """bwc_dock_alarm{alarm=...} in the Prometheus textfile; None while absent."""
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("bwc_dock_alarm{") and f'alarm="{alarm}"' in line:
            return float(line.rpartition(" ")[2])
    return None


def start_daemon_without_capabilities(dock: Dock) -> subprocess.Popen[bytes]:
    """The daemon as bwc-dock.service runs it: uid 0 with an empty capability bounding
    set, so a folder's permission bits apply to it."""
    log_file = (dock.root / "daemon.log").open("ab")
    return subprocess.Popen(
        ["setpriv", "--bounding-set=-all", "--", BWC_DOCK, "--log-format", "json", "run"],
        stdout=log_file, stderr=log_file, env=dock.environment(),
    )


def events(dock: Dock, name: str) -> list[dict[str, object]]:
    return [e for e in dock.log_events() if e.get("event") == name]


def test_recovery_that_cannot_read_a_recent_folder_raises_and_clears_an_alarm(
    dock: Dock, tmp_path: Path
) -> None:
    """A folder this dock delivered to, unreadable to the daemon at start: recovery logs
    storage_failed and the storage_recovery_failed alarm is raised in the log, metrics,
    status and fleet document; readable again, the retry clears it."""
    metrics = tmp_path / "bwc_dock.prom"
    dock.write_config(service={"heartbeat_seconds": 1, "metrics_textfile": str(metrics)})
    camera = dock.root / "card"
    make_camera(camera, [1000], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    [clip] = dock.clips()
    folder = (dock.nas / clip["remote_key"]).parent
    folder.chmod(0o000)

    daemon = start_daemon_without_capabilities(dock)
    try:
        wait_until(lambda: bool(events(dock, "daemon.recovered")), STARTUP_DEADLINE_SECONDS,
                   "start-up recovery done")
        [recovered] = events(dock, "daemon.recovered")
        assert recovered["storage_recovery_failed"] == 1
        wait_until(lambda: alarm_metric(metrics, "storage_recovery_failed") == 1,
                   STARTUP_DEADLINE_SECONDS, "the alarm in the metrics")
        [raised] = [e for e in events(dock, "alarm.raised")
                    if e["alarm"] == "storage_recovery_failed"]
        assert raised["severity"] == "error"
        assert "Permission denied" in str(raised["detail"])
        wait_until(lambda: "storage recovery failed" in str(
            json.loads(dock.cli("status", "--json").stdout)["daemon_status"]),
            STARTUP_DEADLINE_SECONDS, "the alarm in status --json")
        fleet_document = dock.nas / "_fleet" / "dock-test.json"
        wait_until(fleet_document.exists, STARTUP_DEADLINE_SECONDS, "a fleet document")
        published = json.loads(fleet_document.read_text())
        assert [a["kind"] for a in published["alarms"]] == ["storage_recovery_failed"]

        folder.chmod(0o755)
        wait_until(lambda: any(e["alarm"] == "storage_recovery_failed"
                               for e in events(dock, "alarm.cleared")),
                   RETRY_DEADLINE_SECONDS, "the alarm cleared")
        wait_until(lambda: alarm_metric(metrics, "storage_recovery_failed") == 0,
                   STARTUP_DEADLINE_SECONDS, "the alarm cleared in the metrics")
        assert events(dock, "recovery.storage_recovered")
        wait_until(lambda: "ALARM" not in str(
            json.loads(dock.cli("status", "--json").stdout)["daemon_status"]),
            STARTUP_DEADLINE_SECONDS, "the alarm gone from status --json")
    finally:
        folder.chmod(0o755)
        assert dock.stop_daemon(daemon) == 0
