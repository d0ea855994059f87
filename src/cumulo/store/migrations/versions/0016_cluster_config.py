"""cluster-wide settings (the automatic rebalancer's: ``rebalance.interval``,
``threshold``, ``batch``, ``cooldown``, ``min_gain``) and its last round

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_config",
        sa.Column("key", sa.String(63), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_config")
