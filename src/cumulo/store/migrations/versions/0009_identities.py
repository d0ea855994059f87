"""identities, their roles per project, the audit log; remotes pin a certificate

Identities are bearer tokens kept as sha256; the migration tokens of 0007 become
identities of kind ``remote``. A remote keeps the sha256 of its certificate.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "identity_roles",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("identity_id", sa.Integer(),
                  sa.ForeignKey("identities.id", ondelete="CASCADE"), nullable=False),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.UniqueConstraint("identity_id", "project", name="uq_identity_role_project"),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("identity", sa.String(63), nullable=False),
        sa.Column("project", sa.String(63), nullable=True, index=True),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("object", sa.String(255), nullable=False),
        sa.Column("result", sa.Integer(), nullable=False),
    )
    op.execute("INSERT INTO identities (name, kind, admin, sha256, created_at)"
               " SELECT name, 'remote', false, sha256, created_at FROM tokens")
    op.drop_table("tokens")
    with op.batch_alter_table("remotes") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=False,
                                   server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("remotes") as batch:
        batch.drop_column("fingerprint")
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute("INSERT INTO tokens (name, sha256, created_at)"
               " SELECT name, sha256, created_at FROM identities WHERE kind = 'remote'")
    op.drop_table("audit")
    op.drop_table("identity_roles")
    op.drop_table("identities")
