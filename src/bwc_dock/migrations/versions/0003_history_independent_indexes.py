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

``clip_state_counts``: ``status``, STATUS and the metrics counted clips by state with a
GROUP BY over every clip the dock ever saw, every few seconds. Triggers keep the counts
in the same transaction as each insert, delete and state change, so the answer is a
read of a few rows.

``clip_byte_totals``: the metrics' bytes copied and uploaded ever were two SUMs over
every clip; triggers keep both totals as ``staged_at`` and ``uploaded_at`` are set.

``dockings.sums_due``: whether a docking's SHA256SUMS may need (re)writing. The daemon
looked for such dockings every minute by aggregating every clip of every docking; a
trigger now flags a docking when one of its clips changes state, the anchorer looks
only at flagged dockings (a partial index) and clears the flag once the list is written
or nothing is left to write. Existing dockings start flagged, so the first round after
the upgrade checks each once.
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


    _state_counts()
    _byte_totals()
    _sums_due()


def _state_counts() -> None:
    op.create_table(
        "clip_state_counts",
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.execute(
        "INSERT INTO clip_state_counts (state, count) "
        "SELECT state, count(*) FROM clips GROUP BY state"
    )
    add_one = (
        "INSERT INTO clip_state_counts (state, count) VALUES (NEW.state, 1) "
        "ON CONFLICT (state) DO UPDATE SET count = count + 1;"
    )
    take_one = "UPDATE clip_state_counts SET count = count - 1 WHERE state = OLD.state;"
    op.execute(f"CREATE TRIGGER clips_counted_insert AFTER INSERT ON clips BEGIN {add_one} END")
    op.execute(f"CREATE TRIGGER clips_counted_delete AFTER DELETE ON clips BEGIN {take_one} END")
    op.execute(
        "CREATE TRIGGER clips_counted_state AFTER UPDATE OF state ON clips "
        f"WHEN NEW.state IS NOT OLD.state BEGIN {take_one} {add_one} END"
    )


def _byte_totals() -> None:
    op.create_table(
        "clip_byte_totals",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("bytes", sa.Integer(), nullable=False),
    )
    for kind, column in (("copied", "staged_at"), ("uploaded", "uploaded_at")):
        op.execute(
            f"INSERT INTO clip_byte_totals (kind, bytes) SELECT '{kind}', coalesce(sum(size), 0) "
            f"FROM clips WHERE {column} IS NOT NULL"
        )
        change = (
            f"UPDATE clip_byte_totals SET bytes = bytes + "
            f"CASE WHEN NEW.{column} IS NULL THEN -NEW.size ELSE NEW.size END "
            f"WHERE kind = '{kind}';"
        )
        op.execute(
            f"CREATE TRIGGER clips_{kind}_bytes AFTER UPDATE OF {column} ON clips "
            f"WHEN (OLD.{column} IS NULL) != (NEW.{column} IS NULL) BEGIN {change} END"
        )
        op.execute(
            f"CREATE TRIGGER clips_{kind}_bytes_insert AFTER INSERT ON clips "
            f"WHEN NEW.{column} IS NOT NULL BEGIN UPDATE clip_byte_totals "
            f"SET bytes = bytes + NEW.size WHERE kind = '{kind}'; END"
        )
        op.execute(
            f"CREATE TRIGGER clips_{kind}_bytes_delete AFTER DELETE ON clips "
            f"WHEN OLD.{column} IS NOT NULL BEGIN UPDATE clip_byte_totals "
            f"SET bytes = bytes - OLD.size WHERE kind = '{kind}'; END"
        )


def _sums_due() -> None:
    with op.batch_alter_table("dockings") as batch:
        batch.add_column(
            sa.Column("sums_due", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    op.execute("UPDATE dockings SET sums_due = 1")  # each is checked once after the upgrade
    op.create_index(
        "ix_dockings_sums_due", "dockings", ["id"], sqlite_where=sa.text("sums_due = 1")
    )
    op.execute(
        "CREATE TRIGGER clips_flag_docking AFTER UPDATE OF state ON clips "
        "WHEN NEW.state IS NOT OLD.state "
        "BEGIN UPDATE dockings SET sums_due = 1 WHERE id = NEW.docking_id; END"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER clips_flag_docking")
    op.drop_index("ix_dockings_sums_due", table_name="dockings")
    with op.batch_alter_table("dockings") as batch:
        batch.drop_column("sums_due")
    for kind in ("copied", "uploaded"):
        for suffix in ("", "_insert", "_delete"):
            op.execute(f"DROP TRIGGER clips_{kind}_bytes{suffix}")
    op.drop_table("clip_byte_totals")
    for trigger in ("clips_counted_state", "clips_counted_delete", "clips_counted_insert"):
        op.execute(f"DROP TRIGGER {trigger}")
    op.drop_table("clip_state_counts")
    op.drop_index("ix_clips_staged_copies", table_name="clips")
    op.drop_index("ix_clips_leased", table_name="clips")
    op.drop_index("ix_dockings_open", table_name="dockings")
    op.drop_index("ix_clips_docking_state", table_name="clips")
