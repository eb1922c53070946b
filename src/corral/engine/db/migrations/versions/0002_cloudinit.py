"""cloud-init settings of a VM

Revision ID: 0002_cloudinit
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002_cloudinit'
down_revision = '0001'


def upgrade() -> None:
    with op.batch_alter_table('vms', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cloud_init', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('vms', schema=None) as batch_op:
        batch_op.drop_column('cloud_init')
