"""users (argon2id passwords, roles); tokens per user, with kind, expiry and last use

Revision ID: 0014_users
Revises: 0013_scheduler

Token names become unique per user rather than across the engine (two users may each
have a token ``ci``); the engine's own tokens (no user) keep working as they are.
"""

import sqlalchemy as sa
from alembic import op

revision = '0014_users'
down_revision = '0013_scheduler'

# The unnamed UNIQUE(name) of 0001 gets a name while SQLite's table is rebuilt, to drop it.
_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _unique_name() -> str:
    """The name of 0001's UNIQUE(name): PostgreSQL gave it one (``tokens_name_key``);
    SQLite's has none, and gets ``uq_tokens_name`` from ``_NAMES``."""
    for uc in sa.inspect(op.get_bind()).get_unique_constraints('tokens'):
        if uc['column_names'] == ['name'] and uc['name']:
            return str(uc['name'])
    return 'uq_tokens_name'


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(63), nullable=False, unique=True),
        sa.Column('password_hash', sa.String(255), nullable=True),
        sa.Column('role', sa.String(20), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table('tokens', naming_convention=_NAMES) as batch:
        batch.drop_constraint(_unique_name(), type_='unique')
        batch.add_column(sa.Column('user_id', sa.String(36), nullable=True))
        batch.add_column(sa.Column('kind', sa.String(10), nullable=False, server_default='api'))
        batch.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key('fk_tokens_user_id', 'users', ['user_id'], ['id'],
                                 ondelete='CASCADE')
        batch.create_index('ix_tokens_user_id', ['user_id'])
        batch.create_unique_constraint('uq_tokens_user_name', ['user_id', 'name'])


def downgrade() -> None:
    op.execute("DELETE FROM tokens WHERE user_id IS NOT NULL")
    with op.batch_alter_table('tokens') as batch:
        batch.drop_constraint('uq_tokens_user_name', type_='unique')
        batch.drop_index('ix_tokens_user_id')
        batch.drop_constraint('fk_tokens_user_id', type_='foreignkey')
        batch.drop_column('last_used_at')
        batch.drop_column('expires_at')
        batch.drop_column('kind')
        batch.drop_column('user_id')
        batch.create_unique_constraint('uq_tokens_name', ['name'])
    op.drop_table('users')
