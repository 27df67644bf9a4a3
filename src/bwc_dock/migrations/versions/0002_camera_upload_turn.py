"""cameras take turns at uploading

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

When several cameras have staged clips, the uploaders serve the camera whose
turn is oldest, so their uploads interleave instead of one camera's whole shift
going first.
"""

from alembic import op
import sqlalchemy as sa


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cameras") as batch:
        batch.add_column(sa.Column("last_upload_claimed_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cameras") as batch:
        batch.drop_column("last_upload_claimed_at")
