"""Security groups (rules, NIC membership) and per-NIC QoS

Revision ID: 0005_security
Revises: 0004_nics
"""

import sqlalchemy as sa
from alembic import op

revision = '0005_security'
down_revision = '0004_nics'


def upgrade() -> None:
    with op.batch_alter_table('nics') as batch:
        batch.add_column(sa.Column('inbound_kbps', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('outbound_kbps', sa.BigInteger(), nullable=True))
    op.create_table(
        'security_groups',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'sg_rules',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('sg_id', sa.String(length=36), nullable=False),
        sa.Column('direction', sa.String(length=10), nullable=False),
        sa.Column('protocol', sa.String(length=10), nullable=False),
        sa.Column('port_min', sa.Integer(), nullable=True),
        sa.Column('port_max', sa.Integer(), nullable=True),
        sa.Column('cidr', sa.String(length=64), nullable=True),
        sa.Column('remote_group_id', sa.String(length=36), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['sg_id'], ['security_groups.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['remote_group_id'], ['security_groups.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_sg_rules_sg_id', 'sg_rules', ['sg_id'])
    op.create_table(
        'nic_security_groups',
        sa.Column('nic_id', sa.String(length=36), nullable=False),
        sa.Column('sg_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['nic_id'], ['nics.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['sg_id'], ['security_groups.id']),
        sa.PrimaryKeyConstraint('nic_id', 'sg_id'),
    )
    op.create_index('ix_nic_security_groups_sg_id', 'nic_security_groups', ['sg_id'])


def downgrade() -> None:
    op.drop_table('nic_security_groups')
    op.drop_table('sg_rules')
    op.drop_table('security_groups')
    with op.batch_alter_table('nics') as batch:
        batch.drop_column('outbound_kbps')
        batch.drop_column('inbound_kbps')
