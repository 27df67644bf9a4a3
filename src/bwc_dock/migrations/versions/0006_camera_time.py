"""camera time: the camera's own reading of each clip, its zone and daylight-saving flag,
the clock correction applied, and each docking's camera and dock clocks

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-05

``clips.recorded_at`` stays the one time used everywhere (keys, custody records, the
officer lookup); from this revision on it is the camera's reading taken in its profile's
zone and corrected by the docking's measured clock offset where there was one.
Clips already in the ledger were read under the old rule (every camera time taken as
UTC, no correction): they are marked ``time_basis = 'legacy'`` and keep their
``recorded_at``, so no key they were stored under changes and nothing in central
storage moves.
"""

import sqlalchemy as sa
from alembic import op


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE ADD COLUMN: constant defaults, no table rebuild (which would drop
    # the triggers of revision 0003), instant on a ledger of a million clips
    op.add_column("clips", sa.Column("camera_time", sa.Text(), nullable=True))
    op.add_column("clips", sa.Column("time_source", sa.String(8), nullable=True))
    op.add_column("clips", sa.Column("time_flag", sa.String(16), nullable=True))
    op.add_column("clips", sa.Column("time_flag_rule", sa.Text(), nullable=True))
    op.add_column("clips", sa.Column("clock_offset_seconds", sa.Float(), nullable=True))
    op.add_column(
        "clips",
        sa.Column("time_basis", sa.String(16), nullable=False, server_default=sa.text("'legacy'")),
    )
    op.add_column("dockings", sa.Column("camera_clock_offset_seconds", sa.Float(), nullable=True))
    op.add_column("dockings", sa.Column("camera_clock_source", sa.String(16), nullable=True))
    op.add_column("dockings", sa.Column("dock_clock_synchronized", sa.Boolean(), nullable=True))
    op.add_column("dockings", sa.Column("dock_clock_error_seconds", sa.Float(), nullable=True))
    op.add_column("dockings", sa.Column("dock_clock_source", sa.String(16), nullable=True))


_DOCKING_COLUMNS = (
    "dock_clock_source",
    "dock_clock_error_seconds",
    "dock_clock_synchronized",
    "camera_clock_source",
    "camera_clock_offset_seconds",
)
_CLIP_COLUMNS = (
    "time_basis",
    "clock_offset_seconds",
    "time_flag_rule",
    "time_flag",
    "time_source",
    "camera_time",
)


def downgrade() -> None:
    # ALTER TABLE DROP COLUMN (SQLite 3.35+): none of these is indexed or in a trigger
    for column in _DOCKING_COLUMNS:
        op.drop_column("dockings", column)
    for column in _CLIP_COLUMNS:
        op.drop_column("clips", column)
