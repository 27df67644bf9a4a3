"""indexes so that the upload queue and the oldest pending clip stay cheap on an aged ledger

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
"""

from alembic import op


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_clips_camera_state", "clips", ["camera_serial", "state"])
    op.create_index("ix_clips_state_discovered", "clips", ["state", "discovered_at"])


def downgrade() -> None:
    op.drop_index("ix_clips_state_discovered", table_name="clips")
    op.drop_index("ix_clips_camera_state", table_name="clips")
