"""A configuration reload (SIGHUP) on a running daemon: what it applies takes effect, what
needs a restart is named in status and the journal, a bad file is refused (real
processes, real signals, a folder as NAS)."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

from tests.dock import Dock, make_camera, sha256_of, wait_until

# Deadlines only stop a hung test: start-up recovery on a loaded 2-core machine has
# needed about 10 s, and an offload of one small clip well under that.
STARTUP_DEADLINE_SECONDS = 120.0
OFFLOAD_DEADLINE_SECONDS = 180.0


def _started(dock: Dock) -> subprocess.Popen[bytes]:
    daemon = dock.start_daemon()
    wait_until(lambda: _events(dock, "daemon.started") != [], timeout=STARTUP_DEADLINE_SECONDS,
               message="daemon started")
    return daemon


def _events(dock: Dock, name: str) -> list[dict[str, Any]]:
    return [e for e in dock.log_events() if e.get("event") == name]


def _reload(dock: Dock, daemon: subprocess.Popen[bytes], event: str) -> dict[str, Any]:
    """Send SIGHUP and wait for the daemon to log ``event`` once more; that event."""
    seen = len(_events(dock, event))
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: len(_events(dock, event)) > seen, timeout=60, message=event)
    return _events(dock, event)[-1]


def _status(dock: Dock) -> dict[str, Any]:
    return json.loads(dock.cli("status", "--json").stdout)  # type: ignore[no-any-return]


def test_reload_watches_a_new_folder_and_docks_it_by_a_new_profile(dock: Dock) -> None:
    """After SIGHUP, a folder added to watch_dirs is watched, and a camera put there is
    named by the camera profile added in the same reload (its serial file), offloaded,
    with nothing said to need a restart."""
    second_watch = dock.root / "watch-2"
    second_watch.mkdir()
    daemon = _started(dock)
    try:
        dock.write_config(
            sources={"watch_dirs": [str(dock.watch_dir), str(second_watch)]},
            camera=[{"name": "card-reader", "serial_source": "file",
                     "serial_file": "SERIAL.TXT"}],
        )
        _reload(dock, daemon, "config.reloaded")
        camera = dock.root / "camera"
        expected = make_camera(camera, [5000], sidecars=False)
        (camera / "SERIAL.TXT").write_text("BWC 77\n")
        camera.rename(second_watch / "CARD1")
        wait_until(lambda: [c["state"] for c in dock.clips()] == ["uploaded"],
                   timeout=OFFLOAD_DEADLINE_SECONDS, message="the clip uploaded")
        status = _status(dock)
        assert daemon.poll() is None
    finally:
        assert dock.stop_daemon(daemon) == 0
    [clip] = dock.clips()
    assert clip["camera_serial"] == "BWC_77"  # the folder name would have been CARD1
    assert clip["sha256"] == expected["DCIM/100BWC/20261124_000001_0001.MP4"]
    assert sha256_of(dock.nas / clip["remote_key"]) == clip["sha256"]
    assert status["restart_needed"] == []
    assert status["config_reload_rejected"] is None


def test_reload_names_what_needs_a_restart_and_refuses_a_bad_file(dock: Dock) -> None:
    """A bad file is refused naming its key and the daemon runs on; a new storage path is
    named as needing a restart in status (JSON and text) and as a journal warning, and
    clips still go to the storage the daemon started with."""
    other_nas = dock.root / "nas-2"
    other_nas.mkdir()
    (other_nas / ".bwc-dock-store").touch()
    good = dock.config_path.read_text()
    daemon = _started(dock)
    try:
        dock.config_path.write_text(good + "\n[alarms]\noldest_pending_hourz = 3\n")
        # `bwc-dock status` itself refuses that file, naming the key: no daemon needed
        rejected = _reload(dock, daemon, "config.reload_rejected")
        assert daemon.poll() is None
        dock.write_config(storage={"path": str(other_nas)})
        reloaded = _reload(dock, daemon, "config.reloaded")
        json_status = _status(dock)
        text_status = dock.cli("status").stdout
        camera = dock.root / "camera"
        make_camera(camera, [3000], sidecars=False)
        camera.rename(dock.watch_dir / "CAM9")
        wait_until(lambda: [c["state"] for c in dock.clips()] == ["uploaded"],
                   timeout=OFFLOAD_DEADLINE_SECONDS, message="the clip uploaded")
        assert daemon.poll() is None
    finally:
        assert dock.stop_daemon(daemon) == 0
    assert "alarms.oldest_pending_hourz: unknown key" in rejected["error"]
    assert reloaded["restart_needed"] == ["storage.path"]
    [warning] = _events(dock, "config.restart_needed")
    assert warning["level"] == "warning"
    assert warning["keys"] == ["storage.path"]
    assert json_status["restart_needed"] == ["storage.path"]
    assert json_status["config_reload_rejected"] is None
    assert "RESTART NEEDED" in text_status
    assert "storage.path" in text_status
    [clip] = dock.clips()
    assert sha256_of(dock.nas / clip["remote_key"]) == clip["sha256"]
    assert not (other_nas / clip["remote_key"]).exists()
