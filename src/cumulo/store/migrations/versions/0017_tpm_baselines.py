"""measured boot: one recorded baseline (PCRs and event log summary) per VM

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tpm_baselines",
        sa.Column("instance_id", sa.Integer(),
                  sa.ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pcrs", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tpm_baselines")
