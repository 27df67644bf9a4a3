"""Names from central storage or a camera reach the terminal only escaped.

An escape sequence in an object's name must not repaint the supervisor's terminal, and a
newline in it must not forge a line of output: `audit verify --remote`, the one-line
error of every command and the console log each print such names as text.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.dock import Dock

ESCAPE = "\x1b"


def test_audit_verify_remote_prints_a_planted_key_escaped(dock: Dock) -> None:
    """A manifest-like object named with escape sequences is reported with them escaped."""
    dock.write_config()
    folder = dock.nas / f"CAM{ESCAPE}[31m"
    folder.mkdir(parents=True)
    (folder / f"evil{ESCAPE}[2J.dock-test.clip-99.json").write_text("{}")
    result = dock.cli("audit", "verify", "--remote", check=False)
    assert result.returncode == 1
    assert ESCAPE not in result.stderr + result.stdout
    # the planted anchor's line (another says no anchor of this dock vouches for the ledger)
    [line] = [line for line in result.stderr.splitlines() if line.startswith("clip 99:")]
    assert line.endswith("(anchor CAM\\x1b[31m/evil\\x1b[2J.dock-test.clip-99.json)")


def test_the_error_line_escapes_what_it_names(dock: Dock) -> None:
    """A command's one error line shows a name's control characters escaped."""
    dock.write_config()
    result = dock.cli("ingest", f"/nowhere{ESCAPE}[2J\nforged", "--camera-serial", "X",
                      check=False)
    assert result.returncode != 0
    assert result.stderr == "bwc-dock: /nowhere\\x1b[2J\\x0aforged: not a folder\n"


CONSOLE_CHILD = textwrap.dedent("""
    from bwc_dock.logs import configure_logging, get_logger
    configure_logging("info", "console")
    get_logger("bwc_dock.test").warning("storage.odd", key="a\\x1b[2Jb\\nforged",
                                        path="DCIM/\\u202egnp.MP4")
""")


def test_console_log_lines_escape_field_values() -> None:
    """A console log line shows a key's escape and newline escaped, on one line."""
    finished = subprocess.run([sys.executable, "-c", CONSOLE_CHILD], capture_output=True,
                              text=True, timeout=60, check=True)
    [line] = finished.stderr.splitlines()
    assert ESCAPE not in line
    assert "\u202e" not in line
    assert "key=a\\x1b[2Jb\\x0aforged" in line
    assert "path=DCIM/\\u202egnp.MP4" in line
