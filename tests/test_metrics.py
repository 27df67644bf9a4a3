"""The Prometheus textfile: valid exposition format, written atomically for node_exporter."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bwc_dock.alarms import AlarmBoard, AlarmKind, Observation
from bwc_dock.config import AlarmsConfig
from bwc_dock.metrics import MetricsSnapshot, render, write_textfile


def snapshot(**changes: object) -> MetricsSnapshot:
    values: dict[str, object] = {
        "dock_id": 'dock-01 "front desk"',
        "clips_by_state": {"discovered": 3, "staged": 37, "uploaded": 120, "quarantined": 0},
        "bytes_copied_total": 5 * 1024**3,
        "bytes_uploaded_total": 4 * 1024**3,
        "oldest_pending_seconds": 5400.5,
        "cameras_docked": 2,
        "staging_free_bytes": 80 * 1024**3,
        "storage_reachable": True,
        "errors_total": {"upload": 4, "copy": 1},
        "alarms": {"oldest_pending": False, "quarantined": True},
        "last_loop_timestamp": 1_740_000_000.25,
    }
    values.update(changes)
    return MetricsSnapshot(**values)  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse with prometheus_client's own parser: (name, labels without dock) -> value."""
    parsed = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "dock"))
            parsed[(sample.name, labels)] = sample.value
    return parsed


def test_render_is_valid_exposition_format_with_every_figure() -> None:
    """Counts by state, bytes moved, oldest pending age, errors and alarms parse back exactly."""
    parsed = samples(render(snapshot()))
    assert parsed[("bwc_dock_clips", (("state", "staged"),))] == 37
    assert parsed[("bwc_dock_clips", (("state", "quarantined"),))] == 0
    assert parsed[("bwc_dock_bytes_total", (("step", "copied"),))] == 5 * 1024**3
    assert parsed[("bwc_dock_bytes_total", (("step", "uploaded"),))] == 4 * 1024**3
    assert parsed[("bwc_dock_oldest_pending_seconds", ())] == 5400.5
    assert parsed[("bwc_dock_errors_total", (("kind", "upload"),))] == 4
    assert parsed[("bwc_dock_alarm", (("alarm", "quarantined"),))] == 1
    assert parsed[("bwc_dock_alarm", (("alarm", "oldest_pending"),))] == 0
    assert parsed[("bwc_dock_cameras_docked", ())] == 2
    assert parsed[("bwc_dock_storage_reachable", ())] == 1
    assert parsed[("bwc_dock_last_loop_timestamp_seconds", ())] == 1_740_000_000.25
    assert len(parsed) == 15


def test_types_and_escaped_labels() -> None:
    """Counters are typed as counters and a dock id with quotes survives escaping."""
    parsed = text_string_to_metric_families(render(snapshot()))
    families = {family.name: family for family in parsed}
    assert families["bwc_dock_bytes"].type == "counter"
    assert families["bwc_dock_errors"].type == "counter"
    assert families["bwc_dock_clips"].type == "gauge"
    dock_ids = {sample.labels["dock"] for family in families.values() for sample in family.samples}
    assert dock_ids == {'dock-01 "front desk"'}
    escaped = render(snapshot(dock_id="a\\b\nc"))
    assert 'dock="a\\\\b\\nc"' in escaped
    families_back = text_string_to_metric_families(escaped)
    assert {s.labels["dock"] for f in families_back for s in f.samples} == {"a\\b\nc"}


def test_nothing_pending_is_age_zero_and_unknown_storage_is_left_out() -> None:
    """An empty queue reports age 0; an unprobed storage is absent rather than a guess."""
    parsed = samples(render(snapshot(oldest_pending_seconds=None, storage_reachable=None)))
    assert parsed[("bwc_dock_oldest_pending_seconds", ())] == 0
    assert not any(name == "bwc_dock_storage_reachable" for name, _ in parsed)


def test_unknown_staging_free_space_is_left_out_not_zero() -> None:
    """Staging free space that could not be read is absent from the textfile, never 0."""
    parsed = samples(render(snapshot(staging_free_bytes=None)))
    assert not any(name == "bwc_dock_staging_free_bytes" for name, _ in parsed)


def test_write_replaces_the_file_atomically(tmp_path: Path) -> None:
    """Each write is a new inode swapped in by rename, readable by node_exporter's user."""
    target = tmp_path / "bwc_dock.prom"
    write_textfile(target, snapshot(cameras_docked=1))
    first_inode = target.stat().st_ino
    write_textfile(target, snapshot(cameras_docked=3))
    assert target.stat().st_ino != first_inode
    assert samples(target.read_text())[("bwc_dock_cameras_docked", ())] == 3
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["bwc_dock.prom"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    """When the rename fails the previous snapshot stays and no temporary file is left."""
    target = tmp_path / "bwc_dock.prom"
    target.mkdir()  # os.replace of a file onto a directory fails
    (target / "keep").write_text("old")
    with pytest.raises(IsADirectoryError):
        write_textfile(target, snapshot())
    assert sorted(os.listdir(tmp_path)) == ["bwc_dock.prom"]
    assert (target / "keep").read_text() == "old"


def test_alarm_board_states_feed_the_alarm_gauges() -> None:
    """Every alarm kind from the AlarmBoard appears, 1 when active and 0 when not."""
    alarms = AlarmBoard(AlarmsConfig())
    now = datetime(2025, 3, 1, tzinfo=UTC)
    alarms.observe(Observation(now=now, oldest_pending_at=None, staging_free_bytes=0,
                               staging_reserve_bytes=1024**3, quarantined_clips=2))
    parsed = samples(render(snapshot(alarms=alarms.states())))
    gauges = {labels[0][1]: value for (name, labels), value in parsed.items()
              if name == "bwc_dock_alarm"}
    assert gauges == {kind.value: 0 for kind in AlarmKind} | {
        "staging_low": 1, "quarantined": 1,
    }


def test_missing_directory_raises() -> None:
    """A textfile folder that does not exist is an error the caller logs, not a silent skip."""
    with pytest.raises(FileNotFoundError):
        write_textfile(Path("/nonexistent-bwc-dock-dir/bwc_dock.prom"), snapshot())
