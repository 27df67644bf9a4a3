"""Configuration: a TOML file validated into frozen, typed objects.

Unknown keys are errors (a typo must not silently fall back to a default), and every
error names the dotted key it is about, e.g. ``storage.path: required for backend "file"``.
"""

from __future__ import annotations

import os
import re
import socket
import string
import tomllib
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bwc_dock.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/bwc-dock/config.toml")
DEFAULT_STATE_DIR = Path("/var/lib/bwc-dock")
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
# Content-addressed: built only from what every dock agrees on, so the same content from
# the same camera has the same key at every dock and different content never shares one.
DEFAULT_KEY_TEMPLATE = "{camera}/{recorded:%Y/%m/%d}/{stem}.{sha16}{ext}"
# Fields a key_template may use; the last two are dock-local (not fleet-safe).
KEY_FIELDS = ("camera", "recorded", "name", "stem", "ext", "sha256", "sha16", "clip_id", "dock")
CONTENT_FIELDS = frozenset({"sha256", "sha16"})
DOCK_LOCAL_FIELDS = frozenset({"clip_id", "dock"})
_SAMPLE_SHA256 = "0" * 64
_USB_ID = re.compile(r"^(0x)?[0-9a-f]{1,4}$", re.IGNORECASE)
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DockConfig(_Section):
    id: str = Field(default_factory=socket.gethostname, min_length=1)
    state_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("STATE_DIRECTORY", DEFAULT_STATE_DIR))
    )
    # Each defaults to a folder under state_dir; see the properties on Config.
    staging_dir: Path | None = None
    mount_dir: Path | None = None
    ledger_url: str | None = None
    staging_reserve_mb: int = Field(default=1024, ge=0)
    staged_retention_hours: float = Field(default=72.0, ge=0)
    copy_workers: int = Field(default=2, ge=1, le=16)
    upload_workers: int = Field(default=2, ge=1, le=32)
    max_clip_size_gb: float = Field(default=256.0, gt=0)
    max_scan_depth: int = Field(default=32, ge=1, le=256)
    max_scan_entries: int = Field(default=200_000, ge=1)
    lease_seconds: int = Field(default=120, ge=10)


class BandwidthWindow(_Section):
    """A weekly window in which uploads are limited, e.g. the day shift."""

    days: tuple[Weekday, ...] = _WEEKDAYS
    start: time
    end: time
    limit_mb_per_s: float = Field(gt=0)


class StorageConfig(_Section):
    backend: Literal["file", "s3"] = "file"
    key_template: str = DEFAULT_KEY_TEMPLATE
    # file backend; the folder must exist (bwc-dock never creates the NAS root)
    path: Path | None = None
    path_must_be_mountpoint: bool = False
    # modes of what the file backend creates there (explicit: never the umask's)
    file_mode: int = Field(default=0o640, ge=0, le=0o777)
    directory_mode: int = Field(default=0o750, ge=0, le=0o777)
    # s3 backend (credentials: the standard AWS chain or a systemd credential, never here)
    endpoint_url: str | None = None
    bucket: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    ca_bundle: Path | None = None
    multipart_threshold_mb: int = Field(default=64, ge=5)
    multipart_part_mb: int = Field(default=16, ge=5)
    multipart_concurrency: int = Field(default=4, ge=1, le=32)
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    object_lock_days: int | None = Field(default=None, ge=1)
    bandwidth: tuple[BandwidthWindow, ...] = ()
    # retry pacing for errors that can heal, and the long pause after a permanent refusal
    retry_initial_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=600.0, gt=0)
    permanent_error_backoff_seconds: float = Field(default=900.0, gt=0)

    @field_validator("key_template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        problem = key_template_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _backend_keys(self) -> StorageConfig:
        if self.backend == "file" and self.path is None:
            raise ValueError('path: required for backend "file"')
        if self.backend == "s3" and not self.bucket:
            raise ValueError('bucket: required for backend "s3"')
        if self.object_lock_mode and not self.object_lock_days:
            raise ValueError("object_lock_days: required with object_lock_mode")
        return self


def key_template_fields(template: str) -> set[str]:
    """The field names a key template uses (``{recorded:%Y}`` -> ``recorded``)."""
    fields = set()
    for _text, field_name, _spec, _conversion in string.Formatter().parse(template):
        if field_name is not None:
            fields.add(re.split(r"[.\[]", field_name, maxsplit=1)[0])
    return fields


def key_template_problem(template: str) -> str | None:
    """Why ``template`` cannot make keys (an unknown field, a bad format); None if it can."""
    try:
        fields = key_template_fields(template)
    except ValueError as error:
        return f"not a valid template: {error}"
    unknown = sorted(fields - set(KEY_FIELDS))
    if unknown:
        return (
            f"unknown field(s) {', '.join('{' + name + '}' for name in unknown)}; "
            f"known: {', '.join('{' + name + '}' for name in KEY_FIELDS)}"
        )
    sample = {name: "x" for name in KEY_FIELDS} | {
        "recorded": datetime(2026, 11, 24, 8, 15, tzinfo=UTC),
        "sha256": _SAMPLE_SHA256,
        "sha16": _SAMPLE_SHA256[:16],
        "clip_id": 1,
    }
    try:
        key = template.format(**sample)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as error:
        return f"not a valid template: {error}"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return f"makes keys with an empty, '.' or '..' part (e.g. {key!r})"
    return None


def key_template_risks(template: str) -> list[str]:
    """Why keys from ``template`` are not fleet-safe (docks sharing one store)."""
    fields = key_template_fields(template)
    risks = []
    if not fields & CONTENT_FIELDS:
        risks.append(
            "has no {sha16} or {sha256} field: different content can get the same key "
            "at two docks (or after a camera is cleared), and the second is quarantined"
        )
    local = sorted(fields & DOCK_LOCAL_FIELDS)
    if local:
        risks.append(
            f"uses dock-local field(s) {', '.join('{' + name + '}' for name in local)}: the "
            "same clip offloaded at two docks is stored twice, under two keys"
        )
    return risks


class SourcesConfig(_Section):
    udev: bool = True
    watch_dirs: tuple[Path, ...] = ()
    rescan_interval_seconds: float = Field(default=60.0, gt=0)


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

    @model_validator(mode="after")
    def _serial_file(self) -> CameraProfile:
        if self.serial_source == "file" and not self.serial_file:
            raise ValueError('serial_file: required with serial_source = "file"')
        return self


class AlarmsConfig(_Section):
    oldest_pending_hours: float = Field(default=12.0, gt=0)
    stalled_offload_minutes: float = Field(default=15.0, gt=0)


class ServiceConfig(_Section):
    metrics_textfile: Path | None = None
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    # The installed udev rules, which `config check` keeps in step with [[camera]].
    udev_rules_file: Path = Path("/etc/udev/rules.d/99-bwc-dock.rules")


class FleetConfig(_Section):
    """The status document this dock publishes for ``bwc-dock fleet`` (fleet.py)."""

    enabled: bool = True
    # under the storage prefix, on the same store; a trailing "/" is added when missing
    prefix: str = "_fleet/"
    # at most once a minute: each publish is a replace, a new version on versioned buckets
    interval_seconds: float = Field(default=60.0, ge=60.0)
    # s3 only: publish to this bucket instead of storage.bucket (one without default
    # Object Lock retention); same endpoint and credentials
    bucket: str | None = None
    # file only: publish under this folder instead of storage.path (e.g. off a WORM share)
    path: Path | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_folder(cls, value: str) -> str:
        value = value.strip("/")
        parts = value.split("/")
        if not value or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a usable key prefix: {value!r}")
        return value + "/"


DEFAULT_REASON_CODES = (
    "equipment_failure",
    "camera_not_issued",
    "not_required_by_policy",
    "officer_safety",
    "privacy",
    "officer_error",
    "other",
)


class CoverageHeadings(_Section):
    """The CAD export's column headings; matched ignoring case, and "_" as " "."""

    event_id: str = "Event ID"
    officer_badge_id: str = "Officer Badge ID"
    dispatched: str = "Officer Dispatched DateTime"
    cleared: str = "Officer Cleared DateTime"
    call_type: str = "Call Type"
    # optional: a clearance (disposition) code, for excluded_clearance_codes
    clearance_code: str = "Clearance Code"


class CoverageConfig(_Section):
    """``bwc-dock coverage``: a CAD export reviewed against the fleet's custody records."""

    headings: CoverageHeadings = Field(default_factory=CoverageHeadings)
    # a clip recorded this long before dispatch or after clearance still counts
    buffer_minutes: float = Field(default=5.0, ge=0, le=24 * 60)
    # a camera not docked since the call is "pending" this long before "no video"
    grace_days: float = Field(default=3.0, ge=0, le=365)
    excluded_call_types: tuple[str, ...] = ()
    excluded_clearance_codes: tuple[str, ...] = ()
    reason_codes: tuple[str, ...] = DEFAULT_REASON_CODES
    # the zone of CAD times written without an offset; without it such times are refused
    timezone: str | None = None
    max_call_hours: float = Field(default=8.0, gt=0, le=24 * 14)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as error:
                raise ValueError(f"not a known IANA time zone: {value!r}") from error
        return value

    @field_validator("reason_codes")
    @classmethod
    def _plain_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for code in value:
            if not re.fullmatch(r"[a-z0-9_]{1,64}", code):
                raise ValueError(f"reason code {code!r}: use 1-64 of a-z, 0-9, '_'")
        if not value:
            raise ValueError("give at least one reason code")
        return value


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json", "journald"] = "auto"


class Config(_Section):
    dock: DockConfig = Field(default_factory=DockConfig)
    storage: StorageConfig
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    camera: tuple[CameraProfile, ...] = ()
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    coverage: CoverageConfig = Field(default_factory=CoverageConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @property
    def staging_dir(self) -> Path:
        return self.dock.staging_dir or self.dock.state_dir / "staging"

    @property
    def mount_dir(self) -> Path:
        return self.dock.mount_dir or self.dock.state_dir / "mounts"

    @property
    def ledger_url(self) -> str:
        return self.dock.ledger_url or f"sqlite:///{self.dock.state_dir / 'ledger.sqlite3'}"

    def profile(self, name: str) -> CameraProfile | None:
        return next((profile for profile in self.camera if profile.name == name), None)

    @model_validator(mode="after")
    def _fleet_bucket_needs_s3(self) -> Config:
        if self.fleet.bucket is not None and self.storage.backend != "s3":
            raise ValueError('fleet.bucket: only with storage.backend = "s3"')
        if self.fleet.path is not None and self.storage.backend != "file":
            raise ValueError('fleet.path: only with storage.backend = "file"')
        return self


def resolve_config_path(explicit: str | Path | None) -> Path:
    """``--config``, else ``$BWC_DOCK_CONFIG``, else the system path."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("BWC_DOCK_CONFIG")
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_config(path: Path) -> Config:
    """Read and validate ``path``; raise :class:`ConfigError` naming the faulty key."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration: {error.strerror}") from error
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text: {error.reason}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    return parse_config(document, origin=str(path))


def parse_config(document: dict[str, object], origin: str = "<config>") -> Config:
    try:
        return Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f"{origin}: {_describe(error)}") from error


def _describe(error: ValidationError) -> str:
    """The first problem as ``dotted.key: reason``; a count when there are more."""
    problems = error.errors(include_url=False)
    first = problems[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    named = re.match(r"^([a-z_]+): (.*)$", message)
    if named:
        # a model validator named the key inside its section
        key = f"{key}.{named.group(1)}" if key else named.group(1)
        message = named.group(2)
    elif first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    described = f"{key}: {message}" if key else message
    if len(problems) > 1:
        described += f" (and {len(problems) - 1} more problem(s))"
    return described
