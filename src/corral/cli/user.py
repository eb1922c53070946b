"""`corral user ...`, `corral token ...`, `corral login`, `logout` and `whoami`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from corral.api.users import TokenCreate, UserCreate, UserPatch, parse_duration
from corral.cli import output
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, build, client, emit, handled, out
from corral.client import sessions
from corral.errors import InvalidInput, Unauthorized
from corral.secret_file import first_line

app = typer.Typer(help="Local users: who may log in (`corral login`) and with which role "
                  "(viewer, user, operator, admin).", no_args_is_help=True)
token_app = typer.Typer(help="Your API tokens, for scripts and CI: each has a role no higher "
                        "than yours, an optional expiry, and is shown once.",
                        no_args_is_help=True)

USER_COLUMNS = [("NAME", lambda u: u.name), ("ROLE", lambda u: u.role), ("SOURCE", lambda u: u.source),
                ("PASSWORD", lambda u: "set" if u.has_password else "-"),
                ("CREATED", lambda u: u.created_at.strftime("%Y-%m-%d %H:%M"))]


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if t is not None else "-"


TOKEN_COLUMNS = [("NAME", lambda t: t.name), ("ROLE", lambda t: t.role),
                 ("PROJECT", lambda t: t.project or "*"),
                 ("KIND", lambda t: t.kind), ("EXPIRES", lambda t: _when(t.expires_at)),
                 ("LAST USED", lambda t: _when(t.last_used_at))]
ForUserOpt = typer.Option(None, "--user", metavar="NAME",
                          help="Another user's tokens (admins: user.read / user.update)")
PasswordFileOpt = typer.Option(None, "--password-file", metavar="FILE",
                               help="Read the password from the file's first line instead of "
                               "asking for it")


def _password(file: Path | None, prompt: str = "Password", confirm: bool = True) -> str:
    """From the file (its first line), else asked without echo."""
    if file is not None:
        return first_line(file, "password_file")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


_ROLES_HELP = ("admin: everything; operator: all but users, roles, projects and hosts; "
               "user: VMs, volumes, snapshots, consoles; viewer: read only; none: only what "
               "`corral role assign` gives; or a custom role (`corral role create`)")


# -- users ----------------------------------------------------------------------------------

@app.command("create")
def create(
    name: str = typer.Argument(..., help="User name: lowercase letters, digits, '.', '_', '-'"),
    role: str = typer.Option("user", "--role", metavar="ROLE",
                             help="Its role on every project. " + _ROLES_HELP),
    password_file: Path | None = PasswordFileOpt,
    no_password: bool = typer.Option(False, "--no-password",
                                     help="No password login: API tokens only"),
    output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create a local user; its password is asked (twice) unless --password-file.

    Examples: corral user create alice --role operator
              corral user create bob --role none   (then: corral role assign bob user --project web)
    """
    with handled():
        password = None if no_password else _password(password_file)
        req = build(UserCreate, name=name, role=role, password=password)
        with client(data_dir) as c:
            emit(c.create_user(req), output_fmt, USER_COLUMNS)


@app.command("list")
def list_users(output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Every user and its role (never a password)."""
    with handled(), client(data_dir) as c:
        emit(c.list_users(), output_fmt, USER_COLUMNS)


@app.command("show")
def show(name: str = typer.Argument(..., help="User name"),
         output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """One user: its role, whether it has a password, and its tokens."""
    with handled(), client(data_dir) as c:
        emit(c.get_user(name), output_fmt, USER_COLUMNS)
        if output_fmt == OutputFormat.TABLE:
            emit(c.list_user_tokens(name), output_fmt, TOKEN_COLUMNS)


@app.command("set-role")
def set_role(name: str = typer.Argument(..., help="User name"),
             role: str = typer.Argument(..., metavar="ROLE", help=_ROLES_HELP),
             output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Change a user's role on every project: it applies to all its tokens at once."""
    with handled(), client(data_dir) as c:
        emit(c.update_user(name, build(UserPatch, role=role)), output_fmt, USER_COLUMNS)


@app.command("delete")
def delete(name: str = typer.Argument(..., help="User name"),
           data_dir: Path = DataDirOpt) -> None:
    """Delete a user and its tokens (refused for the last admin)."""
    with handled(), client(data_dir) as c:
        c.delete_user(name)
        out.print(f"[green]✓[/] user {name} deleted")


@app.command("passwd")
def passwd(name: str | None = typer.Argument(None, help="The user (an admin's reset); none: "
                                             "your own password, the current one asked"),
           password_file: Path | None = PasswordFileOpt,
           data_dir: Path = DataDirOpt) -> None:
    """Set a password; the user's login sessions end (API tokens stay)."""
    with handled(), client(data_dir) as c:
        if name is None:
            current = typer.prompt("Current password", hide_input=True)
            c.change_password(current, _password(password_file, "New password"))
            out.print("[green]✓[/] password changed")
        else:
            c.set_user_password(name, _password(password_file, f"New password for {name}"))
            out.print(f"[green]✓[/] password of {name} set")


# -- tokens ---------------------------------------------------------------------------------

@token_app.command("create")
def token_create(
    name: str = typer.Option(..., "--name", help="Token name, unique among yours (e.g. ci)"),
    role: str | None = typer.Option(None, "--role", metavar="ROLE",
                                    help="A role whose rights you hold; default: all yours"),
    project: str | None = typer.Option(None, "--project", metavar="PROJECT",
                                       help="The one project it may act in; default: yours"),
    expires: str | None = typer.Option(None, "--expires", metavar="DURATION",
                                       help="e.g. 30d, 12h, 90m; default: never"),
    user: str | None = ForUserOpt,
    output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create an API token (yours, or --user's: a service user without a password, say);
    its secret is printed this once.

    Example: corral token create --name ci --role viewer --project web --expires 30d
    """
    with handled():
        req = build(TokenCreate, name=name, role=role, project=project,
                    expires_in_s=parse_duration(expires) if expires else None)
        with client(data_dir) as c:
            made = c.create_user_token(user, req) if user else c.create_token(req)
        if output_fmt == OutputFormat.JSON:
            print(made.model_dump_json(indent=2))
            return
        emit(made, output_fmt, TOKEN_COLUMNS)
        out.print(f"token (shown once): {made.token}", highlight=False, soft_wrap=True)


@token_app.command("list")
def token_list(user: str | None = ForUserOpt, output_fmt: OutputFormat = OutputOpt,
               data_dir: Path = DataDirOpt) -> None:
    """Your tokens and login sessions (or --user's): role, expiry, last use (never the
    secrets)."""
    with handled(), client(data_dir) as c:
        emit(c.list_user_tokens(user) if user else c.list_tokens(), output_fmt, TOKEN_COLUMNS)


@token_app.command("revoke")
def token_revoke(name: str = typer.Argument(..., help="Token name (`corral token list`)"),
                 user: str | None = ForUserOpt, data_dir: Path = DataDirOpt) -> None:
    """Revoke one of your tokens (or --user's): refused from the next request on."""
    with handled(), client(data_dir) as c:
        if user:
            c.revoke_user_token(user, name)
        else:
            c.revoke_token(name)
        out.print(f"[green]✓[/] token {name} revoked")


# -- the session ------------------------------------------------------------------------------

def login(user: str | None = typer.Option(None, "--user", "-u", help="User name (asked if "
                                          "not given; `admin` is the one `corral up` made)"),
          password_file: Path | None = PasswordFileOpt,
          data_dir: Path = DataDirOpt) -> None:
    """Log in: the password is asked, and the session token (12 h) is kept in the current
    remote's config (or the node's client.json) until `corral logout`."""
    with handled():
        name = user or str(typer.prompt("User", default="admin"))
        password = _password(password_file, confirm=False)
        with client(data_dir) as c:
            answer = c.login(name, password)
        where = sessions.store(answer.token, remote=output.selected_remote,
                               data_dir=None if output.selected_remote else data_dir)
        out.print(f"[green]✓[/] logged in as {answer.user} ({answer.role}) until "
                  f"{answer.expires_at:%Y-%m-%d %H:%M} UTC; session kept in {where}")


def logout(data_dir: Path = DataDirOpt) -> None:
    """Log out: the session token is revoked on the engine and forgotten here."""
    with handled():
        with client(data_dir) as c:
            try:
                me = c.whoami()
            except Unauthorized:  # expired or revoked already: only forget it here
                me = None
            if me is not None and me.kind != "session":
                raise InvalidInput("not logged in: this config holds an API token, not a "
                                   "session (`corral token revoke` revokes tokens)", field="token")
            if me is not None:
                c.logout()
        sessions.store(None, remote=output.selected_remote,
                       data_dir=None if output.selected_remote else data_dir)
        out.print(f"[green]✓[/] {me.user if me else 'session'} logged out")


def whoami(output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Who this config's token is: user, role in effect, token, and what it permits."""
    with handled(), client(data_dir) as c:
        me = c.whoami()
    if output_fmt == OutputFormat.JSON:
        print(me.model_dump_json(indent=2))
        return
    bound = f" · project {me.project} only" if me.project else ""
    out.print(f"user {me.user or '-'} · {me.kind} token {me.token_name} (role {me.role})"
              + bound)
    for project, roles in sorted(me.projects.items()):
        out.print(f"  {'every project' if project == '*' else 'project ' + project}: "
                  + ", ".join(sorted(roles)), highlight=False)
    out.print("permissions: " + ", ".join(me.permissions), highlight=False)
