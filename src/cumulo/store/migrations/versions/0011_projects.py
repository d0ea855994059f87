"""projects: settings (quotas, defaults, restrictions, features) and the project of an
operation

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("config", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("project", sa.String(63), nullable=False,
                                   server_default="default"))
        batch.create_index("ix_operations_project", ["project"])


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_index("ix_operations_project")
        batch.drop_column("project")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("config")
