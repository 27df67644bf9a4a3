"""Untrusted text shown as text: camera file names, officer ids and values in a
tampered ledger neither break the supervisor's tables nor reach the terminal raw.

Real parts: a camera folder whose files carry the hostile names, the SQLite ledger file
(edited with sqlite3 where a value cannot come from a camera, as whoever owns the dock PC
could), the central-storage folder, and ``bwc-dock`` run both with stdout to a pipe
(plain table) and on a real pseudo-terminal (rich's table).
"""

from __future__ import annotations

import os
import pty
import select
import sqlite3
import subprocess
import time

import pytest

from bwc_dock.cli.tables import shown
from tests.dock import BWC_DOCK, Dock, make_camera

MARKUP_NAME = "DCIM/[/x].MP4"
ESCAPE_NAME = "DCIM/\x1b[31mred.MP4"
OVERRIDE_NAME = "DCIM/\u202egnp.MP4"
OFFICER = "[/b]"
TAMPERED_PROFILE = "\x1b[2Jwiped[bold]"
TAMPERED_ERROR = "gone\x1b]0;title\x07\u202e"
TAMPERED_STAGED_FOLDER = "clips/00000001/\x1b[2Jgone\u202e.MP4"


def hostile_dock(dock: Dock) -> None:
    """A camera with hostile file names, an officer id that is markup, and a ledger whose
    profile name and last error were edited to hold escape sequences."""
    dock.write_config()
    card = dock.root / "card"
    make_camera(card, [100], sidecars=False)
    for name in (MARKUP_NAME, ESCAPE_NAME, OVERRIDE_NAME):
        (card / name).parent.mkdir(parents=True, exist_ok=True)  # "[" is a folder there
        (card / name).write_bytes(os.urandom(200))
    dock.cli("ingest", str(card), "--camera-serial", "CAM1")
    dock.cli("cameras", "assign", "CAM1", OFFICER)
    with sqlite3.connect(dock.ledger_path) as connection:
        connection.execute("UPDATE cameras SET profile_name = ?", (TAMPERED_PROFILE,))
        connection.execute("UPDATE clips SET last_error = ?", (TAMPERED_ERROR,))


def on_terminal(dock: Dock, *arguments: str) -> tuple[int, bytes]:
    """Run ``bwc-dock`` with a pseudo-terminal as stdout; (exit code, what it printed)."""
    leader, follower = pty.openpty()
    environment = {**dock.environment(), "COLUMNS": "250", "TERM": "xterm"}
    process = subprocess.Popen(
        [BWC_DOCK, *arguments], stdout=follower, stderr=subprocess.PIPE, env=environment
    )
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=60), bytes(output)


def test_escaping_shows_controls_and_overrides_as_escapes() -> None:
    """Controls, format characters and separators become escapes; text stays text."""
    assert shown("a\x1b[31mb") == "a\\x1b[31mb"
    assert shown("\u202egnp.MP4") == "\\u202egnp.MP4"
    assert shown("line\u2028two\x7f") == "line\\u2028two\\x7f"
    assert shown("[/x] Ünïcode tab\t") == "[/x] Ünïcode tab\\x09"
    assert shown(None) == "-"


def test_clips_and_cameras_print_every_row_of_hostile_text(dock: Dock) -> None:
    """`clips` and `cameras` to a pipe: every row, exit 0, the names as text, no raw ESC
    byte and no raw right-to-left override."""
    hostile_dock(dock)

    clips = dock.cli("clips")
    cameras = dock.cli("cameras")

    for output in (clips.stdout, cameras.stdout):
        assert "\x1b" not in output and "\u202e" not in output and "\x07" not in output
    assert MARKUP_NAME in clips.stdout
    assert "\\x1b[31mred.MP4" in clips.stdout
    assert clips.stdout.count("CAM1") == 4  # every clip listed
    assert OFFICER in cameras.stdout
    assert "\\x1b[2Jwiped[bold]" in cameras.stdout


def test_tables_on_a_terminal_draw_hostile_text_as_text(dock: Dock) -> None:
    """On a terminal (rich's tables) the same: every row, exit 0, markup shown literally,
    and none of the ledger's escape sequences reaches the terminal."""
    hostile_dock(dock)

    for arguments, expected in (
        (("clips",), [MARKUP_NAME, "\\x1b[31mred.MP4", "CAM1"]),
        (("cameras",), [OFFICER, "\\x1b[2Jwiped[bold]"]),
        (("status",), ["discovered"]),
    ):
        code, output = on_terminal(dock, *arguments)
        text = output.decode("utf-8", "replace")
        assert code == 0, text
        for fragment in expected:
            assert fragment in text, (arguments, fragment, text)
        for raw in ("\x1b[31mred", "\x1b[2J", "\x1b]0;", "\u202e"):
            assert raw not in text, (arguments, raw)


@pytest.mark.parametrize(("command", "stream", "escaped"), [
    (("resync", "--dry-run"), "stdout", "/\\x1b[2Jgone\\u202e.MP4/31mred.MP4"),
    (("verify",), "stderr", "/\\x1b[2Jgone\\u202e.MP4/31mred.MP4: missing"),
    (("status",), "stdout", "last error: gone\\x1b]0;title\\x07\\u202e\n"),
], ids=["resync", "verify", "status"])
def test_other_human_outputs_escape_hostile_text(
    dock: Dock, command: tuple[str, ...], stream: str, escaped: str
) -> None:
    """`status`, `resync` and `verify` print the tampered ledger's text, escaped, and
    nothing of it raw (each is made to name it: a staged folder and a last error)."""
    hostile_dock(dock)
    with sqlite3.connect(dock.ledger_path) as connection:
        connection.execute(
            "INSERT INTO daemon_heartbeat (id, host, pid, started_at, beat_at, status_line, "
            "last_error) VALUES (1, 'elsewhere', 1, '2026-01-01 00:00:00.000000', "
            "'2026-01-01 00:00:00.000000', '', ?)",
            (TAMPERED_ERROR,),
        )
        # the staged folder of the first clip (whose name had the ESC) edited to hold
        # escape sequences: resync and verify then name it
        connection.execute("UPDATE clips SET staged_path = ? WHERE id = 1",
                           (TAMPERED_STAGED_FOLDER,))
    done = dock.cli(*command, check=False)
    assert done.returncode in (0, 1), done.stderr
    assert escaped in getattr(done, stream), (done.stdout, done.stderr)
    for output in (done.stdout, done.stderr):
        assert "\x1b" not in output and "\u202e" not in output and "\x07" not in output
