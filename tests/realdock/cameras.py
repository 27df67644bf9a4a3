"""Camera disk images made on the host from plain files, with no loop device.

FAT32 is written with mkfs.vfat (``--offset`` for a partition) and mtools. exFAT is made
with mkfs.exfat in a partition-sized file written into a partitioned image; the host has
no tool that writes files into exFAT without mounting it through a block device
(exfat-fuse always mounts as ``fuseblk``), so the clips go in later, through the guest's
own exFAT driver, with the image attached to the guest as a virtio disk first
(``dockpc.fill_in_guest``). Every file's bytes are made and hashed here, on the host: the
scenarios assert exactly those SHA-256 in central storage, once each.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

SECTOR = 512
PARTITION_START_SECTOR = 2048  # 1 MiB, as partitioning tools align
FAT32_MINIMUM_MB = 40  # FAT32 wants 65525 clusters: 40 MiB of 512-byte clusters holds them
RECORDING_DAY = "20261130"


@dataclass(frozen=True)
class CameraFile:
    """One file written onto a camera image, with the SHA-256 taken on the host."""

    path: str  # relative to the volume root, e.g. DCIM/100BWC/20261130_080000.MP4
    sha256: str
    size: int


@dataclass
class CameraImage:
    """A disk image file with the rig's camera layout on it."""

    path: Path
    serial: str
    label: str
    layout: str  # "superfloppy-fat32", "partitioned-fat32", "partitioned-exfat"
    files: list[CameraFile] = field(default_factory=list)
    # files still to be written onto the image by the guest (exFAT), path -> bytes
    unwritten: list[tuple[str, bytes]] = field(default_factory=list)
    # path -> the wall-clock time its FAT/exFAT entry holds ("2026-11-01 01:30:00"), for
    # the files the guest writes (the host stamps the FAT32 ones itself)
    stamps: dict[str, str] = field(default_factory=dict)

    @property
    def hashes(self) -> list[str]:
        return sorted(entry.sha256 for entry in self.files)


def _run(*command: str | os.PathLike[str]) -> None:
    subprocess.run([str(part) for part in command], check=True, capture_output=True)


def _clip_payloads(clip_count: int, clip_bytes: int, seed: str) -> list[tuple[str, bytes]]:
    """Clips of random bytes (a camera's video is incompressible too) and a JPG sidecar each."""
    payloads: list[tuple[str, bytes]] = []
    for index in range(clip_count):
        stem = f"DCIM/100BWC/{RECORDING_DAY}_{8 + index:02d}0000"
        payloads.append((f"{stem}.MP4", os.urandom(clip_bytes)))
        sidecar = f"sidecar of {seed} clip {index}\n".encode() + os.urandom(2048)
        payloads.append((f"{stem}.JPG", sidecar))
    return payloads


def _record(payloads: list[tuple[str, bytes]]) -> list[CameraFile]:
    return [
        CameraFile(path, hashlib.sha256(data).hexdigest(), len(data)) for path, data in payloads
    ]


def _write_tree(root: Path, payloads: list[tuple[str, bytes]]) -> None:
    for relative, data in payloads:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _mtools_fill(image_spec: str, tree: Path) -> None:
    """Copy ``tree`` into the FAT at ``image_spec`` (``file`` or ``file@@OFFSET``); with
    TZ=UTC, mcopy -m stores each file's mtime's UTC fields as the FAT wall clock."""
    environment = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}
    for directory in sorted(path for path in tree.rglob("*") if path.is_dir()):
        relative = directory.relative_to(tree).as_posix()
        subprocess.run(
            ["mmd", "-i", image_spec, f"::{relative}"],
            check=True, capture_output=True, env=environment,
        )
    for entry in sorted(path for path in tree.rglob("*") if path.is_file()):
        relative = entry.relative_to(tree).as_posix()
        subprocess.run(
            ["mcopy", "-m", "-i", image_spec, str(entry), f"::{relative}"],
            check=True, capture_output=True, env=environment,
        )


def _partition(image: Path, size_mb: int, type_code: str) -> None:
    """One primary partition from 1 MiB to the end, in an MBR, as cameras ship."""
    image.unlink(missing_ok=True)
    with image.open("wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    script = f"label: dos\nstart={PARTITION_START_SECTOR}, type={type_code}\n"
    subprocess.run(["sfdisk", "-q", str(image)], input=script.encode(), check=True,
                   capture_output=True)


def make_camera(
    directory: Path,
    *,
    serial: str,
    layout: str,
    label: str = "BWCCAM",
    clip_count: int = 3,
    clip_bytes: int = 2 * 1024 * 1024,
    size_mb: int = 48,
    stamped: dict[str, datetime] | None = None,
) -> CameraImage:
    """A camera image of ``layout`` holding ``clip_count`` clips with sidecars, or, with
    ``stamped``, those files only (path -> the wall-clock time their entry holds)."""
    image = directory / f"{serial}.img"
    payloads = _clip_payloads(clip_count, clip_bytes, serial)
    if stamped is not None:
        payloads = [(path, os.urandom(64 * 1024)) for path in stamped]
    camera = CameraImage(image, serial, label, layout, _record(payloads))
    camera.stamps = {path: f"{wall:%Y-%m-%d %H:%M:%S}" for path, wall in (stamped or {}).items()}
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        tree = Path(scratch) / "tree"
        _write_tree(tree, payloads)
        for path, wall in (stamped or {}).items():
            raw = wall.replace(tzinfo=UTC).timestamp()  # its UTC fields are the wall clock
            os.utime(tree / path, (raw, raw))
        if layout == "superfloppy-fat32":
            _make_superfloppy(image, tree, label, size_mb)
        elif layout == "partitioned-fat32":
            _make_partitioned_fat32(image, tree, label, size_mb)
        elif layout == "partitioned-exfat":
            _make_partitioned_exfat(image, label, size_mb, Path(scratch))
            camera.unwritten = payloads
        else:
            raise ValueError(f"unknown camera layout {layout!r}")
    return camera


def _make_superfloppy(image: Path, tree: Path, label: str, size_mb: int) -> None:
    """FAT32 on the whole device, no partition table (many cameras do this)."""
    image.unlink(missing_ok=True)
    with image.open("wb") as handle:
        handle.truncate(max(size_mb, FAT32_MINIMUM_MB) * 1024 * 1024)
    _run("mkfs.vfat", "-F", "32", "-s", "1", "-n", label, image)
    _mtools_fill(str(image), tree)


def _make_partitioned_fat32(image: Path, tree: Path, label: str, size_mb: int) -> None:
    size_mb = max(size_mb, FAT32_MINIMUM_MB + 2)
    _partition(image, size_mb, "c")
    blocks_kib = (size_mb * 1024 * 1024 - PARTITION_START_SECTOR * SECTOR) // 1024
    _run("mkfs.vfat", "-F", "32", "-s", "1", "-n", label,
         "--offset", str(PARTITION_START_SECTOR), image, str(blocks_kib))
    _mtools_fill(f"{image}@@{PARTITION_START_SECTOR * SECTOR}", tree)


def _make_partitioned_exfat(image: Path, label: str, size_mb: int, scratch: Path) -> None:
    """An empty exFAT in partition 1: made in a file of the partition's size, then written
    into the partitioned image at the partition's offset."""
    _partition(image, size_mb, "7")
    partition = scratch / "partition.img"
    with partition.open("wb") as handle:
        handle.truncate(size_mb * 1024 * 1024 - PARTITION_START_SECTOR * SECTOR)
    _run("mkfs.exfat", "-L", label, partition)
    with partition.open("rb") as source, image.open("r+b") as target:
        target.seek(PARTITION_START_SECTOR * SECTOR)
        while chunk := source.read(4 * 1024 * 1024):
            target.write(chunk)


def corrupt_fat(camera: CameraImage) -> None:
    """Zero both FAT copies of a superfloppy FAT32 (the boot sector and label stay, so
    udev still calls it a vfat volume labelled as a camera, but no cluster chain holds)."""
    if camera.layout != "superfloppy-fat32":
        raise ValueError("corrupt_fat handles superfloppy FAT32 images only")
    with camera.path.open("r+b") as handle:
        boot = handle.read(SECTOR)
        bytes_per_sector = int.from_bytes(boot[11:13], "little")
        reserved_sectors = int.from_bytes(boot[14:16], "little")
        fat_count = boot[16]
        sectors_per_fat = int.from_bytes(boot[36:40], "little")
        handle.seek(reserved_sectors * bytes_per_sector)
        handle.write(bytes(fat_count * sectors_per_fat * bytes_per_sector))
    camera.files.clear()  # nothing on it can be read: nothing may arrive in storage
