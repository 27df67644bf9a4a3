"""A watch folder's serial file is read without following a link on its way (a real
folder tree; the source's own reading, no observer needed)."""

from __future__ import annotations

from pathlib import Path

from bwc_dock.config import parse_config
from bwc_dock.scanning import folder_profile
from bwc_dock.sources.watch import WatchFolderSource


def _source(watch: Path) -> WatchFolderSource:
    config = parse_config({
        "storage": {"path": "/n"},
        "sources": {"udev": False, "watch_dirs": [str(watch)]},
        "camera": [{"name": "folder-cam", "serial_source": "file",
                    "serial_file": "SYSTEM/SERIAL.TXT"}],
    })
    return WatchFolderSource(config.sources.watch_dirs, folder_profile(config))


def test_serial_file_behind_a_linked_folder_is_not_read(tmp_path: Path) -> None:
    """SYSTEM is a link to a folder outside the camera: no serial is taken from it, and
    the same file in a real SYSTEM folder gives the serial."""
    watch = tmp_path / "watch"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "SERIAL.TXT").write_text("STOLEN\n")
    linked = watch / "cam1"
    linked.mkdir(parents=True)
    (linked / "SYSTEM").symlink_to(outside)
    real = watch / "cam2"
    (real / "SYSTEM").mkdir(parents=True)
    (real / "SYSTEM" / "SERIAL.TXT").write_text("BWC 42\n")
    source = _source(watch)

    assert source._volume(linked) is None
    volume = source._volume(real)
    assert volume is not None
    assert volume.camera_serial == "BWC_42"
