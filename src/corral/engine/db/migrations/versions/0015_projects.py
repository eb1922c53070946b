"""projects (name scoping, quotas, sharing), role assignments, custom roles

Revision ID: 0015_projects
Revises: 0014_users

Every VM, network, image, volume, security group and VM group belongs to a project; what
exists today goes to ``default``. A VM's ``name`` column holds its full name: the bare name
in ``default`` (so the domains, disks and seeds of existing VMs keep theirs), ``PROJECT.NAME``
elsewhere ('.' is never part of a name), which is also its libvirt domain and disk name.
``vms.snapshots`` counts the snapshots corral made of a VM (the quota's use: snapshots live on
the hosts). Role assignments give a user or a directory group a role on one project or on all ('*');
directory users keep their groups and the grants of the group map (`corral auth ldap`).
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0015_projects'
down_revision = '0014_users'

_OWNED = ('vms', 'networks', 'images', 'volumes', 'security_groups', 'vm_groups')
_SHAREABLE = ('networks', 'images')


def upgrade() -> None:
    projects = op.create_table(
        'projects',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(63), nullable=False, unique=True),
        sa.Column('description', sa.Text(), nullable=False, server_default=''),
        sa.Column('quotas', sa.JSON(), nullable=False, server_default='{}'),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    op.bulk_insert(projects, [{'id': '00000000-0000-0000-0000-000000000001',
                               'name': 'default', 'description': 'the default project',
                               'quotas': {}, 'created_at': datetime.now(UTC)}])
    for table in _OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('project', sa.String(63), nullable=False,
                                       server_default='default'))
            batch.create_foreign_key(f'fk_{table}_project', 'projects', ['project'], ['name'])
            batch.create_index(f'ix_{table}_project', ['project'])
            if table in _SHAREABLE:
                batch.add_column(sa.Column('shared', sa.Boolean(), nullable=False,
                                           server_default=sa.false()))
    with op.batch_alter_table('vms') as batch:
        batch.add_column(sa.Column('snapshots', sa.Integer(), nullable=False,
                                   server_default='0'))
    op.create_table(
        'roles',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('name', sa.String(63), nullable=False, unique=True),
        sa.Column('description', sa.Text(), nullable=False, server_default=''),
        sa.Column('permissions', sa.JSON(), nullable=False, server_default='[]'),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    op.create_table(
        'role_assignments',
        sa.Column('id', sa.String(36), primary_key=True),
        sa.Column('subject_kind', sa.String(10), nullable=False),  # user | group
        sa.Column('subject', sa.String(255), nullable=False),
        sa.Column('role', sa.String(63), nullable=False),
        sa.Column('project', sa.String(63), nullable=False),  # a project's name or '*'
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.UniqueConstraint('subject_kind', 'subject', 'role', 'project',
                            name='uq_role_assignments'),
    )
    op.create_index('ix_role_assignments_subject', 'role_assignments',
                    ['subject_kind', 'subject'])
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('source', sa.String(10), nullable=False,
                                   server_default='local'))
        batch.add_column(sa.Column('groups', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('grants', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('tokens') as batch:
        batch.add_column(sa.Column('project', sa.String(63), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tokens') as batch:
        batch.drop_column('project')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('grants')
        batch.drop_column('groups')
        batch.drop_column('source')
    op.drop_index('ix_role_assignments_subject', 'role_assignments')
    op.drop_table('role_assignments')
    op.drop_table('roles')
    with op.batch_alter_table('vms') as batch:
        batch.drop_column('snapshots')
    for table in _OWNED:
        with op.batch_alter_table(table) as batch:
            if table in _SHAREABLE:
                batch.drop_column('shared')
            batch.drop_index(f'ix_{table}_project')
            batch.drop_constraint(f'fk_{table}_project', type_='foreignkey')
            batch.drop_column('project')
    op.drop_table('projects')
