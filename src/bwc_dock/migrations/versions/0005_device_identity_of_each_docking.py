"""the device identity each docking saw

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

Each docking records the device the dock saw (the profile that matched, USB vendor and
product ids, filesystem type, label and UUID), so that every custody record can say
which device the camera was; the camera row gains the filesystem type beside its label
and UUID. Older dockings keep NULL: nobody recorded what they were.
"""

import sqlalchemy as sa
from alembic import op


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DOCKING_IDENTITY = (
    ("profile_name", 128),
    ("usb_vendor_id", 8),
    ("usb_product_id", 8),
    ("fs_type", 32),
    ("fs_label", 64),
    ("fs_uuid", 64),
)


def upgrade() -> None:
    # plain ADD COLUMN: a batch copy of the table would drop the triggers of 0003
    for name, length in _DOCKING_IDENTITY:
        op.add_column("dockings", sa.Column(name, sa.String(length=length), nullable=True))
    op.add_column("cameras", sa.Column("fs_type", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE cameras DROP COLUMN fs_type")
    for name, _length in reversed(_DOCKING_IDENTITY):
        op.execute(f"ALTER TABLE dockings DROP COLUMN {name}")
