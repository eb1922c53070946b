"""VM root disks in storage pools; templates marked as such

Revision ID: 0006_root_pool
Revises: 0005_security

vms.root_pool_id: the pool holding the VM's root disk (NULL: the host's own storage dir,
the `default` pool, as before). images.template_vm: the VM a template was made from (NULL:
an imported or built image).
"""

import sqlalchemy as sa
from alembic import op

revision = '0006_root_pool'
down_revision = '0005_security'


def upgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('root_pool_id', sa.String(length=36), nullable=True))
        batch.create_foreign_key('fk_vms_root_pool_id', 'storage_pools', ['root_pool_id'],
                                 ['id'])
    with op.batch_alter_table('images') as batch:
        batch.add_column(sa.Column('template_vm', sa.String(length=63), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('images') as batch:
        batch.drop_column('template_vm')
    with op.batch_alter_table('vms') as batch:
        batch.drop_constraint('fk_vms_root_pool_id', type_='foreignkey')
        batch.drop_column('root_pool_id')
