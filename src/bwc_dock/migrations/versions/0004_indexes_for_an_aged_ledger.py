"""indexes so that the upload queue, the oldest pending clip and a camera's assignments
stay cheap on an aged ledger

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Found with ``scripts/bench_ledger.py --explain`` (counting the work each statement does)
on a ledger of 1,000,000 uploaded clips from 400 cameras, after ``ANALYZE``. The
statistics say that nearly every clip is ``uploaded``, so an index on ``state`` alone
looks no better than reading the table, and SQLite reads the table:

``ix_clips_camera_state``: the daemon's upload claim (the next staged clip, cameras
taking turns) went camera by camera through ``ix_clips_camera_sha`` and read every clip
of every camera, 0.65 s per claim. With the state in the index each camera is one
search that finds only its staged clips.

``ix_clips_state_discovered``: the oldest pending clip (``status``, STATUS, metrics)
read the whole clips table, 0.3-0.45 s per ``status``. With the discovery time after
the state, each pending state is one search for its first entry.

``ix_audit_log_camera_event``: the officer a camera was issued to when a clip was
recorded (every custody record, so every upload) read all of that camera's audit
entries to find its few ``camera.assigned`` ones: 7,500 entries, 0.08 s per upload, for
an old camera. The event after the camera in the index finds only those. It replaces
``ix_audit_log_camera_serial``, which is its prefix.
"""

from alembic import op


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_clips_camera_state", "clips", ["camera_serial", "state"])
    op.create_index("ix_clips_state_discovered", "clips", ["state", "discovered_at"])
    op.create_index("ix_audit_log_camera_event", "audit_log", ["camera_serial", "event"])
    op.drop_index("ix_audit_log_camera_serial", table_name="audit_log")


def downgrade() -> None:
    op.create_index("ix_audit_log_camera_serial", "audit_log", ["camera_serial"])
    op.drop_index("ix_audit_log_camera_event", table_name="audit_log")
    op.drop_index("ix_clips_state_discovered", table_name="clips")
    op.drop_index("ix_clips_camera_state", table_name="clips")
