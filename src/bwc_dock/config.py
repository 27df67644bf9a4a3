"""Configuration: a TOML file validated into frozen, typed objects.

Unknown keys are errors (a typo must not silently fall back to a default), and every
error names the dotted key it is about, e.g. ``storage.path: required for backend "file"``.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from datetime import time
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bwc_dock.camera_profiles import CameraProfile, ControlTransfer
from bwc_dock.config_section import Section as _Section
from bwc_dock.errors import ConfigError
from bwc_dock.key_templates import (
    DEFAULT_KEY_TEMPLATE,
    key_template_collides,
    key_template_problem,
)

# the tables that live in modules of their own, known to the rest of bwc-dock from here
__all__ = ["CameraProfile", "ControlTransfer"]

DEFAULT_CONFIG_PATH = Path("/etc/bwc-dock/config.toml")
DEFAULT_STATE_DIR = Path("/var/lib/bwc-dock")
DEFAULT_STORE_MARKER = ".bwc-dock-store"
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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
    # A camera whose clock is further off than this (either way) raises camera_clock_drift.
    max_clock_offset_seconds: float = Field(default=30.0, gt=0)
    # Raise dock_clock_unsynchronized when the kernel says no time server keeps the
    # clock. Only for a dock with no time server by design (the alarm would never
    # clear); every docking and custody record still says whether it was synchronised.
    clock_sync_alarm: bool = True


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
    # a file the administrator puts once in the share's folder: no upload goes to a
    # folder without it (the NAS not mounted, or the wrong share); "" turns the check off
    store_marker: str = DEFAULT_STORE_MARKER
    # this dock alone writes to this store: only then may key_template leave out both
    # the content ({sha16}/{sha256}) and the dock ({dock}), whose keys collide across docks
    single_dock: bool = False
    # modes of what the file backend creates there (explicit: never the umask's)
    file_mode: int = Field(default=0o640, ge=0, le=0o777)
    directory_mode: int = Field(default=0o750, ge=0, le=0o777)
    # s3 backend (credentials: the standard AWS chain or a systemd credential, never here)
    endpoint_url: str | None = None
    # an http:// endpoint sends evidence and credentials' signatures unencrypted, and its
    # answers (the proof that a clip arrived) can be forged on the way: refused unless set
    allow_plaintext: bool = False
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
    # how often the daemon asks central storage whether it answers (raising or clearing
    # storage_unreachable), and how often it writes the SHA256SUMS lists the store
    # refused earlier; tests and demos shorten them, a dock keeps the defaults
    check_interval_seconds: float = Field(default=30.0, ge=1.0)
    sums_interval_seconds: float = Field(default=60.0, ge=1.0)

    @field_validator("key_template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        problem = key_template_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("store_marker")
    @classmethod
    def _marker_is_a_name(cls, value: str) -> str:
        if value and ("/" in value or "\x00" in value or value in (".", "..")
                      or value.endswith(".part")):
            raise ValueError(f"not a file name in the storage folder: {value!r}")
        return value

    @model_validator(mode="after")
    def _backend_keys(self) -> StorageConfig:
        if self.backend == "file" and self.path is None:
            raise ValueError('path: required for backend "file"')
        if self.backend == "s3" and not self.bucket:
            raise ValueError('bucket: required for backend "s3"')
        if self._plaintext_endpoint() and not self.allow_plaintext:
            raise ValueError(
                "endpoint_url: http:// is not encrypted and its answers can be forged on the"
                " way; use https://, or set storage.allow_plaintext = true (a store on this host)"
            )
        if not self.single_dock and key_template_collides(self.key_template):
            raise ValueError(
                "key_template: has neither {sha16}/{sha256} nor {dock}, so two docks give"
                " different clips the same key (the second is refused, or a resync takes"
                " the first for tampering); use the default template, or set"
                " single_dock = true if no other dock writes to this store"
            )
        return self

    def _plaintext_endpoint(self) -> bool:
        return (
            self.backend == "s3"
            and self.endpoint_url is not None
            and self.endpoint_url.strip().lower().startswith("http://")
        )


class SourcesConfig(_Section):
    udev: bool = True
    watch_dirs: tuple[Path, ...] = ()
    rescan_interval_seconds: float = Field(default=60.0, gt=0)


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
    # once a minute: each publish is a replace, a new version on versioned buckets; the
    # minimum, 1 s, is for tests and demos that cannot wait a minute per publish
    interval_seconds: float = Field(default=60.0, ge=1.0)
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


class DisclosureConfig(_Section):
    """Disclosure bags (``bwc-dock disclose``): who signs them, and with which key."""

    # the agency's name, written as Source-Organization in every bag's bag-info.txt
    organization: str | None = Field(default=None, min_length=1)
    # an OpenSSH private key (ssh-keygen -t ed25519); its .pub beside it, or derived
    signing_key: Path | None = None


# "indefinite" retention: kept this many days after the recording (a century), see
# retention.py for why a far date and not a legal hold
INDEFINITE = "indefinite"
_CLASS_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class RetentionClass(_Section):
    """How long a kind of clip is kept: a period counted from its recording (Object Lock)."""

    name: str = Field(pattern=_CLASS_NAME)
    days: int | Literal["indefinite"] = Field(union_mode="left_to_right")
    # CAD call types (as the CAD export spells them) whose clips fall in this class
    call_types: tuple[str, ...] = ()
    default: bool = False

    @field_validator("days")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a number of days >= 1, or \"indefinite\"")
        return value


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
    disclosure: DisclosureConfig = Field(default_factory=DisclosureConfig)
    coverage: CoverageConfig = Field(default_factory=CoverageConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    retention: tuple[RetentionClass, ...] = ()

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

    @property
    def retention_classes(self) -> tuple[RetentionClass, ...]:
        """The ``[[retention]]`` classes; an older ``object_lock_days`` alone is one
        default class named "default"."""
        if self.retention or not self.storage.object_lock_days:
            return self.retention
        return (RetentionClass(name="default", days=self.storage.object_lock_days, default=True),)

    @property
    def default_retention(self) -> RetentionClass | None:
        """The class of a clip nobody classified; None when no class is configured."""
        classes = self.retention_classes
        marked = [retention for retention in classes if retention.default]
        if marked:
            return marked[0]
        return classes[0] if len(classes) == 1 else None

    def retention_class(self, name: str) -> RetentionClass | None:
        return next((kind for kind in self.retention_classes if kind.name == name), None)

    @model_validator(mode="after")
    def _retention_classes(self) -> Config:
        names = [retention.name for retention in self.retention]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"retention: class name(s) given twice: {', '.join(repeated)}")
        defaults = [retention.name for retention in self.retention if retention.default]
        if len(defaults) > 1:
            raise ValueError(f"retention: only one class may be default (got {defaults})")
        if len(self.retention) > 1 and not defaults:
            raise ValueError("retention: mark one class `default = true` (for clips no "
                             "call type or hand classification places)")
        if self.retention and self.storage.object_lock_days:
            raise ValueError("storage.object_lock_days: give the period as a [[retention]] "
                             "class instead (both are set)")
        if self.storage.object_lock_mode and not self.retention_classes:
            raise ValueError("retention: storage.object_lock_mode needs a [[retention]] class "
                             "(name, days, default = true)")
        return self

    @model_validator(mode="after")
    def _fleet_bucket_needs_s3(self) -> Config:
        if self.fleet.bucket is not None and self.storage.backend != "s3":
            raise ValueError('fleet.bucket: only with storage.backend = "s3"')
        if self.fleet.path is not None and self.storage.backend != "file":
            raise ValueError('fleet.path: only with storage.backend = "file"')
        return self


def retention_risks(config: Config) -> list[str]:
    """Why configured retention classes will not be enforced (warnings for config check)."""
    if not config.retention:
        return []
    count = f"{len(config.retention)} class(es) configured"
    if config.storage.backend != "s3":
        return [
            f"retention: {count}, but a NAS folder (storage.backend = "
            f"{config.storage.backend!r}) cannot enforce retention: anyone with write access "
            "to the share can delete a clip early. Use the s3 backend with a bucket created "
            "with Object Lock enabled and set storage.object_lock_mode"
        ]
    if not config.storage.object_lock_mode:
        return [
            f"retention: {count}, but storage.object_lock_mode is not set: no retention is "
            "applied (set GOVERNANCE or COMPLIANCE on an Object Lock bucket)"
        ]
    return []


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
