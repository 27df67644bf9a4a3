"""Every file bwc-dock publishes goes through durable.py's one crash-safe write: a
temporary ``.part`` name in the destination's folder, fsync, rename (or create-only
link), fsync of the folder. The scan below finds every other call in the package that
writes, renames or links a file; each one left is listed with the reason it is not a
publish through durable.py."""

from __future__ import annotations

import ast
import os
import secrets
from pathlib import Path

import pytest

from bwc_dock.durable import (
    PendingFile,
    TemporaryNameTaken,
    open_folder,
    write_durably,
    write_durably_at,
)
from tests.dock import Dock, make_camera

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "bwc_dock"
_WRITE_MODE_LETTERS = frozenset("wax+")
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT")

# (file, call) -> why that call may write outside durable.py's write. Counted: a second
# such call in the same file fails the test until it is looked at and listed.
ALLOWED: dict[tuple[str, str], tuple[int, str]] = {
    ("durable.py", "os.open"): (1, "the one crash-safe write: the temporary file"),
    ("durable.py", "os.link"): (1, "the one crash-safe write: create-only publish"),
    ("durable.py", "os.replace"): (2, "the one crash-safe write: publish, and the"
                                      " durable rename of a staged copy"),
    ("disclosure/bag.py", "tempfile.mkdtemp"): (1, "a bag is a folder: built under a"
                                                   " .part work folder"),
    ("disclosure/bag.py", "open"): (2, "files inside the .part work folder, fsynced with it"
                                       " (_sync_tree) before the folder is renamed"),
    ("disclosure/bag.py", ".rename"): (1, "the finished, fsynced bag folder renamed into"
                                          " place, then its parent fsynced (_publish)"),
    ("disclosure/verify_bag.py", "tempfile.mkdtemp"): (1, "rebag: a stand-alone script"
                                                          " (standard library only) that"
                                                          " cannot import durable.py"),
    ("disclosure/verify_bag.py", ".write_text"): (4, "rebag: files inside its .part work"
                                                     " folder"),
    ("disclosure/verify_bag.py", ".write_bytes"): (1, "rebag: bagit.txt in its work folder"),
    ("disclosure/verify_bag.py", "shutil.copyfile"): (1, "rebag: files copied into its work"
                                                         " folder"),
    ("disclosure/verify_bag.py", "os.replace"): (1, "rebag: the work folder renamed into"
                                                    " place between two os.sync() calls"),
    ("fleet_keys.py", ".write_text"): (2, "the allowed-signers line and the signature for"
                                          " one ssh-keygen -Y verify, in a scratch folder"
                                          " removed after; never published"),
    ("cli/disclose.py", "tempfile.NamedTemporaryFile"): (1, "a scratch allowed-signers file"
                                                            " for ssh-keygen, never"
                                                            " published, removed after"),
}


def _assigned_text(tree: ast.AST) -> dict[str, str]:
    """Every name assigned in the module -> the source of what it was assigned (flags
    are often built in a variable before os.open)."""
    assigned: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name | ast.Attribute):
                    key = target.id if isinstance(target, ast.Name) else target.attr
                    assigned[key] = assigned.get(key, "") + ast.unparse(node.value)
    return assigned


def _mode_writes(call: ast.Call, position: int) -> bool:
    mode = call.args[position] if len(call.args) > position else None
    for keyword in call.keywords:
        if keyword.arg == "mode":
            mode = keyword.value
    return (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
            and bool(set(mode.value) & _WRITE_MODE_LETTERS))


def _os_open_writes(call: ast.Call, assigned: dict[str, str]) -> bool:
    flags = ast.unparse(call.args[1]) if len(call.args) > 1 else ""
    names = [node.id for node in ast.walk(call.args[1]) if isinstance(node, ast.Name)] \
        if len(call.args) > 1 else []
    text = flags + "".join(assigned.get(name, "") for name in names)
    return any(flag in text for flag in _WRITE_FLAGS)


def _writing_call(call: ast.Call, assigned: dict[str, str]) -> str | None:
    """How ``call`` writes, renames or links a file ("os.replace", ".write_text", ...)."""
    function = call.func
    if isinstance(function, ast.Name):
        return "open" if function.id == "open" and _mode_writes(call, 1) else None
    if not isinstance(function, ast.Attribute):
        return None
    owner = function.value.id if isinstance(function.value, ast.Name) else None
    name = function.attr
    if owner == "os":
        if name == "open":
            return "os.open" if _os_open_writes(call, assigned) else None
        if name == "fdopen":
            return "os.fdopen" if _mode_writes(call, 1) else None
        return f"os.{name}" if name in {"replace", "rename", "link", "symlink"} else None
    if owner == "shutil" and name in {"copy", "copy2", "copyfile", "copytree", "move"}:
        return f"shutil.{name}"
    if owner == "tempfile" and name in {"mkstemp", "mkdtemp", "NamedTemporaryFile"}:
        return f"tempfile.{name}"
    if name in {"write_text", "write_bytes", "touch", "symlink_to", "hardlink_to", "rename"}:
        return f".{name}"
    if name == "replace" and len(call.args) == 1 and not call.keywords:  # Path, not str
        return ".replace"
    return ".open" if name == "open" and _mode_writes(call, 0) else None


def writing_calls(source: str) -> list[str]:
    """Each call in ``source`` that writes, renames or links a file, in source order."""
    tree = ast.parse(source)
    assigned = _assigned_text(tree)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    calls.sort(key=lambda node: (node.lineno, node.col_offset))
    return [kind for node in calls if (kind := _writing_call(node, assigned)) is not None]


def test_every_publishing_write_goes_through_durable() -> None:
    """No module writes, renames or links a file itself except the calls listed above,
    each with its reason: everything else publishes through durable.py."""
    found: dict[tuple[str, str], int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for kind in writing_calls(path.read_text()):
            where = (path.relative_to(PACKAGE).as_posix(), kind)
            found[where] = found.get(where, 0) + 1
    assert found == {where: count for where, (count, _reason) in ALLOWED.items()}


def test_the_scan_sees_each_kind_of_direct_write() -> None:
    """The scan can fail: each way of writing a file outside durable.py is reported."""
    source = """
import os, shutil, tempfile
from pathlib import Path
flags = os.O_WRONLY | os.O_CREAT
def publish(path: Path, text: str) -> None:
    path.write_text(text)
    path.write_bytes(b"")
    with open(path, "w") as stream:
        stream.write(text)
    with path.open("ab") as stream:
        stream.write(b"")
    fd = os.open(path, flags)
    os.replace(path, path)
    path.rename(path)
    path.replace(path)
    shutil.copyfile(path, path)
    tempfile.mkstemp()
    os.fdopen(fd, "w")
    open(path).read()
    path.open().read()
    os.open(path, os.O_RDONLY)
    "a".replace("a", "b")
"""
    assert writing_calls(source) == [
        ".write_text", ".write_bytes", "open", ".open", "os.open", "os.replace", ".rename",
        ".replace", "shutil.copyfile", "tempfile.mkstemp", "os.fdopen",
    ]


def _names(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_write_whose_check_fails_names_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    """A copy refused by its check (the folder backend's read back) is never named, and
    its temporary file is removed."""
    folder = open_folder(tmp_path)
    try:
        def refuse(_fd: int, _filled: str) -> None:
            raise ValueError("read back hashed otherwise")

        with pytest.raises(ValueError, match="read back hashed otherwise"):
            write_durably_at(folder, "clip.mp4", lambda fd: str(os.write(fd, b"clip")),
                             create_only=True, suffix=".dock-a.part", check=refuse)
    finally:
        os.close(folder)
    assert _names(tmp_path) == []


def test_create_only_keeps_what_is_there_and_leaves_no_temporary(tmp_path: Path) -> None:
    """Create-only onto a taken name raises FileExistsError, keeps the old bytes, and
    removes its temporary file."""
    (tmp_path / "rules").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        write_durably(tmp_path / "rules", lambda fd: os.write(fd, b"new"), create_only=True)
    assert _names(tmp_path) == ["rules"]
    assert (tmp_path / "rules").read_bytes() == b"old"


def test_a_planted_link_at_the_temporary_name_is_named_as_planted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link waiting at the very random temporary name (the token fixed here, the one
    stand-in in this file, as an attacker would have to guess it) is not written
    through: TemporaryNameTaken, and the link is left as it was."""
    monkeypatch.setattr(secrets, "token_hex", lambda _count: "e" * 16)
    outside = tmp_path / "outside"
    outside.write_bytes(b"untouched")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / f"report.json.{'e' * 16}.part").symlink_to(outside)
    with pytest.raises(TemporaryNameTaken):
        write_durably(folder / "report.json", lambda fd: os.write(fd, b"{}"))
    assert outside.read_bytes() == b"untouched"
    assert _names(folder) == [f"report.json.{'e' * 16}.part"]


def test_a_pending_file_whose_publish_fails_is_discarded_whole(tmp_path: Path) -> None:
    """A staged file whose create-only publish fails is removed by discard, and its
    folder's descriptor closed (none kept open per failed file)."""
    (tmp_path / "CLIP.MP4").write_bytes(b"first")
    before = _open_descriptors()
    pending = PendingFile(tmp_path / "CLIP.MP4", mode=0o640)
    assert pending.fd is not None
    os.write(pending.fd, b"second")
    with pytest.raises(FileExistsError):
        pending.publish(create_only=True)
    pending.discard()
    assert _open_descriptors() == before
    assert _names(tmp_path) == ["CLIP.MP4"]
    assert (tmp_path / "CLIP.MP4").read_bytes() == b"first"


def test_a_custody_export_to_a_file_is_whole_and_an_unwritable_one_is_named(
    dock: Dock, tmp_path: Path
) -> None:
    """``audit export -o FILE`` puts the report there (no temporary left beside it); a
    folder that is not there gives one line naming the file, exit 2."""
    camera = dock.root / "card-X1"
    make_camera(camera, (1000,))
    dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait")
    out = tmp_path / "reports"
    out.mkdir()
    dock.cli("audit", "export", "--format", "csv", "-o", str(out / "custody.csv"))
    assert _names(out) == ["custody.csv"]
    assert (out / "custody.csv").read_text().startswith("clip_id,")
    missing = tmp_path / "no-such-folder" / "custody.csv"
    failed = dock.cli("audit", "export", "-o", str(missing), check=False)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        f"bwc-dock: cannot write the custody export to {missing}: No such file or directory"
    ]
