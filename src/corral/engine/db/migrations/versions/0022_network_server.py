"""networks.served_by: the host that serves an overlay network's gateway, DHCP and DNS

Revision ID: 0022_network_server
Revises: 0021_fencing

Sticky (services/networks.py): chosen once (the first host by name that is up), kept while
that host lives, moved only off a host known to be off (fenced) or removed, so that two
DHCP servers never answer on one segment. NULL: not chosen yet (rows from before, networks
local to each host); a removed host's networks lose it (SET NULL) and are chosen again.
"""

import sqlalchemy as sa
from alembic import op

revision = '0022_network_server'
down_revision = '0021_fencing'


def upgrade() -> None:
    with op.batch_alter_table('networks') as batch:
        batch.add_column(sa.Column('served_by', sa.String(36), nullable=True))
        batch.create_foreign_key('fk_networks_served_by', 'hosts', ['served_by'], ['id'],
                                 ondelete='SET NULL')
    # An existing overlay network is served by the first host by name (the rule before).
    op.execute(sa.text("UPDATE networks SET served_by = (SELECT id FROM hosts ORDER BY name "
                       "LIMIT 1) WHERE vni IS NOT NULL"))


def downgrade() -> None:
    with op.batch_alter_table('networks') as batch:
        batch.drop_constraint('fk_networks_served_by', type_='foreignkey')
        batch.drop_column('served_by')
