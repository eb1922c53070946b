"""NICs of VMs: several per VM, MACs unique, static IPs (IPAM reservations)

Revision ID: 0004_nics
Revises: 0002_cloudinit, 0002_networks, 0002_storage

Each existing VM's one NIC (vms.network_id, vms.mac) becomes its first row (idx 0). The old
columns stay and keep naming the first NIC (older readers: `vm show`, addresses).
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = '0004_nics'
down_revision = ('0002_cloudinit', '0002_networks', '0002_storage')


def upgrade() -> None:
    op.create_table(
        'nics',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('vm_id', sa.String(length=36), nullable=False),
        sa.Column('network_id', sa.String(length=36), nullable=False),
        sa.Column('mac', sa.String(length=17), nullable=False),
        sa.Column('ip', sa.String(length=64), nullable=True),
        sa.Column('idx', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False, server_default='ready'),
        sa.ForeignKeyConstraint(['vm_id'], ['vms.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['network_id'], ['networks.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('mac', name='uq_nics_mac'),
        sa.UniqueConstraint('network_id', 'ip', name='uq_nics_network_ip'),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, network_id, mac FROM vms WHERE network_id IS NOT NULL AND mac IS NOT NULL"))
    nics = sa.table('nics', sa.column('id'), sa.column('vm_id'), sa.column('network_id'),
                    sa.column('mac'), sa.column('idx'), sa.column('status'))
    values = [{"id": str(uuid.uuid4()), "vm_id": vm_id, "network_id": net_id, "mac": mac,
               "idx": 0, "status": "ready"} for vm_id, net_id, mac in rows]
    if values:
        op.bulk_insert(nics, values)


def downgrade() -> None:
    op.drop_table('nics')
