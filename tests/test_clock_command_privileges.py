"""A camera profile's clock command under the privileges bwc-dock.service gives the daemon
(uid 0, an empty capability bounding set): it runs, with no capability in any set and
no_new_privs, and its reading is recorded; `bwc-dock config check` warns about a command
that cannot run as configured.

Real parts: `bwc-dock ingest` (the clocks entry point the daemon uses) under
`setpriv --bounding-set=-all`, a real SQLite ledger and folder store, a real clock command
(sh, grep and date) that checks its own privileges in /proc/self/status.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from typing import Any

from tests.dock import BWC_DOCK, Dock

# prints the dock's time plus 93 s only when it holds no capability in any set and
# cannot gain one (no_new_privs); prints nothing, and fails, otherwise
LEAST_PRIVILEGE_PLUS_93_SECONDS = [
    "/bin/sh", "-c",
    "for field in CapInh CapPrm CapEff CapBnd CapAmb; do "
    'grep -q "^$field:[[:space:]]*0000000000000000$" /proc/self/status || exit 3; done; '
    'grep -q "^NoNewPrivs:[[:space:]]*1$" /proc/self/status || exit 4; '
    'date -u -d "+93 seconds" +%Y-%m-%dT%H:%M:%S.%N+00:00',
]


def _profile(**clock: Any) -> dict[str, Any]:
    return {"name": "ny", "serial_source": "folder", "clock": "utc", **clock}


def test_a_clock_command_runs_under_the_services_privileges(dock: Dock) -> None:
    """Under an empty capability bounding set the clock command runs without any
    capability and with no_new_privs, and its +93 s reading is the docking's offset."""
    dock.write_config(camera=[_profile(clock_command=LEAST_PRIVILEGE_PLUS_93_SECONDS)])
    card = dock.root / "cards" / "NY1"
    (card / "DCIM").mkdir(parents=True)
    (card / "DCIM" / "clip.MP4").write_bytes(b"clip" * 100)
    result = subprocess.run(
        ["setpriv", "--bounding-set=-all", "--", BWC_DOCK, "ingest", str(card),
         "--camera-serial", "NY1", "--wait"],
        capture_output=True, text=True, env=dock.environment(), check=False, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with sqlite3.connect(dock.ledger_path) as connection:
        [row] = connection.execute(
            "SELECT details FROM audit_log WHERE event = 'docking.clocks'").fetchall()
    clocks = json.loads(row[0])
    assert clocks["camera_clock_problem"] is None
    assert clocks["camera_clock_source"] == "command"
    assert round(clocks["camera_clock_offset_seconds"]) == 93
    [clip] = dock.clips("--camera", "NY1")
    assert round(clip["camera_clock_offset_seconds"]) == 93


def test_config_check_warns_about_a_clock_command_that_cannot_run(dock: Dock) -> None:
    """A clock command whose program does not exist, and a clock set command in /tmp
    (hidden from the service by PrivateTmp=), are each named in a warning."""
    hidden = dock.root / "set-clock"
    hidden.write_text("#!/bin/sh\n")
    hidden.chmod(0o755)
    dock.write_config(camera=[_profile(clock_command=["/opt/vendor/no-such-reader"],
                                       clock_set_command=[str(hidden)])])
    result = dock.cli("config", "check")
    assert ("warning: camera 'ny' clock_command: '/opt/vendor/no-such-reader' is not an "
            "executable file") in result.stderr
    assert (f"warning: camera 'ny' clock_set_command: {hidden} is hidden from "
            "bwc-dock.service (ProtectHome=, PrivateTmp=)") in result.stderr
