"""The folder backend follows no link in central storage and notices a swapped root:
planted symlinks at a temporary name, a camera folder and a key."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bwc_dock.errors import PermanentStorageError, RefusalKind
from bwc_dock.storage.filesystem import FileBackend
from tests.dock import Dock, make_camera, wait_until
from tests.realparts import need_command, need_root

KEY = "CAM1/2026/11/24/clip.mp4"


@pytest.fixture
def nas(tmp_path: Path) -> Path:
    (tmp_path / "nas").mkdir()
    return tmp_path / "nas"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A root-only folder outside central storage that a planted link points into."""
    (tmp_path / "outside").mkdir(mode=0o700)
    (tmp_path / "outside" / "shadow").write_bytes(b"root only\n")
    return tmp_path / "outside"


def outside_untouched(outside: Path) -> None:
    assert sorted(path.name for path in outside.iterdir()) == ["shadow"]
    assert (outside / "shadow").read_bytes() == b"root only\n"


def clip(tmp_path: Path) -> tuple[Path, str]:
    data = os.urandom(100_000)
    (tmp_path / "staged.mp4").write_bytes(data)
    return tmp_path / "staged.mp4", hashlib.sha256(data).hexdigest()


def refused_for_a_link(error: pytest.ExceptionInfo[PermanentStorageError]) -> None:
    assert error.value.kind is RefusalKind.LINK_REFUSED
    assert "symlink" in str(error.value) or "temporary" in str(error.value)


def test_a_link_planted_at_the_old_predictable_part_name_is_never_written_through(
    nas: Path, outside: Path, tmp_path: Path
) -> None:
    """A symlink at ``KEY.DOCK.part`` (the name used before) is not followed: the
    upload goes to a random temporary name and the link's target stays as it was."""
    (nas / "CAM1/2026/11/24").mkdir(parents=True)
    (nas / (KEY + ".dock-a.part")).symlink_to(outside / "shadow")
    source, sha256 = clip(tmp_path)
    backend = FileBackend(nas, "dock-a")
    assert backend.put_file(KEY, source, sha256, 100_000, {}).sha256 == sha256
    outside_untouched(outside)
    assert (nas / KEY).read_bytes() == source.read_bytes()


def test_a_link_at_the_random_temporary_name_is_refused(
    nas: Path, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a link at the very temporary name chosen (the random token is fixed here,
    the one stand-in in this file, as a real attacker would have to guess it) is
    refused by O_EXCL|O_NOFOLLOW: nothing written, nothing named."""
    monkeypatch.setattr(secrets, "token_hex", lambda _count: "f" * 16)
    (nas / "CAM1/2026/11/24").mkdir(parents=True)
    planted = nas / "CAM1/2026/11/24" / f"clip.mp4.{'f' * 16}.dock-a.part"
    planted.symlink_to(outside / "shadow")
    source, sha256 = clip(tmp_path)
    backend = FileBackend(nas, "dock-a")
    with pytest.raises(PermanentStorageError) as error:
        backend.put_file(KEY, source, sha256, 100_000, {})
    assert error.value.kind is RefusalKind.LINK_REFUSED
    outside_untouched(outside)
    assert not (nas / KEY).exists()
    assert planted.is_symlink()  # not ours: left for the people who look into it


@pytest.mark.parametrize("linked", ["CAM1", "CAM1/2026/11"], ids=["camera", "day"])
def test_a_symlinked_folder_on_the_way_to_a_key_is_refused(
    nas: Path, outside: Path, tmp_path: Path, linked: str
) -> None:
    """A camera (or day) folder replaced by a link to a local folder: put_file,
    put_bytes and every read refuse it, nothing lands in the linked folder, and
    list_keys does not enter it."""
    (nas / linked).parent.mkdir(parents=True, exist_ok=True)
    (nas / linked).symlink_to(outside)
    (outside / "24").mkdir()  # so that the day folder below a linked month exists
    source, sha256 = clip(tmp_path)
    backend = FileBackend(nas, "dock-a")
    with pytest.raises(PermanentStorageError) as put:
        backend.put_file(KEY, source, sha256, 100_000, {})
    refused_for_a_link(put)
    with pytest.raises(PermanentStorageError) as document:
        backend.put_bytes(KEY + ".json", b"{}", {})
    refused_for_a_link(document)
    for read in (backend.head, backend.read_bytes, backend.read_sha256):
        with pytest.raises(PermanentStorageError) as reading:
            read(KEY)
        refused_for_a_link(reading)
    assert sorted(path.name for path in outside.rglob("*")) == ["24", "shadow"]
    assert list(backend.list_keys("")) == []
    assert list(backend.list_keys("CAM1/")) == []


def test_a_symlink_at_the_key_itself_is_refused_and_never_read(
    nas: Path, outside: Path, tmp_path: Path
) -> None:
    """The key itself a link to a root-only file: no write through it, no read of it,
    no copy of it, and delete removes only the link."""
    (nas / "CAM1/2026/11/24").mkdir(parents=True)
    (nas / KEY).symlink_to(outside / "shadow")
    source, sha256 = clip(tmp_path)
    backend = FileBackend(nas, "dock-a")
    with pytest.raises(PermanentStorageError) as put:
        backend.put_file(KEY, source, sha256, 100_000, {})
    refused_for_a_link(put)
    with pytest.raises(PermanentStorageError) as document:
        backend.put_bytes(KEY, b"{}", {}, replace=False)
    refused_for_a_link(document)
    with pytest.raises(PermanentStorageError) as reading:
        backend.read_bytes(KEY)
    refused_for_a_link(reading)
    with pytest.raises(PermanentStorageError) as copying:
        backend.copy_object(KEY, "conflicts/clip.mp4")
    refused_for_a_link(copying)
    assert not (nas / "conflicts").exists()
    outside_untouched(outside)
    backend.delete(KEY)
    assert not (nas / KEY).is_symlink()
    outside_untouched(outside)


def test_cleanup_of_leftovers_enters_no_link(nas: Path, outside: Path) -> None:
    """cleanup_partials removes this dock's leftover .part files in the store, and none
    reached through a symlinked folder (which may be anyone's folder, anywhere)."""
    (nas / "CAM1").mkdir()
    (nas / "CAM1/clip.mp4.0123456789abcdef.dock-a.part").write_bytes(b"ours")
    (nas / "CAM1/clip.mp4.0123456789abcdef.dock-b.part").write_bytes(b"another dock's")
    (outside / "x.mp4.0123456789abcdef.dock-a.part").write_bytes(b"not in the store")
    (nas / "CAM2").symlink_to(outside)
    assert FileBackend(nas, "dock-a").cleanup_partials() == 1
    assert sorted(path.name for path in (nas / "CAM1").iterdir()) == [
        "clip.mp4.0123456789abcdef.dock-b.part"]
    assert (outside / "x.mp4.0123456789abcdef.dock-a.part").read_bytes() == b"not in the store"


def test_check_reachable_fails_while_a_refused_link_is_there(
    nas: Path, outside: Path, tmp_path: Path
) -> None:
    """After a write refused for a link, check_reachable keeps failing (the daemon's
    storage_refused alarm stays raised) until the link is gone; then the write works."""
    (nas / "CAM1").symlink_to(outside)
    source, sha256 = clip(tmp_path)
    backend = FileBackend(nas, "dock-a")
    backend.check_reachable()
    with pytest.raises(PermanentStorageError):
        backend.put_file(KEY, source, sha256, 100_000, {})
    for _probe in range(2):
        with pytest.raises(PermanentStorageError, match="remove the link") as probe:
            backend.check_reachable()
        assert probe.value.kind is RefusalKind.LINK_REFUSED
    (nas / "CAM1").unlink()
    backend.check_reachable()
    assert backend.put_file(KEY, source, sha256, 100_000, {}).sha256 == sha256
    outside_untouched(outside)


def test_a_root_swapped_for_another_folder_is_refused(nas: Path, tmp_path: Path) -> None:
    """The storage folder replaced (renamed away, a fresh one made in its place): every
    write and the reachability check refuse it, naming why; nothing is written."""
    backend = FileBackend(nas, "dock-a")
    backend.put_bytes("CAM1/a.json", b"{}", {})
    nas.rename(tmp_path / "nas-before")
    nas.mkdir()
    with pytest.raises(PermanentStorageError, match="no longer the folder") as write:
        backend.put_bytes("CAM1/b.json", b"{}", {})
    assert write.value.kind is RefusalKind.ROOT_CHANGED
    with pytest.raises(PermanentStorageError) as check:
        backend.check_reachable()
    assert check.value.kind is RefusalKind.ROOT_CHANGED
    assert list(nas.iterdir()) == []
    assert sorted(path.name for path in (tmp_path / "nas-before").rglob("*")) == [
        "CAM1", "a.json"]


@pytest.fixture
def mounted_nas(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs standing in for the NAS mount; unmounted at the end if still there."""
    need_root()
    need_command("mount")
    mount_point = tmp_path / "mnt-nas"
    mount_point.mkdir()
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _mount_tmpfs(mount_point: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "bwc-test-nas",
                    str(mount_point)], check=True)


@pytest.mark.realparts
def test_an_unmounted_nas_is_refused_not_written_to_the_mount_point(
    mounted_nas: Path,
) -> None:
    """The NAS (a real mount) unmounted under a running backend: writes are refused as
    a changed root and nothing lands in the local mount-point folder."""
    _mount_tmpfs(mounted_nas)
    backend = FileBackend(mounted_nas, "dock-a")
    backend.put_bytes("CAM1/a.json", b"{}", {})
    subprocess.run(["umount", str(mounted_nas)], check=True)
    with pytest.raises(PermanentStorageError) as write:
        backend.put_bytes("CAM1/b.json", b"{}", {})
    assert write.value.kind is RefusalKind.ROOT_CHANGED
    assert list(mounted_nas.iterdir()) == []


@pytest.mark.realparts
def test_a_nas_mounted_after_the_first_look_is_taken_as_the_root(mounted_nas: Path) -> None:
    """First opened while not yet mounted (boot order), then mounted: the mount becomes
    the root (a mount point gained, not a folder swapped), and writes go there."""
    backend = FileBackend(mounted_nas, "dock-a")
    backend.check_reachable()
    _mount_tmpfs(mounted_nas)
    backend.put_bytes("CAM1/a.json", b"{}", {})
    assert (mounted_nas / "CAM1/a.json").read_bytes() == b"{}"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000], ids=["022", "077", "000"])
def test_central_files_and_folders_get_explicit_modes_whatever_the_umask(
    nas: Path, tmp_path: Path, umask: int
) -> None:
    """Stored files are 0640 and new folders 0750 by default, or the configured modes,
    independent of the process umask."""
    source, sha256 = clip(tmp_path)
    previous = os.umask(umask)
    try:
        FileBackend(nas, "dock-a").put_file(KEY, source, sha256, 100_000, {})
        FileBackend(nas, "dock-a", file_mode=0o444, directory_mode=0o755).put_bytes(
            "CAM2/x.json", b"{}", {})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((nas / KEY).stat().st_mode) == 0o640
    assert stat.S_IMODE((nas / "CAM1").stat().st_mode) == 0o750
    assert stat.S_IMODE((nas / "CAM1/2026/11/24").stat().st_mode) == 0o750
    assert stat.S_IMODE((nas / "CAM2/x.json").stat().st_mode) == 0o444
    assert stat.S_IMODE((nas / "CAM2").stat().st_mode) == 0o755


def test_ingest_into_a_symlinked_camera_folder_keeps_the_clip_staged(dock: Dock) -> None:
    """End to end: the camera's folder in central storage is a link to a local folder;
    ingest exits 1 naming the link, the clip stays staged, nothing lands locally."""
    local = dock.root / "local-folder"
    local.mkdir()
    (dock.nas / "X1").symlink_to(local)
    camera = dock.root / "card"
    make_camera(camera, [5000], sidecars=False)
    result = dock.cli("ingest", str(camera), "--camera-serial", "X1", "--wait",
                      "--timeout", "5", check=False)
    assert result.returncode == 1, result.stderr
    assert list(local.iterdir()) == []
    [row] = dock.clips()
    assert row["state"] == "staged"
    assert "symlink" in row["last_error"]


@pytest.mark.realparts
def test_running_daemon_raises_storage_refused_for_a_link_until_it_is_removed(
    dock: Dock, tmp_path: Path
) -> None:
    """The daemon meets a planted camera-folder link: the clip stays staged, the
    storage_refused alarm is raised and stays raised while the link is there; once it
    is removed the alarm clears and the clip is uploaded."""
    # storage checked every 2 s (product 30 s): the test sees several checks meet the link
    dock.write_config(storage={"permanent_error_backoff_seconds": 3,
                               "check_interval_seconds": 2})
    local = tmp_path / "local-folder"
    local.mkdir()
    (dock.nas / "LINKCAM").symlink_to(local)
    camera = dock.root / "LINKCAM"
    make_camera(camera, [3000], sidecars=False)
    daemon = dock.start_daemon()
    try:
        camera.rename(dock.watch_dir / "LINKCAM")
        # deadlines stop a hung test; none measures speed (start-up can take 10 s on CI)
        wait_until(lambda: any(e.get("event") == "alarm.raised"
                               and e.get("alarm") == "storage_refused"
                               for e in dock.log_events()),
                   timeout=120, message="storage_refused raised")
        raised_at = time.monotonic()
        assert [row["state"] for row in dock.clips()] == ["staged"]
        # storage checks (every 2 s) find the link still there: the alarm stays up.
        # Waiting past several checks is the point here, not a speed measurement.
        wait_until(lambda: time.monotonic() - raised_at > 8
                   and sum(e.get("event") == "storage.link_refused"
                           for e in dock.log_events()) >= 3,
                   timeout=180, message="the upload retried and refused again")
        assert not any(e.get("event") == "alarm.cleared" for e in dock.log_events())
        assert list(local.iterdir()) == []
        (dock.nas / "LINKCAM").unlink()
        wait_until(lambda: [row["state"] for row in dock.clips()] == ["uploaded"],
                   timeout=180, message="uploaded once the link is gone")
        wait_until(lambda: any(e.get("event") == "alarm.cleared"
                               and e.get("alarm") == "storage_refused"
                               for e in dock.log_events()),
                   timeout=120, message="storage_refused cleared")
    finally:
        assert dock.stop_daemon(daemon) == 0
    assert list(local.iterdir()) == []
