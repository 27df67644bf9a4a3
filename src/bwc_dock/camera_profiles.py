"""Camera profiles: which USB devices are cameras, and how each model is read.

A ``[[camera]]`` table of the configuration. The daemon matches profiles itself (the udev
rules only tag and protect); the profile also says where the serial comes from, which
files are clips, how a clip's recording time is read and in which zone, and how the
camera's clock is read or set.
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from bwc_dock.config_section import Section as _Section

DEFAULT_CLIP_GLOBS = (
    "**/*.mp4",
    "**/*.mov",
    "**/*.m4v",
    "**/*.avi",
    "**/*.mkv",
    "**/*.mts",
    "**/*.m2ts",
    "**/*.3gp",
    "**/*.wmv",
)
DEFAULT_SIDECAR_GLOBS = ("*",)
_USB_ID = re.compile(r"^(0x)?[0-9a-f]{1,4}$", re.IGNORECASE)


class ControlTransfer(_Section):
    """A vendor control transfer some cameras need before they expose their storage."""

    request_type: int = Field(ge=0, le=255)
    request: int = Field(ge=0, le=255)
    value: int = Field(default=0, ge=0, le=0xFFFF)
    index: int = Field(default=0, ge=0, le=0xFFFF)
    data_hex: str = ""


class CameraProfile(_Section):
    name: str = Field(min_length=1)
    usb_vendor_id: str | None = None
    usb_product_id: str | None = None
    label: str | None = None
    # Where the camera serial comes from: the USB serial, the filesystem UUID or label,
    # the watch-folder name, or the first line of a file on the volume.
    serial_source: Literal["usb", "fs_uuid", "fs_label", "folder", "file"] = "usb"
    serial_file: str | None = None
    clips: tuple[str, ...] = DEFAULT_CLIP_GLOBS
    sidecars: tuple[str, ...] = DEFAULT_SIDECAR_GLOBS
    # A regex with named groups Y, m, d, H, M, S searched in the file name; else mtime.
    recorded_pattern: str | None = None
    # A regex with a named group ``counter`` searched in the file name: the camera's file
    # number, so a docking can tell a number missing (a gap) from a counter reset.
    counter_pattern: str | None = None
    clear_after_upload: bool = False
    priority: int = 0
    filesystem_types: tuple[str, ...] = ("exfat", "vfat")
    mount_options: tuple[str, ...] = ()
    control_transfer: ControlTransfer | None = None
    # What the camera's clock keeps: UTC, or local wall-clock time in an IANA zone. File
    # name times and FAT/exFAT timestamps without an offset are read in this zone.
    clock: Literal["utc", "local"] = "utc"
    timezone: str | None = None
    # exFAT has a UTC-offset field per timestamp. Both drivers (the kernel's, and the
    # exfat-fuse of newer releases) convert a timestamp that has it to true UTC, and stat
    # cannot tell which ones had it; true here says this camera always fills it, so its
    # file times are already UTC and are not re-read in ``timezone``.
    timestamps_carry_offset: bool = False
    # Reading the camera's clock at docking (camera minus dock): a command run as the
    # daemon's user printing ISO 8601, or a small file on the volume holding it.
    clock_command: tuple[str, ...] | None = None
    clock_file: str | None = None
    # Setting the camera's clock after the offload (run as the daemon's user).
    clock_set_command: tuple[str, ...] | None = None
    clock_command_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("usb_vendor_id", "usb_product_id")
    @classmethod
    def _normalise_usb_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _USB_ID.match(value):
            raise ValueError(f"not a hex USB id: {value!r}")
        digits = value.lower().removeprefix("0x")
        return digits.rjust(4, "0")

    @field_validator("recorded_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression: {error}") from error
        return value

    @field_validator("counter_pattern")
    @classmethod
    def _has_counter_group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compiled = re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression: {error}") from error
            if "counter" not in compiled.groupindex:
                raise ValueError("needs a named group: (?P<counter>...)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            known_zone(value)
        return value

    @field_validator("clock_command", "clock_set_command")
    @classmethod
    def _has_program(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("needs a program to run, as a list of words")
        return value

    @model_validator(mode="after")
    def _serial_file(self) -> CameraProfile:
        if self.serial_source == "file" and not self.serial_file:
            raise ValueError('serial_file: required with serial_source = "file"')
        if self.clock == "local" and self.timezone is None:
            raise ValueError('timezone: required with clock = "local" (an IANA name)')
        return self

    @property
    def zone(self) -> ZoneInfo | None:
        """The zone the camera's clock keeps; None for UTC."""
        if self.clock == "local" and self.timezone is not None:
            return ZoneInfo(self.timezone)
        return None


def known_zone(name: str) -> ZoneInfo:
    """The IANA zone called ``name``; ValueError naming it when there is none."""
    # ZoneInfo also accepts a path-like key; a name with ".." or a leading "/" is refused
    # before the lookup so the zone database is the only place looked in.
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"not an IANA time zone name: {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name, e.g. America/New_York)"
        ) from error
