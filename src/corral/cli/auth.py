"""`corral auth ldap set|show|unset|test`: logins of LDAP / Active Directory users."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.api.ldap import (
    DEFAULT_GROUP_ATTRIBUTE,
    DEFAULT_GROUP_FILTER,
    DEFAULT_USER_FILTER,
    GroupMapping,
    LdapConfig,
    LdapSet,
    parse_group_mapping,
)
from corral.cli import output
from corral.cli.output import DataDirOpt, OutputFormat, OutputOpt, build, client, handled, out
from corral.secret_file import first_line

app = typer.Typer(help="Where users log in from besides corral's own (local) users.",
                  no_args_is_help=True)
ldap_app = typer.Typer(
    help="LDAP / Active Directory logins: users log in (`corral login`) with their directory "
    "password and get roles from their groups (--group-map) at each login. Local users keep "
    "logging in as before, also while the directory is down.",
    no_args_is_help=True)
app.add_typer(ldap_app, name="ldap")


def _mapping_text(m: GroupMapping) -> str:
    return f"{m.group}={m.role}@{m.project}"


def _show(cfg: LdapConfig, fmt: OutputFormat) -> None:
    if fmt == OutputFormat.JSON:
        output.emit(cfg, fmt, [])
        return
    for key, value in cfg.model_dump(mode="json", exclude={"group_map"}).items():
        out.print(f"[bold]{key:18}[/] {value}", highlight=False)
    out.print("[bold]group_map[/]" + ("" if cfg.group_map else "          (none)"))
    for m in cfg.group_map:
        out.print(f"  {_mapping_text(m)}", highlight=False)


@ldap_app.command("set")
def set_ldap(
    url: str = typer.Option(..., "--url", metavar="URL",
                            help="ldap://HOST[:PORT] or ldaps://HOST[:PORT] (the system's CAs "
                            "check an ldaps certificate)"),
    bind_dn: str = typer.Option(..., "--bind-dn", metavar="DN",
                                help="The service account that searches for users, e.g. "
                                "cn=corral,ou=services,dc=example,dc=org"),
    bind_password_file: Path | None = typer.Option(
        None, "--bind-password-file", metavar="FILE",
        help="The service account's password (the file's first line); needed the first "
        "time, else the one set before is kept"),
    base_dn: str = typer.Option(..., "--base-dn", metavar="DN",
                                help="Where users and groups are searched, e.g. "
                                "dc=example,dc=org"),
    user_filter: str = typer.Option(DEFAULT_USER_FILTER, "--user-filter", metavar="FILTER",
                                    help="Finds the user; {username} is the login name, "
                                    "escaped. Active Directory: (sAMAccountName={username})"),
    group_filter: str = typer.Option(DEFAULT_GROUP_FILTER, "--group-filter", metavar="FILTER",
                                     help="Finds the user's groups; {dn} is the user's DN. "
                                     "'' : no group search"),
    group_attribute: str = typer.Option(DEFAULT_GROUP_ATTRIBUTE, "--group-attribute",
                                        metavar="ATTR", help="The user's attribute listing "
                                        "its groups (AD: memberOf). '' : none"),
    group_map: list[str] = typer.Option(
        [], "--group-map", metavar="GROUP_DN=ROLE@PROJECT",
        help="Members of the group get the role on the project ('*': every project); "
        "repeat it. e.g. \"cn=vmadmins,ou=groups,dc=example,dc=org=admin@*\""),
    timeout: float = typer.Option(5.0, "--timeout", metavar="SECONDS",
                                  help="Connect and answer timeout"),
    output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Set (replace) the LDAP configuration. A user whose groups map to no role (and who
    has no role assignment) is refused at login.

    Example: corral auth ldap set --url ldaps://dc1.example.org
    --bind-dn cn=corral,ou=services,dc=example,dc=org --bind-password-file ~/ldap.pw
    --base-dn dc=example,dc=org
    --group-map "cn=vmadmins,ou=groups,dc=example,dc=org=admin@*"
    --group-map "cn=web,ou=groups,dc=example,dc=org=user@web"
    """
    with handled():
        req = build(LdapSet, url=url, bind_dn=bind_dn,
                    bind_password=(first_line(bind_password_file, "bind_password_file")
                                   if bind_password_file else None),
                    base_dn=base_dn, user_filter=user_filter,
                    group_filter=group_filter or None, group_attribute=group_attribute or None,
                    group_map=[parse_group_mapping(m) for m in group_map], timeout_s=timeout)
        with client(data_dir) as c:
            _show(c.set_ldap(req), output_fmt)


@ldap_app.command("show")
def show_ldap(output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """The LDAP configuration (the bind password is never shown: bind_password_set)."""
    with handled(), client(data_dir) as c:
        _show(c.get_ldap(), output_fmt)


@ldap_app.command("unset")
def unset_ldap(data_dir: Path = DataDirOpt) -> None:
    """Turn LDAP logins off (directory users' rows and tokens stay; local users are not
    touched)."""
    with handled(), client(data_dir) as c:
        c.unset_ldap()
        out.print("[green]✓[/] LDAP logins off")


@ldap_app.command("test")
def test_ldap(user: str | None = typer.Option(None, "--user", metavar="NAME",
                                             help="Also look this user up: its DN, groups "
                                             "and the role a login would give it"),
              output_fmt: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Bind as the service account (and find a user): checks the settings without anyone
    logging in. No password of the user is needed."""
    with handled(), client(data_dir) as c:
        res = c.test_ldap(user)
        if output_fmt == OutputFormat.JSON:
            output.emit(res, output_fmt, [])
            return
        out.print(f"[green]✓[/] {res.message}", highlight=False)
        if res.user_dn:
            out.print(f"[bold]user[/]    {res.user_dn}", highlight=False)
            for g in res.groups:
                out.print(f"[bold]group[/]   {g}", highlight=False)
            for m in res.grants:
                out.print(f"[bold]grant[/]   {m.role}@{m.project}  (from {m.group})",
                          highlight=False)
