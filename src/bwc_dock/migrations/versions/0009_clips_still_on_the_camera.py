"""which clips are still on their camera, so that a docking does not read a camera's history

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

At each docking bwc-dock looks for files seen before, not cleared by it, and gone from
the camera now. It read every clip the camera ever had to find them, a read that grew
with the camera's years. ``clips.gone_from_camera_at`` records when a docking found a
file gone (set in the transaction that audits ``clip.vanished_on_camera``), and the
partial index ``ix_clips_on_camera`` holds only the clips neither cleared nor gone: what
the camera can still hold. Clips already reported gone get the time of their event.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN: a batch copy of the table would drop the counter triggers
    op.add_column("clips", sa.Column("gone_from_camera_at", sa.DateTime(), nullable=True))
    op.execute(
        # the audit's ISO text in the form the ledger stores times in
        "UPDATE clips SET gone_from_camera_at = (SELECT strftime('%Y-%m-%d %H:%M:%S', "
        "min(at)) || '.000000' FROM audit_log "
        "WHERE audit_log.clip_id = clips.id AND event = 'clip.vanished_on_camera') "
        "WHERE id IN (SELECT clip_id FROM audit_log WHERE event = 'clip.vanished_on_camera')"
    )
    op.create_index(
        "ix_clips_on_camera",
        "clips",
        ["camera_serial"],
        sqlite_where=sa.text("state != 'cleared' AND gone_from_camera_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_clips_on_camera", table_name="clips")
    op.execute("ALTER TABLE clips DROP COLUMN gone_from_camera_at")
