"""overlapping subnets: a network whose subnet overlaps another project's keeps its
gateway, DHCP/DNS and NAT in a network namespace of its own on each host

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.add_column(sa.Column("own_netns", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.drop_column("own_netns")
