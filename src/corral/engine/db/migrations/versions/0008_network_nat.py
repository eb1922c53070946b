"""networks.nat dropped: the mode says it (mode = 'nat')

Revision ID: 0008_network_nat
Revises: 0007_operations_core

0002_networks made ``mode`` the network's kind and kept ``nat`` (mode = 'nat') for readers
older than modes; nothing reads it any more, and the API's ``nat`` is computed from the
mode. A downgrade computes it again.
"""

import sqlalchemy as sa
from alembic import op

revision = '0008_network_nat'
down_revision = '0007_operations_core'


def upgrade() -> None:
    with op.batch_alter_table('networks') as batch:
        batch.drop_column('nat')


def downgrade() -> None:
    with op.batch_alter_table('networks') as batch:
        batch.add_column(sa.Column('nat', sa.Boolean(), nullable=False,
                                   server_default=sa.true()))
    op.execute("UPDATE networks SET nat = (mode = 'nat')")
