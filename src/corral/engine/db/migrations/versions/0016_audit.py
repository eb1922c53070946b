"""audit log: one row per mutating request, login and logout, chained by sha256

Revision ID: 0016_audit
Revises: 0015_projects

``seq`` is the chain order and the primary key: two appenders racing for the same seq
collide on it and one retries, so the chain never forks. ``hash`` is sha256 over the
record's canonical JSON plus ``prev_hash``; retention deletes the oldest rows and verify
starts from the first kept one.
"""

import sqlalchemy as sa
from alembic import op

revision = '0016_audit'
down_revision = '0015_projects'


def upgrade() -> None:
    op.create_table(
        'audit_log',
        sa.Column('seq', sa.Integer, primary_key=True, autoincrement=False),
        sa.Column('time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('user', sa.String(63), nullable=True),
        sa.Column('token_name', sa.String(63), nullable=True),
        sa.Column('client', sa.String(64), nullable=True),
        sa.Column('project', sa.String(63), nullable=False),
        sa.Column('action', sa.String(63), nullable=False),
        sa.Column('target', sa.String(255), nullable=False),
        sa.Column('status', sa.Integer, nullable=False),
        sa.Column('error', sa.String(63), nullable=True),
        sa.Column('prev_hash', sa.String(64), nullable=False),
        sa.Column('hash', sa.String(64), nullable=False),
    )
    op.create_index('ix_audit_log_time', 'audit_log', ['time'])


def downgrade() -> None:
    op.drop_index('ix_audit_log_time', table_name='audit_log')
    op.drop_table('audit_log')
