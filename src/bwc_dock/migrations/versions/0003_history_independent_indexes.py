"""indexes so that no hot-path query reads rows in proportion to the ledger's history

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Found with ``scripts/bench_ledger.py --explain`` on a ledger of 100,000 uploaded clips:

``ix_clips_docking_state``: a docking's clips by state (is the offload done, which clips
go in its SHA256SUMS, what recovery resumes) scanned the whole clips table, once per
clip finished: an ingest of 20 clips grew with every clip the dock had ever seen.

``ix_dockings_open``: the dockings still open (recovery, the daemon's start) scanned
every docking there ever was; a partial index holds only the open ones.

``ix_clips_leased``: the clips a worker holds (recovery takes back a dead worker's
leases) scanned every clip; the partial index holds only leased clips.

``ix_clips_staged_copies``: the daemon's staging purge looked for uploaded clips whose
staged copy is still on disk among every uploaded clip; the partial index holds only the
clips that still have a staged copy, which staging's size bounds.
"""

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_clips_docking_state", "clips", ["docking_id", "state"])
    op.create_index(
        "ix_dockings_open",
        "dockings",
        ["id"],
        sqlite_where=sa.text("undocked_at IS NULL"),
    )
    op.create_index(
        "ix_clips_leased", "clips", ["id"], sqlite_where=sa.text("lease_owner IS NOT NULL")
    )
    op.create_index(
        "ix_clips_staged_copies",
        "clips",
        ["uploaded_at"],
        sqlite_where=sa.text("staged_path IS NOT NULL AND staged_purged_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_clips_staged_copies", table_name="clips")
    op.drop_index("ix_clips_leased", table_name="clips")
    op.drop_index("ix_dockings_open", table_name="dockings")
    op.drop_index("ix_clips_docking_state", table_name="clips")
