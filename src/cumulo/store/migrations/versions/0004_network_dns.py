"""networks: DNS domain (DHCP and DNS by one dnsmasq per network)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.add_column(sa.Column("dns_domain", sa.String(length=253), nullable=False,
                                   server_default="cumulo"))


def downgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.drop_column("dns_domain")
