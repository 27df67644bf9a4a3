"""cameras take turns at uploading; the ledger knows which dockings are anchored

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

``cameras.last_upload_claimed_at``: when several cameras have staged clips, the
uploaders serve the camera whose turn is oldest, so their uploads interleave instead
of one camera's whole shift going first.

``dockings.sums_written_at``: when the docking's SHA256SUMS was last written to
central storage. A docking whose list is missing or older than its last upload is
anchored again by the daemon, so a crash or a storage error at that moment is
repaired without waiting for a hand-run resync. Existing dockings start unanchored:
their lists are (re)written once, with the same content.
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
    with op.batch_alter_table("dockings") as batch:
        batch.add_column(sa.Column("sums_written_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dockings") as batch:
        batch.drop_column("sums_written_at")
    with op.batch_alter_table("cameras") as batch:
        batch.drop_column("last_upload_claimed_at")
