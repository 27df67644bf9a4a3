"""the fleet assignment records a dock handled, found without reading the whole audit log

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Every ``bwc-dock ingest`` and every daemon start asks which fleet assignment records
this dock has applied or refused (the ``camera.assigned`` and
``camera.fleet_assignment_refused`` audit rows). With no index on the event that read
every audit row ever written: 0.6 s on a ledger of a million clips, and a write lock
held meanwhile. The partial index ``ix_audit_log_fleet_records`` holds only those rows.
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_log_fleet_records",
        "audit_log",
        ["id"],
        sqlite_where=sa.text(
            "event IN ('camera.assigned', 'camera.fleet_assignment_refused')"
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_log_fleet_records", table_name="audit_log")
