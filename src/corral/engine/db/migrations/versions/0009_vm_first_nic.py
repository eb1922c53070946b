"""vms.network_id and vms.mac dropped: a VM's NICs are its nics rows

Revision ID: 0009_vm_first_nic
Revises: 0008_network_nat

0004_nics made every NIC a row of ``nics`` and kept ``vms.network_id``/``vms.mac`` naming
the first one for readers older than NICs, which made every reader handle VMs known only by
those columns. Such a VM (written by an engine older than 0004's code) gets its NIC row
first; then the columns go. A downgrade fills them from each VM's first NIC.
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = '0009_vm_first_nic'
down_revision = '0008_network_nat'


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT v.id, v.network_id, v.mac FROM vms v WHERE v.network_id IS NOT NULL "
        "AND v.mac IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nics n WHERE n.mac = v.mac)"))
    nics = sa.table('nics', sa.column('id'), sa.column('vm_id'), sa.column('network_id'),
                    sa.column('mac'), sa.column('idx'), sa.column('status'))
    taken = {vm_id for (vm_id,) in bind.execute(sa.text(
        "SELECT vm_id FROM nics WHERE idx = 0"))}
    values = [{"id": str(uuid.uuid4()), "vm_id": vm_id, "network_id": net_id, "mac": mac,
               # first, before any NIC the VM has: it was the one the VM was made with
               "idx": 0 if vm_id not in taken else -1, "status": "ready"}
              for vm_id, net_id, mac in rows]
    if values:
        op.bulk_insert(nics, values)
    op.drop_index('ix_vms_network_id', table_name='vms')
    with op.batch_alter_table('vms') as batch:
        batch.drop_column('network_id')
        batch.drop_column('mac')


def downgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('network_id', sa.String(length=36), nullable=True))
        batch.add_column(sa.Column('mac', sa.String(length=17), nullable=True))
        batch.create_foreign_key('fk_vms_network_id', 'networks', ['network_id'], ['id'])
        batch.create_unique_constraint('uq_vms_mac', ['mac'])
    op.create_index('ix_vms_network_id', 'vms', ['network_id'])
    op.execute("UPDATE vms SET network_id = (SELECT n.network_id FROM nics n WHERE "
               "n.vm_id = vms.id ORDER BY n.idx LIMIT 1), mac = (SELECT n.mac FROM nics n "
               "WHERE n.vm_id = vms.id ORDER BY n.idx LIMIT 1)")
