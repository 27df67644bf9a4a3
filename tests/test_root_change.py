"""A storage folder that is not the one of the daemon's last run (the share swapped while
it was stopped): the next start raises storage_root_changed, re-checks every delivered
clip with resync's own code, re-uploads what the new folder lacks, and then clears the
alarm (a real daemon, a real folder store)."""

from __future__ import annotations

from tests.dock import Dock, make_camera, sha256_of, wait_until

# stops a hung test only; a start and two uploads on a busy 2-core machine take seconds
DEADLINE_SECONDS = 180.0


def events(dock: Dock, name: str) -> list[dict[str, object]]:
    if not (dock.root / "daemon.log").exists():
        return []
    return [e for e in dock.log_events() if e.get("event") == name]


def run_once_to_recovery(dock: Dock) -> None:
    """Start the daemon, wait for its start-up recovery, stop it."""
    before = len(events(dock, "daemon.recovered"))
    daemon = dock.start_daemon()
    try:
        wait_until(lambda: len(events(dock, "daemon.recovered")) > before, DEADLINE_SECONDS,
                   "start-up recovery done")
    finally:
        assert dock.stop_daemon(daemon) == 0


def test_a_swapped_storage_folder_is_rechecked_and_refilled_at_the_next_start(
    dock: Dock,
) -> None:
    """Two clips delivered, the daemon run once, then the share swapped for an empty one
    (with its marker): the next start raises storage_root_changed, re-uploads both clips
    from staging to the new folder, and clears the alarm once a re-check finds nothing."""
    camera = dock.root / "card"
    make_camera(camera, [1000, 2000], sidecars=False)
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    clips = dock.clips()
    assert [clip["state"] for clip in clips] == ["uploaded", "uploaded"]
    run_once_to_recovery(dock)  # it notes which folder it used
    dock.nas.rename(dock.root / "old-share")
    dock.nas.mkdir()
    (dock.nas / ".bwc-dock-store").touch()  # another share, marked as the admin would

    daemon = dock.start_daemon()
    try:
        wait_until(lambda: any(e["alarm"] == "storage_root_changed"
                               for e in events(dock, "alarm.raised")),
                   DEADLINE_SECONDS, "storage_root_changed raised")
        wait_until(lambda: any(e["alarm"] == "storage_root_changed"
                               for e in events(dock, "alarm.cleared")),
                   DEADLINE_SECONDS, "storage_root_changed cleared after a clean re-check")
    finally:
        assert dock.stop_daemon(daemon) == 0
    [found] = events(dock, "storage.root_recheck_found")
    assert found["requeued"] == 2 and found["unrepairable"] == 0
    for clip in dock.clips():
        assert clip["state"] == "uploaded"
        assert sha256_of(dock.nas / clip["remote_key"]) == clip["sha256"]
    assert events(dock, "storage.root_rechecked")

    run_once_to_recovery(dock)  # the same folder again: no alarm
    raised = [e for e in events(dock, "alarm.raised") if e["alarm"] == "storage_root_changed"]
    assert len(raised) == 1
