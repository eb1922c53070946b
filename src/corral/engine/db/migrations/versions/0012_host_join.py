"""hosts join with a one-time token and get a certificate: join_tokens, hosts.cert_fingerprint

Revision ID: 0012_host_join
Revises: 0011_vm_settings

The shared agent token (hosts.token) goes: engine and agent authenticate each other with
certificates of the engine's CA. A host registered before this has no certificate and must
join again (`corral up` does it for its local agent).
"""

import sqlalchemy as sa
from alembic import op

revision = '0012_host_join'
down_revision = '0011_vm_settings'


def upgrade() -> None:
    op.create_table(
        'join_tokens',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('token_hash', sa.String(64), nullable=False, unique=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('used_at', sa.DateTime(), nullable=True),
        sa.Column('used_by', sa.String(63), nullable=True),
    )
    with op.batch_alter_table('hosts') as batch:
        batch.add_column(sa.Column('cert_fingerprint', sa.String(64), nullable=True))
        batch.drop_column('token')


def downgrade() -> None:
    with op.batch_alter_table('hosts') as batch:
        batch.add_column(sa.Column('token', sa.String(128), nullable=False, server_default=''))
        batch.drop_column('cert_fingerprint')
    op.drop_table('join_tokens')
