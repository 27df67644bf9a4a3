"""whether a staged copy was verified, in the ledger

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-05

A clip is ``staged`` either with its staged copy verified by a re-read from disk or with
that left to its upload's own read (the one-read hand-over). The ledger now records
which, so that a process started after a crash treats a copy left for its upload as the
running daemon does: a damaged one is read off the camera again, not quarantined.
Existing clips count as verified: they were, or the rule of their time applies.
"""

import sqlalchemy as sa
from alembic import op


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN: a batch copy of the table would drop the triggers of 0003
    op.add_column(
        "clips",
        sa.Column("staged_verified", sa.Boolean(), nullable=False, server_default=sa.text("1")),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE clips DROP COLUMN staged_verified")
