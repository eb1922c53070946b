"""vms.ha, ha_priority, restart_policy, ha_restarts, ha_reason: high availability of a VM

Revision ID: 0020_vm_ha
Revises: 0019_evacuation

``ha``: corral brings the VM back when it goes down without being asked to (restart in
place, restart elsewhere when its host fails). ``ha_priority`` (0..1000, higher first)
orders the restarts. ``restart_policy``: ``always`` (any stop not asked through corral) or
``on-failure`` (a crash only: a guest that powers itself off stays off). ``ha_restarts``:
the times (epoch seconds) of its recent restarts in place, kept in the database so an
engine restart does not reset the budget of a crash-looping VM. ``ha_reason``: why HA
left it down (budget spent...), NULL when it did not. Existing VMs are not HA.
"""

import sqlalchemy as sa
from alembic import op

revision = '0020_vm_ha'
down_revision = '0019_evacuation'


def upgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('ha', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column('ha_priority', sa.Integer(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('restart_policy', sa.String(12), nullable=False,
                                   server_default='always'))
        batch.add_column(sa.Column('ha_restarts', sa.JSON(), nullable=False,
                                   server_default='[]'))
        batch.add_column(sa.Column('ha_reason', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.drop_column('ha_reason')
        batch.drop_column('ha_restarts')
        batch.drop_column('restart_policy')
        batch.drop_column('ha_priority')
        batch.drop_column('ha')
