"""cluster: join tokens, each instance's location (and where it was evacuated from), and
each member's certificate fingerprint (members talk HTTPS and pin it); the members
table itself is the scheduler's (0010)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=False,
                                   server_default=""))
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("location", sa.String(63), nullable=True))
        batch.add_column(sa.Column("origin", sa.String(63), nullable=True))
        batch.add_column(sa.Column("ephemeral", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("ephemeral")
        batch.drop_column("origin")
        batch.drop_column("location")
    op.drop_table("join_tokens")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("fingerprint")
