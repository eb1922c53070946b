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

import pytest
from api_server import QuickHost
from cli_node import cli, serving_node
from engine_seed import add_stopped_vm, user_token

from corral.api import CloudInit
from corral.engine.context import EngineContext
from corral.engine.services import vm_cloudinit

USER_DATA = "#cloud-config\nruncmd:\n- echo marker-ud-51c0aa\n"
PASSWORD_HASH = "$6$salt51c0$" + "H" * 86
NEW_HASH = "$6$saltnew1$" + "N" * 86

As = Callable[[str], None]  # switch the CLI's token to a new user of this role


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[EngineContext, As]]:
    """A stopped VM ``idle`` with user-data and a password hash; the CLI as admin."""
    idle = CloudInit(hostname="first", password_hash=PASSWORD_HASH, user_data=USER_DATA)
    with serving_node(tmp_path, monkeypatch, QuickHost(),
                      lambda s, host: add_stopped_vm(s, host, idle)) as node:

        def as_role(role: str) -> None:
            node.use_token(node.token if role == "admin" else user_token(node.ctx, role))

        yield node.ctx, as_role


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
