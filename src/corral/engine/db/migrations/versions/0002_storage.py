"""storage pools and volumes

Revision ID: 0002_storage
Revises: 0001

Pools (dir, shared, rbd) and their volumes; a volume attached to a VM names it in vm_id
(ON DELETE SET NULL: deleting a VM keeps its volumes). The `default` dir pool is inserted
by `corral up` (services/pools.py ensure_default), not here: its path is the agent's.
"""

import sqlalchemy as sa
from alembic import op

revision = '0002_storage'
down_revision = '0001'


def upgrade() -> None:
    op.create_table(
        'storage_pools',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('type', sa.String(length=10), nullable=False),
        sa.Column('path', sa.String(length=1024), nullable=True),
        sa.Column('ceph_conf', sa.String(length=1024), nullable=True),
        sa.Column('ceph_pool', sa.String(length=63), nullable=True),
        sa.Column('monitors', sa.JSON(), nullable=True),
        sa.Column('host_id', sa.String(length=36), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name='fk_storage_pools_host_id'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name', name='uq_storage_pools_name'),
    )
    op.create_table(
        'volumes',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('pool_id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('format', sa.String(length=10), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('vm_id', sa.String(length=36), nullable=True),
        sa.Column('bus', sa.String(length=10), nullable=True),
        sa.Column('target', sa.String(length=8), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['pool_id'], ['storage_pools.id'], name='fk_volumes_pool_id'),
        sa.ForeignKeyConstraint(['vm_id'], ['vms.id'], name='fk_volumes_vm_id',
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('pool_id', 'name', name='uq_volumes_pool_name'),
    )
    op.create_index('ix_volumes_vm_id', 'volumes', ['vm_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_volumes_vm_id', table_name='volumes')
    op.drop_table('volumes')
    op.drop_table('storage_pools')
