"""vms.hardware: firmware, machine, boot order, CPU model and topology, graphics

Revision ID: 0010_vm_hardware
Revises: 0009_vm_first_nic

api.Hardware as JSON; NULL (every VM made before this) reads as its defaults, which are
what the designer made until now: BIOS, q35, disks then CD-ROMs, host-model, VNC.
"""

import sqlalchemy as sa
from alembic import op

revision = '0010_vm_hardware'
down_revision = '0009_vm_first_nic'


def upgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('hardware', sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('vms') as batch:
        batch.drop_column('hardware')
