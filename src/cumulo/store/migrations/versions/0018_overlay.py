"""overlay networks: a network's type, VXLAN VNI (unique) and MTU; each member's side
of an overlay (its tunnel device, local address, peers) in ``overlay_tunnels``

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.add_column(sa.Column("type", sa.String(16), nullable=False,
                                   server_default="bridge"))
        batch.add_column(sa.Column("vni", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("mtu", sa.Integer(), nullable=True))
        batch.create_unique_constraint("uq_networks_vni", ["vni"])
    op.create_table(
        "overlay_tunnels",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("network_id", sa.Integer(),
                  sa.ForeignKey("networks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("member", sa.String(63), nullable=False),
        sa.Column("state", sa.String(255), nullable=False, server_default=""),
        sa.Column("device", sa.String(15), nullable=False, server_default=""),
        sa.Column("local", sa.String(45), nullable=False, server_default=""),
        sa.Column("peers", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("network_id", "member", name="uq_tunnel_member"),
    )


def downgrade() -> None:
    op.drop_table("overlay_tunnels")
    with op.batch_alter_table("networks") as batch:
        batch.drop_constraint("uq_networks_vni", type_="unique")
        batch.drop_column("mtu")
        batch.drop_column("vni")
        batch.drop_column("type")
