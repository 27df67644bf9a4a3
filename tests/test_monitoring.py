"""The shipped Prometheus rules: valid for promtool, and in step with the textfile the daemon
really writes (one alert per alarm kind, with its severity, and one for a silent dock)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bwc_dock.alarms import _SEVERITY, AlarmKind
from bwc_dock.metrics import MetricsSnapshot, render
from tests.realparts import need_command

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
RULES = MONITORING / "bwc-dock.rules.yml"
# promtool evaluates from time 0 in steps of one minute; alerts are read at the end
STEPS = 10
EVAL_TIME = f"{STEPS}m"


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_command("promtool"), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def alert_name(kind: AlarmKind) -> str:
    """The rule's name for an alarm kind: oldest_pending -> BwcDockOldestPending."""
    return "BwcDock" + "".join(part.capitalize() for part in str(kind).split("_"))


def snapshot(active: set[AlarmKind], last_loop_timestamp: float = 0.0) -> MetricsSnapshot:
    return MetricsSnapshot(
        dock_id="dock-01",
        clips_by_state={"staged": 3, "uploaded": 40, "quarantined": 0},
        bytes_copied_total=10,
        bytes_uploaded_total=5,
        oldest_pending_seconds=60.0,
        cameras_docked=1,
        staging_free_bytes=1024,
        storage_reachable=True,
        alarms={str(kind): kind in active for kind in AlarmKind},
        last_loop_timestamp=last_loop_timestamp,
    )


def input_series(text: str, loop_keeps_running: bool) -> list[dict[str, str]]:
    """The textfile's samples as promtool input series, constant over the test, except the
    last-loop timestamp, which follows the clock while the loop runs and stops otherwise."""
    series = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{name}="{value}"' for name, value in sample.labels.items())
            values = f"{sample.value:g}x{STEPS}"
            if sample.name == "bwc_dock_last_loop_timestamp_seconds" and loop_keeps_running:
                values = f"0+60x{STEPS}"
            series.append({"series": f"{sample.name}{{{labels}}}", "values": values})
    return series


def run_expectation(
    tmp_path: Path, text: str, expected: list[dict[str, str]], *, loop_keeps_running: bool = True
) -> subprocess.CompletedProcess[str]:
    samples = [
        {
            "labels": "ALERTS{"
            + ",".join(f'{name}="{value}"' for name, value in sorted(labels.items()))
            + "}",
            "value": 1,
        }
        for labels in expected
    ]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series(text, loop_keeps_running),
                "promql_expr_test": [
                    {
                        "expr": 'ALERTS{alertstate="firing"}',
                        "eval_time": EVAL_TIME,
                        "exp_samples": samples,
                    }
                ],
            }
        ],
    }
    path = tmp_path / "generated.test.json"  # JSON is YAML to promtool
    path.write_text(json.dumps(test))
    return promtool("test", "rules", str(path))


def test_shipped_rules_pass_promtool_check_and_their_unit_tests() -> None:
    """`promtool check rules` accepts the rules; `promtool test rules` passes their tests."""
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for test_file in sorted(MONITORING.glob("*.test.yml")):
        tested = promtool("test", "rules", str(test_file))
        assert tested.returncode == 0, tested.stdout + tested.stderr


def test_each_alarm_kind_in_the_real_textfile_fires_its_own_alert(tmp_path: Path) -> None:
    """For every AlarmKind the daemon can raise, its textfile line fires one alert of the
    alarm's severity naming the dock; with no alarm and a running loop nothing fires."""
    quiet = run_expectation(tmp_path, render(snapshot(set())), [])
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    for kind in AlarmKind:
        expected = {
            "alertname": alert_name(kind),
            "alertstate": "firing",
            "alarm": str(kind),
            "dock": "dock-01",
            "severity": "critical" if _SEVERITY[kind] == "error" else "warning",
        }
        result = run_expectation(tmp_path, render(snapshot({kind})), [expected])
        assert result.returncode == 0, f"{kind}:\n{result.stdout}{result.stderr}"


def test_a_textfile_whose_loop_stopped_fires_the_silent_alert(tmp_path: Path) -> None:
    """The last-loop timestamp the daemon writes, frozen for ten minutes: BwcDockSilent."""
    expected = {
        "alertname": "BwcDockSilent",
        "alertstate": "firing",
        "dock": "dock-01",
        "severity": "critical",
    }
    text = render(snapshot(set()))
    result = run_expectation(tmp_path, text, [expected], loop_keeps_running=False)
    assert result.returncode == 0, result.stdout + result.stderr
