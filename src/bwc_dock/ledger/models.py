"""The ledger's tables (SQLAlchemy 2 typed ORM).

The schema itself is created and changed only by the alembic migrations in
``bwc_dock/migrations``; these classes must match the newest migration.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Camera(Base):
    __tablename__ = "cameras"

    serial: Mapped[str] = mapped_column(String(128), primary_key=True)
    profile_name: Mapped[str | None] = mapped_column(String(128))
    usb_vendor_id: Mapped[str | None] = mapped_column(String(8))
    usb_product_id: Mapped[str | None] = mapped_column(String(8))
    fs_type: Mapped[str | None] = mapped_column(String(32))  # migration 0005
    fs_label: Mapped[str | None] = mapped_column(String(64))
    fs_uuid: Mapped[str | None] = mapped_column(String(64))
    officer_id: Mapped[str | None] = mapped_column(String(128))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_docked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # when an uploader last took one of this camera's clips: the oldest turn goes next
    last_upload_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Docking(Base):
    """One time a camera was docked (or a folder was ingested)."""

    __tablename__ = "dockings"
    __table_args__ = (
        # the open dockings, without reading every docking ever (migration 0003)
        Index("ix_dockings_open", "id", sqlite_where=text("undocked_at IS NULL")),
        Index("ix_dockings_sums_due", "id", sqlite_where=text("sums_due = 1")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera_serial: Mapped[str] = mapped_column(ForeignKey("cameras.serial"), index=True)
    dock_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    device: Mapped[str] = mapped_column(Text)
    volume_root: Mapped[str] = mapped_column(Text)
    # lease-style owner of the docking: the daemon, or a hand-run ingest (see leases.py)
    owner: Mapped[str | None] = mapped_column(String(255))
    docked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    scanned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refused_entries: Mapped[int] = mapped_column(Integer, default=0)
    # when its SHA256SUMS was last written to central storage (None: not yet)
    sums_written_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # 1: a clip of it changed state since its SHA256SUMS was last settled (a trigger
    # sets it, ledger/counters.py); the anchorer looks only at these dockings
    sums_due: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # the device identity the dock saw at this docking (migration 0005; None on older
    # dockings, and where the source has no such value, as a watch folder has no USB ids)
    profile_name: Mapped[str | None] = mapped_column(String(128))
    usb_vendor_id: Mapped[str | None] = mapped_column(String(8))
    usb_product_id: Mapped[str | None] = mapped_column(String(8))
    fs_type: Mapped[str | None] = mapped_column(String(32))
    fs_label: Mapped[str | None] = mapped_column(String(64))
    fs_uuid: Mapped[str | None] = mapped_column(String(64))
    # the camera's clock minus the dock's when it docked (seconds) and how it was read
    # ("command", "file"); None: not measured, which is never the same as 0
    camera_clock_offset_seconds: Mapped[float | None] = mapped_column(Float)
    camera_clock_source: Mapped[str | None] = mapped_column(String(16))
    # whether the dock PC's own clock was synchronised then, its estimated error, and
    # what said so ("adjtimex"); None: not known
    dock_clock_synchronized: Mapped[bool | None] = mapped_column(Boolean)
    dock_clock_error_seconds: Mapped[float | None] = mapped_column(Float)
    dock_clock_source: Mapped[str | None] = mapped_column(String(16))


# The audit rows of the fleet assignment records a dock applied (camera.assigned, which a
# hand assignment writes too) or refused; the same text in the index and the query that
# reads it, since SQLite uses a partial index only for a query naming its condition.
FLEET_RECORD_EVENTS = "event IN ('camera.assigned', 'camera.fleet_assignment_refused')"

# A clip the ledger believes is still on its camera: not cleared by bwc-dock, not found gone.
ON_CAMERA = "state != 'cleared' AND gone_from_camera_at IS NULL"


class Clip(Base):
    __tablename__ = "clips"
    __table_args__ = (
        # discovery identity: the same file seen again is the same clip
        UniqueConstraint("camera_serial", "source_path_raw", "size", "mtime_ns"),
        Index("ix_clips_state_next", "state", "next_attempt_at"),
        Index("ix_clips_camera_sha", "camera_serial", "sha256"),
        Index("ix_clips_docking_state", "docking_id", "state"),  # migration 0003
        # the upload claim, camera by camera, finds only staged clips (migration 0004)
        Index("ix_clips_camera_state", "camera_serial", "state"),
        # the oldest pending clip, without reading the uploaded ones (migration 0004)
        Index("ix_clips_state_discovered", "state", "discovered_at"),
        Index("ix_clips_leased", "id", sqlite_where=text("lease_owner IS NOT NULL")),
        Index(
            "ix_clips_staged_copies",
            "uploaded_at",
            sqlite_where=text("staged_path IS NOT NULL AND staged_purged_at IS NULL"),
        ),
        # a docking's look for files gone from its camera reads only the clips the ledger
        # believes are still on the camera, not the camera's history (migration 0009)
        Index("ix_clips_on_camera", "camera_serial", sqlite_where=text(ON_CAMERA)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera_serial: Mapped[str] = mapped_column(ForeignKey("cameras.serial"))
    docking_id: Mapped[int] = mapped_column(ForeignKey("dockings.id"))
    # relative to the volume root; raw bytes to reopen it, text (escaped) to show it
    source_path_raw: Mapped[bytes] = mapped_column(LargeBinary)
    source_path: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(255))  # sanitised, for staging and keys
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    # UTC: the camera's reading in its zone, corrected by clock_offset_seconds when the
    # docking measured one; the time keys, custody records and the officer lookup use
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # the camera's own reading with its zone ("2026-11-01T01:30:00 America/New_York"),
    # from the file "name" or its "mtime"; None on clips read under the legacy rule
    camera_time: Mapped[str | None] = mapped_column(Text)
    time_source: Mapped[str | None] = mapped_column(String(8))
    # "nonexistent" / "ambiguous" (daylight saving) and the rule used to read it
    time_flag: Mapped[str | None] = mapped_column(String(16))
    time_flag_rule: Mapped[str | None] = mapped_column(Text)
    # the camera-minus-dock offset subtracted; None: uncorrected
    clock_offset_seconds: Mapped[float | None] = mapped_column(Float)
    # "profile": read in the profile's zone; "legacy": read before zones (taken as UTC)
    time_basis: Mapped[str] = mapped_column(
        String(16), default="profile", server_default=text("'legacy'")
    )
    sha256: Mapped[str | None] = mapped_column(String(64))  # taken at first read
    state: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    staged_path: Mapped[str | None] = mapped_column(Text)  # relative to the staging dir
    # False while the staged copy waits for its upload's read to verify it (handoff.py);
    # True once a re-read from disk or an upload proved it (migration 0007)
    staged_verified: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=text("1")
    )
    remote_key: Mapped[str | None] = mapped_column(Text)
    remote_sha256: Mapped[str | None] = mapped_column(String(64))  # as storage confirmed
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("clips.id"))
    copy_attempts: Mapped[int] = mapped_column(Integer, default=0)
    upload_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    discovered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # when a docking found the file gone from the camera without bwc-dock clearing it
    # (the clip.vanished_on_camera event; migration 0009): no later docking looks again
    gone_from_camera_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    staged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    staged_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ClipStateCount(Base):
    """How many clips are in each state, kept by triggers on ``clips`` (generated in
    ``ledger/counters.py``) so that counting does not read every clip ever seen."""

    __tablename__ = "clip_state_counts"

    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class ClipByteTotal(Base):
    """Bytes copied off cameras (``copied``) and confirmed in central storage
    (``uploaded``), ever; kept by triggers on ``clips`` (``ledger/counters.py``)."""

    __tablename__ = "clip_byte_totals"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    bytes: Mapped[int] = mapped_column(Integer)


class Sidecar(Base):
    """A same-stem companion file (.JPG, .GPS, .LOG) that travels with its clip."""

    __tablename__ = "sidecars"
    __table_args__ = (UniqueConstraint("clip_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id"), index=True)
    source_path_raw: Mapped[bytes] = mapped_column(LargeBinary)
    source_path: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    remote_key: Mapped[str | None] = mapped_column(Text)
    remote_sha256: Mapped[str | None] = mapped_column(String(64))


class AuditEntry(Base):
    """Append-only, hash-chained record of everything that happened to the evidence."""

    __tablename__ = "audit_log"
    __table_args__ = (
        # a camera's assignments among its audit entries (migration 0004; it replaces
        # ix_audit_log_camera_serial, whose prefix it is)
        Index("ix_audit_log_camera_event", "camera_serial", "event"),
        # the fleet assignment records this dock handled (migration 0010)
        Index("ix_audit_log_fleet_records", "id", sqlite_where=text(FLEET_RECORD_EVENTS)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[str] = mapped_column(String(40))  # ISO-8601 UTC text: hashed as stored
    dock_id: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(64))
    camera_serial: Mapped[str | None] = mapped_column(String(128))
    clip_id: Mapped[int | None] = mapped_column(Integer, index=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class MultipartUpload(Base):
    """An unfinished multipart upload, so a restart resumes it instead of starting over."""

    __tablename__ = "multipart_uploads"

    remote_key: Mapped[str] = mapped_column(Text, primary_key=True)
    clip_id: Mapped[int | None] = mapped_column(ForeignKey("clips.id"))
    upload_id: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MultipartPart(Base):
    __tablename__ = "multipart_parts"

    remote_key: Mapped[str] = mapped_column(
        ForeignKey("multipart_uploads.remote_key", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    etag: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)


class DaemonHeartbeat(Base):
    """One row: the running daemon's pulse, read by ``bwc-dock status``."""

    __tablename__ = "daemon_heartbeat"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_line: Mapped[str] = mapped_column(Text, default="")
    last_error: Mapped[str | None] = mapped_column(Text)
    storage_reachable: Mapped[int | None] = mapped_column(Integer)
    staging_free_bytes: Mapped[int | None] = mapped_column(Integer)
