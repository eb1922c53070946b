"""the scheduler: hosts.tags, vm_groups (affinity groups), vms.group_id

Revision ID: 0013_scheduler
Revises: 0012_host_join

Hosts carry tags a VM can require (`vm create --host-tag ssd`, kept in vms.host_tags so a
later placement asks the same); a VM may belong to one affinity group, which the scheduler
keeps together (affinity) or apart (anti-affinity).
"""

import sqlalchemy as sa
from alembic import op

revision = '0013_scheduler'
down_revision = '0012_host_join'


def upgrade() -> None:
    op.create_table(
        'vm_groups',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(63), nullable=False, unique=True),
        sa.Column('policy', sa.String(20), nullable=False),
        sa.Column('strict', sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    with op.batch_alter_table('hosts') as batch:
        batch.add_column(sa.Column('tags', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('group_id', sa.String(36), nullable=True))
        batch.add_column(sa.Column('host_tags', sa.JSON(), nullable=False, server_default='[]'))
        batch.create_foreign_key('fk_vms_group_id', 'vm_groups', ['group_id'], ['id'])
        batch.create_index('ix_vms_group_id', ['group_id'])


def downgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.drop_index('ix_vms_group_id')
        batch.drop_constraint('fk_vms_group_id', type_='foreignkey')
        batch.drop_column('host_tags')
        batch.drop_column('group_id')
    with op.batch_alter_table('hosts') as batch:
        batch.drop_column('tags')
    op.drop_table('vm_groups')
