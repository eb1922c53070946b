"""Operations: declared locks, owner and lease, cancel requests, project/user/location;
indexes on the foreign keys the engine filters on

Revision ID: 0007_operations_core
Revises: 0006_root_pool

operations.owner is the engine instance that runs the operation (or holds it pending) and
lease_until how long it vouches for that: another engine resumes it only after the lease ran
out. Rows from before have no owner: the next engine start resumes them as before.
nics.network_id and volumes.pool_id need no index of their own: they lead the unique
constraints uq_nics_network_ip and uq_volumes_pool_name, whose indexes serve them.
"""

import sqlalchemy as sa
from alembic import op

revision = '0007_operations_core'
down_revision = '0006_root_pool'

_INDEXES = [  # (table, column)
    ('vms', 'host_id'), ('vms', 'image_id'), ('vms', 'network_id'), ('vms', 'root_pool_id'),
    ('nics', 'vm_id'), ('storage_pools', 'host_id'), ('sg_rules', 'remote_group_id'),
    ('operations', 'created_at'), ('operations', 'owner'),
]


def upgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.add_column(sa.Column('locks', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('project', sa.String(length=63), nullable=True))
        batch.add_column(sa.Column('user', sa.String(length=63), nullable=True))
        batch.add_column(sa.Column('location', sa.String(length=63), nullable=True))
        batch.add_column(sa.Column('owner', sa.String(length=36), nullable=True))
        batch.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('cancel_requested', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    for table, column in _INDEXES:
        op.create_index(f'ix_{table}_{column}', table, [column])


def downgrade() -> None:
    for table, column in reversed(_INDEXES):
        op.drop_index(f'ix_{table}_{column}', table_name=table)
    with op.batch_alter_table('operations') as batch:
        for column in ('cancel_requested', 'lease_until', 'owner', 'location', 'user',
                       'project', 'locks'):
            batch.drop_column(column)
