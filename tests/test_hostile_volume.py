"""A hostile camera folder: refused entry by entry, nothing written outside staging."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.dock import Dock, central_objects, sha256_of
from tests.realparts import need_root
from tests.treesnapshot import NO_DIFFERENCES, Snapshot, differences, tree_snapshot

# what the hostile links point at: a dock that followed them could change these
LINK_TARGETS = (Path("/etc/passwd"),)


def _outside(dock: Dock) -> tuple[Snapshot, Snapshot, set[str]]:
    """Everything the run could touch outside state/ and nas/: the dock's folder with the
    camera and config in it (whole tree), the entries beside the dock's folder, the files
    the camera's links point at, and the names in / (where root-link leads)."""
    dock_tree = tree_snapshot(dock.root, exclude=("state", "nas"))
    around = {f"{dock.root.parent.name}/{entry.name}": ("entry", 0, 0, 0, "")
              for entry in dock.root.parent.iterdir()}
    for target in LINK_TARGETS:
        status = target.stat()
        around[str(target)] = ("file", status.st_mode, status.st_size, status.st_mtime_ns,
                               sha256_of(target))
    return dock_tree, around, {entry.name for entry in Path("/").iterdir()}


def _hostile_camera(camera: Path) -> dict[str, str]:
    """Build the hostile tree; return {path: sha256} of the good clips in it."""
    dcim = camera / "DCIM" / "100BWC"
    dcim.mkdir(parents=True)
    good = {}
    for name in ("GOOD0001.MP4", "a..b.MP4", "...MP4", "empty.MP4"):
        (dcim / name).write_bytes(b"" if name == "empty.MP4" else name.encode() * 1000)
        good[f"DCIM/100BWC/{name}"] = sha256_of(dcim / name)
    newline = os.fsencode(dcim) + b"/bad\nname.MP4"
    invalid_utf8 = os.fsencode(dcim) + b"/\xff\xfe-clip.MP4"
    for raw in (newline, invalid_utf8):
        with open(raw, "wb") as clip:
            clip.write(b"odd but real video")
    (dcim / "passwd.MP4").symlink_to("/etc/passwd")
    (camera / "DCIM" / "root-link").symlink_to("/")
    os.mkfifo(dcim / "fifo.MP4")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(dcim / "sock.MP4"))
    listener.close()
    os.mknod(dcim / "null.MP4", 0o600 | 0o020000, os.makedev(1, 3))  # a character device
    with (dcim / "GIANT.MP4").open("wb") as giant:  # sparse: huge size, no disk used
        giant.truncate(3 * 1024 * 1024)
    deep = camera / "DEEP"
    for level in range(50):  # 50 levels x 100 files = 5,000 files, not clips
        deep = deep / f"d{level}"
        deep.mkdir(parents=True)
        for number in range(100):
            (deep / f"f{number}.DAT").write_bytes(b"x")
        if level in (5, 45):  # a clip deep but allowed, and one too deep to reach
            (deep / f"DEEP{level}.MP4").write_bytes(b"deep clip")
    good["DEEP/d0/d1/d2/d3/d4/d5/DEEP5.MP4"] = sha256_of(
        camera / "DEEP/d0/d1/d2/d3/d4/d5/DEEP5.MP4")
    return good


def test_hostile_folder_is_refused_entry_by_entry(dock: Dock) -> None:
    """Symlinks, FIFOs, sockets, devices, giant files and too-deep trees are refused; good
    clips (odd names included) arrive; nothing is written outside staging and storage."""
    need_root()  # mknod of a device node needs root
    dock.write_config(dock={"max_clip_size_gb": 0.002, "max_scan_depth": 40})
    camera = dock.root / "card"
    good = _hostile_camera(camera)
    outside_before = _outside(dock)

    result = dock.cli("ingest", str(camera), "--camera-serial", "EVIL1", "--wait")

    reasons = [line for line in result.stderr.splitlines() if "scan.refused" in line]
    for path, reason in [("passwd.MP4", "symlink"), ("root-link", "symlink"),
                         ("fifo.MP4", "fifo"), ("sock.MP4", "socket"),
                         ("null.MP4", "device node"), ("GIANT.MP4", "too large"),
                         ("/d38/d39", "too deep")]:
        assert any(path in line and reason in line for line in reasons), (path, reason)
    clips = dock.clips()
    by_path = {c["source_path"]: c for c in clips}
    for path, sha256 in good.items():
        assert by_path[path]["state"] == "uploaded"
        assert by_path[path]["sha256"] == sha256
    odd = [c for c in clips if "name.MP4" in c["source_path"] or "-clip.MP4" in c["source_path"]]
    assert {c["source_path"] for c in odd} == {"DCIM/100BWC/bad\\x0aname.MP4",
                                               "DCIM/100BWC/\\xff\\xfe-clip.MP4"}
    assert all(c["state"] == "uploaded" for c in clips)
    stored = central_objects(dock.nas)
    assert sha256_of(Path("/etc/passwd")) not in stored.values()
    for key in stored:  # keys are built from sanitised names only
        assert "\n" not in key and ".." not in key.split("/")
    # nothing outside state/ and nas/ was added, removed or changed: not the camera, not
    # the config, not what the links point at; / has no new entry named like the camera's
    dock_before, around_before, root_before = outside_before
    dock_after, around_after, root_after = _outside(dock)
    assert differences(dock_before, dock_after) == NO_DIFFERENCES
    assert differences(around_before, around_after) == NO_DIFFERENCES
    camera_names = {Path(path).name for path in dock_before if path.startswith("card")}
    assert not (root_after - root_before) & camera_names, root_after - root_before
    assert "DEEP45.MP4" not in str(by_path)
    assert f"{len(good) + 2} clips" in result.stdout  # the good ones and the two odd names
