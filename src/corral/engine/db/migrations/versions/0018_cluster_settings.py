"""cluster_settings: the settings of the whole cluster (`corral cluster set KEY VALUE`)

Revision ID: 0018_cluster_settings
Revises: 0017_ldap

One row per setting an admin set; a setting without a row has its default (declared in
corral.engine.services.cluster_settings), so a new setting needs no migration.
"""

import sqlalchemy as sa
from alembic import op

revision = '0018_cluster_settings'
down_revision = '0017_ldap'


def upgrade() -> None:
    op.create_table(
        'cluster_settings',
        sa.Column('key', sa.String(63), primary_key=True),
        sa.Column('value', sa.JSON(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('cluster_settings')
