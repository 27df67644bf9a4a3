"""A NAS that is not mounted, or is mounted under a running dock, never silently becomes
central storage (a real tmpfs as the NAS, mounted in a private mount namespace)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests import realparts

# Runs inside `unshare --mount`: mounts happen in a namespace of their own and vanish
# with it. Prints one JSON object of what each step gave.
SCRIPT = r'''
import json, os, subprocess, sys
from pathlib import Path
from bwc_dock.config import parse_config
from bwc_dock.errors import StorageError
from bwc_dock.storage.filesystem import FileBackend

nas = Path(sys.argv[1])
def attempt(backend, key):
    try:
        backend.put_bytes(key, b"evidence", {})
        return "stored"
    except StorageError as error:
        return type(error).__name__ + ": " + str(error)

result = {}
config = parse_config({"dock": {"id": "dock-a", "state_dir": sys.argv[2]},
                       "storage": {"backend": "file", "path": str(nas)}})
default = FileBackend.from_config(config)
result["unmounted"] = attempt(default, "CAM1/a.bin")
result["local_files"] = sorted(os.listdir(nas))
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(nas)], check=True)
(nas / ".bwc-dock-store").touch()  # the administrator's marker, on the share
result["mounted"] = attempt(default, "CAM1/b.bin")
result["on_share"] = sorted(os.listdir(nas / "CAM1"))
subprocess.run(["umount", str(nas)], check=True)

unmarked = FileBackend(nas, "dock-a")  # marker check turned off: store_marker = ""
result["before_mount"] = attempt(unmarked, "CAM2/c.bin")
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(nas)], check=True)
result["after_mount"] = attempt(unmarked, "CAM2/d.bin")
print(json.dumps(result))
'''


def test_unmounted_or_late_mounted_nas_is_refused(tmp_path: Path) -> None:
    """No marker file: nothing is written to the local folder; the marked share mounted
    there is used; a share mounted under a dock that had written locally is refused."""
    realparts.need_root()
    realparts.need_command("unshare")
    nas = tmp_path / "nas"
    nas.mkdir()
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c",
         SCRIPT, str(nas), str(tmp_path / "state")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads(result.stdout.splitlines()[-1])
    assert steps["unmounted"].startswith("TransientStorageError: ")
    assert ".bwc-dock-store" in steps["unmounted"]
    assert steps["local_files"] == []
    assert steps["mounted"] == "stored"
    assert steps["on_share"] == ["b.bin"]
    assert steps["before_mount"] == "stored"
    assert steps["after_mount"].startswith("PermanentStorageError: ")
    assert "bwc-dock resync" in steps["after_mount"]
    assert sorted(path.name for path in nas.rglob("*")) == ["CAM2", "c.bin"]
