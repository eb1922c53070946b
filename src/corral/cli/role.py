"""`corral role ...`: custom roles, and who holds which role on which project."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from corral.api.projects import RoleAssignmentIn, RoleCreate
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, build, client, emit, handled, out

app = typer.Typer(help="Roles are sets of permissions (`corral role permissions`); a role is "
                  "given to a user or a directory group (@GROUP) on one project or on every "
                  "one (*). Built in: admin, operator, user, viewer, none.",
                  no_args_is_help=True)

_SHOWN = 4  # permissions a table row names before it counts the rest


def _perms(perms: list[str]) -> str:
    if len(perms) <= _SHOWN:
        return ", ".join(perms) or "-"
    return f"{', '.join(perms[:_SHOWN])}, ... ({len(perms)} in all)"


ROLE_COLUMNS: list[tuple[str, Any]] = [
    ("NAME", lambda r: r.name), ("KIND", lambda r: "built-in" if r.builtin else "custom"),
    ("PERMISSIONS", lambda r: _perms(r.permissions)), ("DESCRIPTION", lambda r: r.description)]
ASSIGNMENT_COLUMNS: list[tuple[str, Any]] = [
    ("SUBJECT", lambda a: a.subject), ("KIND", lambda a: a.kind), ("ROLE", lambda a: a.role),
    ("PROJECT", lambda a: a.project),
    ("CREATED", lambda a: a.created_at.strftime("%Y-%m-%d %H:%M"))]
SubjectArg = typer.Argument(..., metavar="USER|@GROUP",
                            help="A user name, or @ then a directory (LDAP) group")
OnProjectOpt = typer.Option("*", "--project", "-p", metavar="P",
                            help="The project it holds on; * (quote it): every project")


@app.command("list")
def list_roles(output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """The built-in roles, least to most, then the custom ones (-o json: every permission)."""
    with handled(), client(data_dir) as c:
        emit(c.list_roles(), output_fmt, ROLE_COLUMNS)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Role name: letters, digits, '-', '_'"),
    permission: list[str] = typer.Option(
        ..., "--permission", "-P", metavar="PATTERN",
        help="A permission or a pattern of them (vm.*, *.read); repeat it"),
    description: str = typer.Option("", "--description", "-d", help="What it is for"),
    output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create a custom role: every permission its patterns match.

    `corral role permissions` lists them. Quote patterns so the shell leaves the * alone.

    Examples: corral role create vmrunner --permission 'vm.*' --permission snapshot.read
              corral role create auditor -P '*.read' -d "reads everything"
    """
    with handled():
        req = build(RoleCreate, name=name, permissions=permission, description=description)
        with client(data_dir) as c:
            emit(c.create_role(req), output_fmt, ROLE_COLUMNS)


@app.command("delete")
def delete(name: str = typer.Argument(..., help="A custom role's name"),
           data_dir: Path = DataDirOpt) -> None:
    """Delete a custom role nobody holds (`corral role unassign` first).

    Built-in roles stay."""
    with handled(), client(data_dir) as c:
        c.delete_role(name)
        out.print(f"[green]✓[/] role {name} deleted")


@app.command("permissions")
def permissions(output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Every permission a role may hold, resource.action (what --permission matches)."""
    with handled(), client(data_dir) as c:
        names = c.list_permissions()
    if output_fmt == OutputFormat.JSON:
        print(json.dumps(names, indent=2))
        return
    for name in names:
        out.print(name, highlight=False)


@app.command("assign")
def assign(subject: str = SubjectArg,
           role: str = typer.Argument(..., help="A role (`corral role list`)"),
           project: str = OnProjectOpt,
           output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Give a user or a directory group a role on one project or on all.

    It holds from their next request on.

    Examples: corral role assign alice user --project web
              corral role assign @ops operator --project web
              corral role assign carol viewer            (on every project)
    """
    with handled():
        req = build(RoleAssignmentIn, subject=subject, role=role, project=project)
        with client(data_dir) as c:
            emit(c.assign_role(req), output_fmt, ASSIGNMENT_COLUMNS)


@app.command("unassign")
def unassign(subject: str = SubjectArg,
             role: str = typer.Argument(..., help="The role it holds"),
             project: str = OnProjectOpt, data_dir: Path = DataDirOpt) -> None:
    """Take back a role given with `corral role assign` (same subject, role and project).

    Example: corral role unassign @ops operator --project web
    """
    with handled(), client(data_dir) as c:
        c.unassign_role(subject, role, project)
        out.print(f"[green]✓[/] {subject} no longer holds {role} on {project}",
                  highlight=False)


@app.command("assignments")
def assignments(
    user: str | None = typer.Option(None, "--user", "-u", metavar="USER|@GROUP",
                                    help="Only this user's, or this group's"),
    project: str | None = typer.Option(None, "--project", "-p", metavar="P",
                                       help="Only those on this project (*: on every one)"),
    output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Who holds which role where (a user's global role is `corral user list`'s).

    Examples: corral role assignments --project web
              corral role assignments --user @ops
    """
    with handled(), client(data_dir) as c:
        emit(c.list_role_assignments(user, project), output_fmt, ASSIGNMENT_COLUMNS)
