"""`corral vm ...` commands that reach into the guest: cloud-init settings, `vm ip`, `vm ssh`.

``--ssh-key FILE`` records the key file's absolute path in the VM's cloud-init settings
(``ssh_key_file``, a client-side hint that the engine stores but never uses): `vm ssh` then
offers the private key next to it (``FILE`` without ``.pub``) unless ``-i`` names another.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer
from pydantic import ValidationError

from corral.api import CloudInit, VmAddress, VmPatch
from corral.api.models import CLOUD_INIT_SECRETS
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    WaitOpt,
    client,
    emit,
    follow,
    handled,
    out,
)
from corral.client import Client
from corral.errors import Forbidden, InvalidInput, Unavailable

HostnameOpt = typer.Option(None, "--hostname", help="cloud-init: guest host name (default: VM name)")
UserOpt = typer.Option(None, "--user", help="cloud-init: create this user (sudo, SSH keys)")
SshKeyOpt = typer.Option(None, "--ssh-key",
                         help="cloud-init: SSH public key file ('-': stdin); may be repeated")
PasswordHashOpt = typer.Option(None, "--password-hash",
                               help="cloud-init: crypt(3) password hash (`openssl passwd -6`)")
UserDataOpt = typer.Option(None, "--user-data", help="cloud-init: user-data file (#cloud-config is merged)")
NetworkConfigOpt = typer.Option(None, "--network-config",
                                help="cloud-init: network-config file (v1/v2; default: DHCP)")
CloudInitOpt = typer.Option(False, "--cloud-init", help="Attach a cloud-init seed even with no other option")

ADDRESS_COLUMNS = [
    ("IP", lambda a: a.ip if a.prefix is None else f"{a.ip}/{a.prefix}"),
    ("SOURCE", lambda a: a.source), ("MAC", lambda a: a.mac or "-"),
    ("INTERFACE", lambda a: a.interface or "-"),
]


def _read(path: str, field: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {field} file {path}: {exc}", field=field) from None


def _keys(files: list[str]) -> tuple[list[str], str | None]:
    keys: list[str] = []
    hint = None
    for path in files:
        text = _read(path, "ssh_key")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not lines:
            raise InvalidInput(f"{path} holds no SSH public key", field="ssh_key")
        keys += lines
        if hint is None and path != "-":
            hint = str(Path(path).resolve())
    return keys, hint


def validation_error(exc: ValidationError) -> InvalidInput:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or None
    return InvalidInput(str(first["msg"]).removeprefix("Value error, "), field=field)


def cloud_init_from_flags(
    *, hostname: str | None, user: str | None, ssh_key: list[str] | None,
    password_hash: str | None, user_data: str | None, network_config: str | None,
    force: bool = False, base: CloudInit | None = None,
) -> CloudInit | None:
    """The CloudInit of the command line (over ``base``); None when no option asks for one."""
    given = any(v for v in (hostname, user, ssh_key, password_hash, user_data, network_config))
    if not given and not force and base is None:
        return None
    fields = base.model_dump(exclude_none=True) if base is not None else {}
    for key, value in (("hostname", hostname), ("user", user), ("password_hash", password_hash)):
        if value is not None:
            fields[key] = value
    if ssh_key:
        fields["ssh_authorized_keys"], hint = _keys(ssh_key)
        fields.pop("ssh_key_file", None)
        if hint is not None:
            fields["ssh_key_file"] = hint
    if user_data is not None:
        fields["user_data"] = _read(user_data, "user_data")
    if network_config is not None:
        fields["network_config"] = _read(network_config, "network_config")
    try:
        return CloudInit(**fields)
    except ValidationError as exc:
        raise validation_error(exc) from None


def current_settings(c: Client, name: str, replacing: set[str]) -> CloudInit | None:
    """The VM's settings to change: the shown ones, or, when it has secrets (user-data,
    password hash) not given again, the whole ones, which only vm.secrets may read back."""
    shown = c.get_vm(name).cloud_init
    if shown is None:
        return None
    kept = [k for k in CLOUD_INIT_SECRETS if getattr(shown, f"{k}_set") and k not in replacing]
    if not kept:
        return shown.settings()
    try:
        return c.vm_cloud_init(name)
    except Forbidden:
        flags = " and ".join("--" + k.replace("_", "-") for k in kept)
        raise Forbidden(f"VM {name} has {' and '.join(kept)} set, which your role may not read "
                        f"back (permission vm.secrets) to keep: give {flags} again, or "
                        "--remove the seed", permission="vm.secrets") from None


def set_cloud_init(
    name: str = typer.Argument(..., help="A stopped VM"),
    hostname: str = HostnameOpt, user: str = UserOpt, ssh_key: list[str] = SshKeyOpt,
    password_hash: str = PasswordHashOpt, user_data: str = UserDataOpt,
    network_config: str = NetworkConfigOpt,
    remove: bool = typer.Option(False, "--remove", help="Remove the seed CD-ROM altogether"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Change the cloud-init settings of a stopped VM (options given replace those set); rebuilds the seed."""
    with handled(), client(data_dir) as c:
        if remove:
            patch = VmPatch(cloud_init=None)
        else:
            replacing = {k for k, v in (("user_data", user_data),
                                        ("password_hash", password_hash)) if v is not None}
            current = current_settings(c, name, replacing)
            ci = cloud_init_from_flags(
                hostname=hostname, user=user, ssh_key=ssh_key, password_hash=password_hash,
                user_data=user_data, network_config=network_config, force=True, base=current,
            )
            patch = VmPatch(cloud_init=ci)
        follow(c, c.update_vm(name, patch), f"update cloud-init of VM {name}", wait, output)


def _wait_addresses(name: str, wait: float, data_dir: Path | None) -> list[VmAddress]:
    deadline = time.monotonic() + wait
    with client(data_dir) as c:
        while True:
            found = c.vm_addresses(name)
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(1)


def ip(
    name: str,
    wait: float = typer.Option(0, "--wait", help="Seconds to wait for an address to show up"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """The guest's addresses: DHCP lease of its network, guest agent, host ARP table."""
    with handled():
        found = _wait_addresses(name, max(0.0, wait), data_dir)
        if not found and output == OutputFormat.TABLE:
            out.print(f"VM {name} has no address yet (is it running? does its network give DHCP?)")
            if wait:
                raise typer.Exit(1)
            return
        emit(found, output, ADDRESS_COLUMNS)


def ssh(
    name: str,
    command: list[str] = typer.Argument(None, help="Command to run (after --); none: a shell"),
    user: str = typer.Option(None, "--user", "-l", help="Guest user (default: cloud-init user, else root)"),
    identity: Path = typer.Option(None, "--identity", "-i", help="Private key file"),
    wait: float = typer.Option(0, "--wait", help="Seconds to wait for the guest's address"),
    data_dir: Path = DataDirOpt,
) -> None:
    """SSH into the guest with the key given at create time (the system's `ssh`)."""
    with handled():
        with client(data_dir) as c:
            vm = c.get_vm(name)
        found = _wait_addresses(name, max(0.0, wait), data_dir)
        ipv4 = [a.ip for a in found if ":" not in a.ip]
        if not ipv4:
            raise Unavailable(f"VM {name} has no IPv4 address yet (`corral vm ip {name}`; "
                              "is it running?)")
        ci = vm.cloud_init
        login = user or (ci.user if ci and ci.user else "root")
        key = identity
        if key is None and ci is not None and ci.ssh_key_file:
            private = Path(ci.ssh_key_file).with_suffix("") if ci.ssh_key_file.endswith(".pub") \
                else None
            key = private if private is not None and private.is_file() else None
        # Guests are made and remade on addresses the network hands out again: a host key
        # pinned in ~/.ssh/known_hosts would refuse the next guest on the same address, and
        # the key of a new guest cannot be known beforehand. So no host key checking here.
        argv = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]
        if key is not None:
            argv += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        argv += [f"{login}@{ipv4[0]}"]
        if command:
            argv += ["--", *command]
        sys.stdout.flush()
        try:
            os.execvp("ssh", argv)
        except OSError as exc:
            raise Unavailable(f"cannot run ssh: {exc} (apt-get install openssh-client)") from None


def register(app: typer.Typer) -> None:
    app.command("cloud-init")(set_cloud_init)
    app.command("ip")(ip)
    app.command("ssh")(ssh)
