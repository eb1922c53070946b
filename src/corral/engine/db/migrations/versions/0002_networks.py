"""networks as a resource: modes, backends, VLAN, overlay, status

Revision ID: 0002_networks
Revises: 0001

The bridge is no longer unique (VLAN networks share a trunk) and a bridge-mode network has
no subnet, gateway or DHCP range. Existing networks (the `default` of `corral up`) become
ready NAT networks on a Linux bridge with the DNS domain `corral` they were built with.
"""

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision = '0002_networks'
down_revision = '0001'

# SQLite reflects 0001's unnamed UNIQUE(bridge) without a name: batch mode names it so.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
_ADDRESSES = ('subnet', 'gateway', 'dhcp_start', 'dhcp_end')


def _columns(batch_op: BatchOperations) -> None:
    add = batch_op.add_column
    add(sa.Column('mode', sa.String(length=20), nullable=False, server_default='nat'))
    add(sa.Column('backend', sa.String(length=20), nullable=False, server_default='linuxbridge'))
    add(sa.Column('vlan', sa.Integer(), nullable=True))
    add(sa.Column('overlay', sa.String(length=20), nullable=True))
    add(sa.Column('vni', sa.Integer(), nullable=True))
    add(sa.Column('dns_domain', sa.String(length=253), nullable=True))
    add(sa.Column('status', sa.String(length=20), nullable=False, server_default='ready'))
    for name in _ADDRESSES:
        batch_op.alter_column(name, existing_type=sa.String(length=64), nullable=True)


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('networks', naming_convention=_NAMING,
                                  recreate='always') as batch_op:
            batch_op.drop_constraint('uq_networks_bridge', type_='unique')
            _columns(batch_op)
            batch_op.create_unique_constraint('uq_networks_vni', ['vni'])
    else:
        op.drop_constraint('networks_bridge_key', 'networks', type_='unique')
        with op.batch_alter_table('networks') as batch_op:
            _columns(batch_op)
            batch_op.create_unique_constraint('uq_networks_vni', ['vni'])
    op.execute("UPDATE networks SET dns_domain = 'corral' WHERE dns_domain IS NULL "
               "AND mode = 'nat'")


def downgrade() -> None:
    op.execute("DELETE FROM networks WHERE subnet IS NULL")
    with op.batch_alter_table('networks', naming_convention=_NAMING,
                              recreate='auto') as batch_op:
        batch_op.drop_constraint('uq_networks_vni', type_='unique')
        for name in ('status', 'dns_domain', 'vni', 'overlay', 'vlan', 'backend', 'mode'):
            batch_op.drop_column(name)
        for name in _ADDRESSES:
            batch_op.alter_column(name, existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint('uq_networks_bridge', ['bridge'])
