"""vms.evacuation: what `corral host maintenance` does with each VM

Revision ID: 0019_evacuation
Revises: 0018_cluster_settings

``auto`` (live migration if it can, else stop, move and start on the target), ``migrate``
(live only: a VM that cannot move live holds the maintenance up) or ``stop`` (stopped,
left on its host). Existing VMs get ``auto``.
"""

import sqlalchemy as sa
from alembic import op

revision = '0019_evacuation'
down_revision = '0018_cluster_settings'


def upgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('evacuation', sa.String(10), nullable=False,
                                   server_default='auto'))


def downgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.drop_column('evacuation')
