"""the ledger's counter triggers generated in one place, from the models

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Migration 0003 created the triggers that keep clips per state, the byte totals and
``dockings.sums_due``, as text of its own. From here on their one definition is
``bwc_dock.ledger.counters``, generated from the models: this step drops every trigger
on ``clips``, recounts the counters from the clips once (so a ledger edited by hand starts
right again) and creates the generated triggers. A later change of the counters is a new
step that calls ``counters.install`` again.
"""

import sqlalchemy as sa
from alembic import op

from bwc_dock.ledger import counters

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _clip_triggers() -> set[str]:
    rows = op.get_bind().execute(
        sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table"),
        {"table": counters.CLIPS},
    )
    return {str(name) for (name,) in rows}


def upgrade() -> None:
    counters.install(op.execute, _clip_triggers())


def downgrade() -> None:
    # 0003's triggers were the same statements as the generated ones of this revision
    counters.install(op.execute, _clip_triggers())
