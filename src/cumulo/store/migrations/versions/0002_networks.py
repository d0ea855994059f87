"""networks and NICs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('networks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('subnet', sa.String(length=43), nullable=False),
    sa.Column('gateway', sa.String(length=45), nullable=False),
    sa.Column('bridge', sa.String(length=15), nullable=False),
    sa.Column('isolated', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('bridge'),
    sa.UniqueConstraint('project_id', 'name', name='uq_network_project_name')
    )
    op.create_table('nics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('network_id', sa.Integer(), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('ip', sa.String(length=45), nullable=False),
    sa.Column('host_name', sa.String(length=15), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['network_id'], ['networks.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('host_name'),
    sa.UniqueConstraint('instance_id', 'idx', name='uq_nic_instance_idx'),
    sa.UniqueConstraint('network_id', 'ip', name='uq_nic_network_ip')
    )


def downgrade() -> None:
    op.drop_table('nics')
    op.drop_table('networks')
