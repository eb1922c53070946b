"""fence_methods: how each host is powered off and on (`corral host fence set`)

Revision ID: 0021_fencing
Revises: 0020_vm_ha

One row per method, tried in ``position`` order: the fence agent's name, its options, and
its secret options sealed with the engine's key (``secrets``; ``secret_names`` says which
are set without the values). Gone with their host.
"""

import sqlalchemy as sa
from alembic import op

revision = '0021_fencing'
down_revision = '0020_vm_ha'


def upgrade() -> None:
    op.create_table(
        'fence_methods',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('host_id', sa.String(36), sa.ForeignKey('hosts.id', ondelete='CASCADE'),
                  nullable=False, index=True),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('agent', sa.String(80), nullable=False),
        sa.Column('options', sa.JSON(), nullable=False),
        sa.Column('secrets', sa.Text(), nullable=True),
        sa.Column('secret_names', sa.JSON(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('host_id', 'position'),
    )


def downgrade() -> None:
    op.drop_table('fence_methods')
