"""`corral vm show` hides a VM's cloud-init user-data and password hash; `vm show --secrets`
reads them back for those with vm.secrets; `vm cloud-init` keeps them when it changes other
settings, and tells a caller who may not read them to give them again.

A real engine over HTTPS (uvicorn on loopback) whose host is a stand-in agent; HOME is the
test's own, its client.json holds the token of the role under test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from api_server import QuickHost, serving
from engine_seed import seed_node
from typer.testing import CliRunner, Result

from corral.api import CloudInit
from corral.cli.main import app as cli_app
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Nic, Vm
from corral.engine.services import users, vm_cloudinit
from corral.engine.services.auth import create_token
from corral.engine.tls import ensure_tls
from corral.node import paths

ENV = ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_CA", "CORRAL_DATA_DIR", "CORRAL_REMOTE")
USER_DATA = "#cloud-config\nruncmd:\n- echo marker-ud-51c0aa\n"
PASSWORD_HASH = "$6$salt51c0$" + "H" * 86
NEW_HASH = "$6$saltnew1$" + "N" * 86

As = Callable[[str], None]  # switch the CLI's token to a new user of this role


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[EngineContext, As]]:
    """A stopped VM ``idle`` with user-data and a password hash; the CLI as admin."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "home" / ".config" / "corral" / "client.json"
    monkeypatch.setattr(paths, "USER_CONFIG", config)
    monkeypatch.setattr(paths, "DEFAULT_DATA_DIR", tmp_path / "no-node")
    data = tmp_path / "node"
    ctx = build_context(EngineSettings(data_dir=data, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(QuickHost())
    with ctx.db.session() as s:
        host = seed_node(s, str(tmp_path), str(tmp_path))
        vm = Vm(name="idle", image_id=s.query(Image).one().id, host_id=host.id, cpus=1,
                memory_mib=64, disk_bytes=64 << 20, state="stopped", desired_power="stopped",
                cloud_init=vm_cloudinit.stored(CloudInit(
                    hostname="first", password_hash=PASSWORD_HASH, user_data=USER_DATA)))
        s.add(vm)
        s.flush()
        s.add(Nic(vm_id=vm.id, network_id=s.query(Network).one().id,
                  mac="52:54:00:00:00:02", idx=0))
    ca, cert, key = ensure_tls(data / "tls")
    try:
        with serving(create_app(ctx), 0, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
            url = url.replace("http://", "https://")

            def as_role(role: str) -> None:
                token = create_token(ctx, "admin")
                if role != "admin":
                    users.create(ctx, f"u-{role}", role, None)
                    token = create_token(ctx, "t", role, user=f"u-{role}")
                paths.write_private(config, json.dumps({"url": url, "token": token,
                                                        "ca": str(ca)}))

            as_role("admin")
            yield ctx, as_role
    finally:
        ctx.ops.shutdown()


def cli(*args: str) -> Result:
    return CliRunner().invoke(cli_app, list(args))


def shown(*args: str) -> dict[str, object]:
    res = cli("vm", "show", "idle", "-o", "json", *args)
    assert res.exit_code == 0, res.output
    ci = json.loads(res.stdout)["cloud_init"]
    assert isinstance(ci, dict)
    return ci


def secrets(ctx: EngineContext) -> tuple[str | None, str | None]:
    ci = vm_cloudinit.settings(ctx, "idle")
    return ci.user_data, ci.password_hash


def test_vm_show_hides_them_and_secrets_shows_them(engine: tuple[EngineContext, As]) -> None:
    ci = shown()
    assert ci["user_data"] is None and ci["password_hash"] is None
    assert ci["user_data_set"] is True and ci["password_hash_set"] is True
    assert "marker-ud" not in cli("vm", "show", "idle").output  # the table too
    ci = shown("--secrets")
    assert ci["user_data"] == USER_DATA and ci["password_hash"] == PASSWORD_HASH


def test_a_user_is_refused_the_secrets(engine: tuple[EngineContext, As]) -> None:
    _, as_role = engine
    as_role("user")
    assert shown()["user_data_set"] is True
    res = cli("vm", "show", "idle", "--secrets")
    assert res.exit_code == 2 and "vm.secrets" in res.output, res.output
    assert "marker-ud" not in res.output


def test_cloud_init_changes_keep_the_secrets(engine: tuple[EngineContext, As]) -> None:
    ctx, _ = engine
    res = cli("vm", "cloud-init", "idle", "--hostname", "second")
    assert res.exit_code == 0, res.output
    assert shown()["hostname"] == "second"
    assert secrets(ctx) == (USER_DATA, PASSWORD_HASH)


def test_a_user_changing_cloud_init_gives_the_secrets_again(
        engine: tuple[EngineContext, As], tmp_path: Path) -> None:
    ctx, as_role = engine
    as_role("user")
    res = cli("vm", "cloud-init", "idle", "--hostname", "second")
    assert res.exit_code == 2, res.output
    assert "--user-data" in res.output and "--password-hash" in res.output
    assert shown()["hostname"] == "first" and secrets(ctx) == (USER_DATA, PASSWORD_HASH)
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\nruncmd:\n- echo other\n")
    res = cli("vm", "cloud-init", "idle", "--hostname", "second",
              "--user-data", str(user_data), "--password-hash", NEW_HASH)
    assert res.exit_code == 0, res.output
    assert shown()["hostname"] == "second"
    assert secrets(ctx) == (user_data.read_text(), NEW_HASH)
