"""vms.description, vms.memory_target_mib, vms.booted: changing a VM (vm set)

Revision ID: 0011_vm_settings
Revises: 0010_vm_hardware

NULL booted (every VM that ran before this) means nothing is known to be pending.
"""

import sqlalchemy as sa
from alembic import op

revision = '0011_vm_settings'
down_revision = '0010_vm_hardware'


def upgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('description', sa.Text(), nullable=False, server_default=''))
        batch.add_column(sa.Column('memory_target_mib', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('booted', sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.drop_column('booted')
        batch.drop_column('memory_target_mib')
        batch.drop_column('description')
