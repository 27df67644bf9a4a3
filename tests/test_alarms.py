"""AlarmBoard: each alarm is raised once when its condition starts and cleared once when it ends."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import structlog
from structlog.testing import capture_logs

from bwc_dock.alarms import (
    AlarmBoard,
    AlarmKind,
    DockedCamera,
    Observation,
    StorageState,
    Transition,
    UnmountableCamera,
    log_transition,
)
from bwc_dock.config import AlarmsConfig

START = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
GIB = 1024**3
MIB = 1024**2


def calm(now: datetime = START) -> Observation:
    """A loop in which nothing is wrong."""
    return Observation(
        now=now,
        oldest_pending_at=now - timedelta(minutes=10),
        staging_free_bytes=50 * GIB,
        staging_reserve_bytes=1 * GIB,
        storage=StorageState.OK,
    )


def board() -> AlarmBoard:
    return AlarmBoard(AlarmsConfig(oldest_pending_hours=12, stalled_offload_minutes=15))


def kinds(transitions: list[Transition]) -> list[tuple[str, bool]]:
    return [(str(transition.alarm.kind), transition.raised) for transition in transitions]


def test_calm_loops_raise_nothing() -> None:
    """With every fact in bounds there are no transitions and no summary."""
    alarms = board()
    for minute in range(5):
        assert alarms.observe(calm(START + timedelta(minutes=minute))) == []
    assert alarms.summary() == ""
    assert not any(alarms.states().values())
    assert set(alarms.states()) == set(AlarmKind)


def test_oldest_pending_raised_once_then_cleared_once() -> None:
    """An old pending clip raises one error however many loops it lasts, and one clear."""
    alarms = board()
    discovered = START - timedelta(hours=11, minutes=59)
    loops = [calm(START + timedelta(minutes=minute)) for minute in range(5)]
    observed = [alarms.observe(replace(loop, oldest_pending_at=discovered)) for loop in loops]
    assert observed[:2] == [[], []]  # 11 h 59 min, then exactly the limit: not older than it
    assert kinds(observed[2]) == [("oldest_pending", True)]
    assert observed[2][0].level == "error"
    assert observed[3:] == [[], []]
    assert alarms.summary() == "ALARM: oldest pending 12 h"
    cleared = alarms.observe(calm(START + timedelta(minutes=6)))
    assert kinds(cleared) == [("oldest_pending", False)]
    assert cleared[0].level == "info"
    assert alarms.observe(calm(START + timedelta(minutes=7))) == []


def test_no_pending_clip_means_no_age_alarm() -> None:
    """An empty queue is never overdue."""
    alarms = board()
    assert alarms.observe(replace(calm(), oldest_pending_at=None)) == []


def test_staging_low_has_hysteresis() -> None:
    """Free space hovering at the reserve does not flap: clearing needs a margin above it."""
    alarms = board()
    reserve = 1 * GIB
    # the clearing margin is the larger of 5 % of the reserve and 64 MiB
    free_values = [reserve - 1, reserve + 1, reserve + 60 * MIB, reserve - 5, reserve + 65 * MIB]
    observed = [
        alarms.observe(replace(calm(), staging_free_bytes=free, staging_reserve_bytes=reserve))
        for free in free_values
    ]
    assert kinds(observed[0]) == [("staging_low", True)]
    assert observed[0][0].level == "warning"
    assert observed[1:4] == [[], [], []]
    assert kinds(observed[4]) == [("staging_low", False)]


def test_unknown_staging_free_space_raises_nothing_and_clears_nothing() -> None:
    """Free space that could not be read is not zero: no staging_low from it, and an
    alarm already raised stays until a real reading clears it."""
    alarms = board()
    unknown = replace(calm(), staging_free_bytes=None)
    assert alarms.observe(unknown) == []
    assert kinds(alarms.observe(replace(calm(), staging_free_bytes=0))) == [("staging_low", True)]
    assert alarms.observe(unknown) == []
    assert [alarm.kind for alarm in alarms.active] == [AlarmKind.STAGING_LOW]
    assert kinds(alarms.observe(calm())) == [("staging_low", False)]


def test_storage_unreachable_only_after_its_grace() -> None:
    """A short outage the uploader rides out raises nothing; a long one raises once."""
    alarms = board()
    down = [
        replace(calm(START + timedelta(minutes=minute)), storage=StorageState.UNREACHABLE,
                storage_error="connection refused")
        for minute in (0, 2, 4)
    ]
    assert [alarms.observe(loop) for loop in down] == [[], [], []]
    assert alarms.observe(calm(START + timedelta(minutes=5))) == []
    # a second, longer outage
    long_down = [replace(loop, now=loop.now + timedelta(minutes=10)) for loop in down]
    later = replace(long_down[-1], now=START + timedelta(minutes=16))
    observed = [alarms.observe(loop) for loop in [*long_down, later]]
    assert observed[:3] == [[], [], []]
    assert kinds(observed[3]) == [("storage_unreachable", True)]
    assert observed[3][0].alarm.detail.endswith(": connection refused")
    assert alarms.summary() == "ALARM: storage unreachable"


def test_refused_credentials_raise_at_once_and_unknown_keeps_state() -> None:
    """Refused credentials are an immediate error; a loop without a probe changes nothing."""
    alarms = board()
    refused = replace(calm(), storage=StorageState.REFUSED, storage_error="403 InvalidAccessKeyId")
    assert kinds(alarms.observe(refused)) == [("storage_refused", True)]
    assert alarms.observe(replace(calm(), storage=StorageState.UNKNOWN)) == []
    assert alarms.states()[AlarmKind.STORAGE_REFUSED]
    assert kinds(alarms.observe(calm())) == [("storage_refused", False)]


def test_refused_then_unreachable_swaps_alarms() -> None:
    """Refusing, then unreachable: one alarm clears, the other is raised after its grace."""
    alarms = board()
    alarms.observe(replace(calm(), storage=StorageState.REFUSED))
    unreachable = replace(calm(START + timedelta(minutes=1)), storage=StorageState.UNREACHABLE)
    assert kinds(alarms.observe(unreachable)) == [("storage_refused", False)]
    later = replace(unreachable, now=START + timedelta(minutes=7))
    assert kinds(alarms.observe(later)) == [("storage_unreachable", True)]


def test_stalled_offload_per_camera_and_idle_camera_is_not_stalled() -> None:
    """A docked camera with clips left and no progress alarms; a finished one left docked not."""
    alarms = board()
    stuck = DockedCamera("X81234567", 4, last_progress_at=START - timedelta(minutes=20))
    finished = DockedCamera("Y1", pending_clips=0, last_progress_at=START - timedelta(hours=9))
    moving = DockedCamera("Z2", pending_clips=9, last_progress_at=START - timedelta(seconds=5))
    raised = alarms.observe(replace(calm(), docked=(stuck, finished, moving)))
    assert kinds(raised) == [("stalled_offload", True)]
    assert raised[0].alarm.camera == "X81234567"
    assert alarms.summary() == "ALARM: camera X81234567 stalled"
    # progress resumes
    resumed = replace(stuck, last_progress_at=START + timedelta(minutes=1))
    cleared = alarms.observe(replace(calm(START + timedelta(minutes=1)), docked=(resumed,)))
    assert kinds(cleared) == [("stalled_offload", False)]


def test_undocking_a_stalled_camera_clears_its_alarm() -> None:
    """When the stalled camera leaves the dock its alarm clears."""
    alarms = board()
    stuck = DockedCamera("X1", pending_clips=1, last_progress_at=START - timedelta(hours=1))
    alarms.observe(replace(calm(), docked=(stuck,)))
    assert kinds(alarms.observe(calm())) == [("stalled_offload", False)]


def test_quarantine_count_refreshes_without_a_second_raise() -> None:
    """More quarantined clips update the summary but do not raise the alarm again."""
    alarms = board()
    assert kinds(alarms.observe(replace(calm(), quarantined_clips=1))) == [("quarantined", True)]
    assert alarms.observe(replace(calm(), quarantined_clips=3)) == []
    assert alarms.summary() == "ALARM: 3 quarantined"


def test_summary_lists_errors_first() -> None:
    """The STATUS text puts errors before warnings."""
    alarms = board()
    alarms.observe(replace(calm(), staging_free_bytes=0, quarantined_clips=2,
                           oldest_pending_at=START - timedelta(hours=13)))
    assert alarms.summary() == "ALARM: oldest pending 13 h, 2 quarantined, staging full"


def test_new_config_applies_on_the_next_observation() -> None:
    """After a reload with a longer limit, an age alarm the new limit allows clears."""
    alarms = board()
    late = replace(calm(), oldest_pending_at=START - timedelta(hours=13))
    assert kinds(alarms.observe(late)) == [("oldest_pending", True)]
    alarms.config = AlarmsConfig(oldest_pending_hours=24)
    assert kinds(alarms.observe(late)) == [("oldest_pending", False)]


def test_transitions_are_logged_as_stable_events() -> None:
    """alarm.raised at the alarm's severity, alarm.cleared at info, with the camera bound."""
    alarms = board()
    stuck = DockedCamera("X1", pending_clips=1, last_progress_at=START - timedelta(hours=1))
    logger = structlog.get_logger()
    with capture_logs() as logs:
        for transition in alarms.observe(replace(calm(), docked=(stuck,))):
            log_transition(logger, transition)
        for transition in alarms.observe(calm()):
            log_transition(logger, transition)
    assert [(entry["event"], entry["log_level"], entry["camera"]) for entry in logs] == [
        ("alarm.raised", "warning", "X1"),
        ("alarm.cleared", "info", "X1"),
    ]
    assert logs[0]["alarm"] == "stalled_offload"
    assert "no progress for 60 min" in logs[0]["detail"]


def test_unmountable_camera_is_an_error_alarm_per_camera_until_it_goes() -> None:
    """A docked camera that cannot be mounted raises one error alarm naming it, shown in
    the summary, and clears once when it is mounted or taken out."""
    alarms = board()
    broken = replace(calm(), unmountable=(UnmountableCamera("X81234567", "bad superblock"),))
    raised = alarms.observe(broken)
    assert kinds(raised) == [("camera_unmountable", True)]
    assert raised[0].alarm.severity == "error"
    assert raised[0].alarm.camera == "X81234567"
    assert "bad superblock" in raised[0].alarm.detail
    assert alarms.observe(replace(broken, now=START + timedelta(minutes=1))) == []
    assert "camera X81234567 unmountable" in alarms.summary()
    assert alarms.states()[AlarmKind.CAMERA_UNMOUNTABLE]
    assert kinds(alarms.observe(calm(START + timedelta(minutes=2)))) == [
        ("camera_unmountable", False)
    ]
