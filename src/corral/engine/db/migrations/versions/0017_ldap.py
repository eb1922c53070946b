"""auth_ldap: the one LDAP / Active Directory configuration of `corral auth ldap set`

Revision ID: 0017_ldap
Revises: 0016_audit

One row (id 1) or none (LDAP off). The service account's bind password is kept as given
(the engine must send it to bind) and never returned by the API.
"""

import sqlalchemy as sa
from alembic import op

revision = '0017_ldap'
down_revision = '0016_audit'


def upgrade() -> None:
    op.create_table(
        'auth_ldap',
        sa.Column('id', sa.Integer, primary_key=True, autoincrement=False),
        sa.Column('url', sa.String(255), nullable=False),
        sa.Column('bind_dn', sa.String(512), nullable=False),
        sa.Column('bind_password', sa.String(1024), nullable=False),
        sa.Column('base_dn', sa.String(512), nullable=False),
        sa.Column('user_filter', sa.String(512), nullable=False),
        sa.Column('group_filter', sa.String(512), nullable=True),
        sa.Column('group_attribute', sa.String(63), nullable=True),
        sa.Column('group_map', sa.JSON(), nullable=False, server_default='[]'),
        sa.Column('timeout_s', sa.Float(), nullable=False, server_default='5'),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('auth_ldap')
