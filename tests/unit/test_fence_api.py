"""Fence methods and host power over the API and the CLI (`corral host fence ...`, `corral
host power ...`): clear 4xx for bad input, secrets stored encrypted and never answered,
admins only to change or run them, power off refused while VMs run unless forced."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from engine_seed import client_as, engine_context
from fence_scripts import install
from sqlalchemy.orm import Session
from starlette.testclient import TestClient
from typer.testing import CliRunner

from corral.cli import host_fence as fence_cli
from corral.cli.main import app as cli_app
from corral.client import Client
from corral.engine.context import EngineContext
from corral.engine.db.models import FenceMethod, Host, Image, Vm

URL = "/api/v1/hosts/h1/fence"


def _vm(s: Session, host: Host) -> None:
    s.add(Vm(name="web", image_id=s.query(Image).filter_by(name="tiny").one().id,
             host_id=host.id, cpus=1, memory_mib=64, disk_bytes=64 << 20, state="running",
             desired_power="running"))


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineContext]:
    install(tmp_path / "agents", monkeypatch)
    yield from engine_context(tmp_path, prepare=_vm)


@pytest.fixture
def power(tmp_path: Path) -> Path:
    """The state file of h1's fence_test_file device, on."""
    path = tmp_path / "power"
    path.write_text("on\n")
    return path


def _set(admin: TestClient, **body: object) -> dict[str, object]:
    resp = admin.put(URL, json=body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_secrets_are_stored_encrypted_and_never_answered(
        ctx: EngineContext, admin: TestClient, power: Path) -> None:
    made = _set(admin, agent="fence_test_file",
                options={"state": str(power), "username": "admin", "password": "hunter2-pw",
                         "snmp_priv_passwd": "priv-pw", "passwd_script": "/bin/pw"})
    assert made == {"position": 1, "agent": "fence_test_file",
                    "options": {"state": str(power), "username": "admin",
                                "passwd_script": "/bin/pw"},
                    "secrets": ["password", "snmp_priv_passwd"]}
    listed = admin.get(URL)
    assert listed.json() == [made] and "hunter2" not in listed.text
    with ctx.db.session() as s:
        row = s.query(FenceMethod).one()
        stored = json.dumps(row.options) + (row.secrets or "")
    assert "hunter2" not in stored and "priv-pw" not in stored
    key = ctx.settings.data_dir / "fence.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    audit = admin.get("/api/v1/audit").text
    assert "host.fence" in audit and "hunter2" not in audit


def test_methods_are_ordered_replaced_and_removed(admin: TestClient, power: Path) -> None:
    _set(admin, agent="fence_test_fail")
    _set(admin, agent="fence_test_liar")
    _set(admin, agent="fence_test_file", options={"state": str(power)}, position=1)
    assert [(m["position"], m["agent"]) for m in admin.get(URL).json()] == [
        (1, "fence_test_file"), (2, "fence_test_liar")]
    left = admin.delete(URL, params={"position": 1})
    assert [m["position"] for m in left.json()] == [2]
    assert admin.delete(URL, params={"position": 1}).status_code == 404
    assert admin.delete(URL).json() == []


@pytest.mark.parametrize(("body", "field"), [
    ({"agent": "/usr/sbin/fence_dummy"}, "agent"),
    ({"agent": "fence_x; reboot"}, "agent"),
    ({"agent": "fence_not_installed_here"}, "agent"),
    ({"agent": "fence_test_file", "options": {"ip": "1.2.3.4\naction=on"}}, "options"),
    ({"agent": "fence_test_file", "options": {"action": "on"}}, "options"),
    ({"agent": "fence_test_file", "options": {"bad key": "x"}}, "options"),
    ({"agent": "fence_test_file", "position": 0}, "position"),
    ({"agent": "fence_test_file", "position": 9}, "position"),
    ({"agent": "fence_test_file", "colour": "red"}, "colour"),
])
def test_bad_input_is_a_422_naming_the_field(admin: TestClient, body: dict[str, object],
                                              field: str) -> None:
    resp = admin.put(URL, json=body)
    assert resp.status_code == 422, resp.text
    assert field in str(resp.json()["error"].get("field"))
    assert admin.get(URL).json() == []


def test_an_unknown_host_is_a_404(admin: TestClient) -> None:
    assert admin.put("/api/v1/hosts/nope/fence",
                     json={"agent": "fence_test_file"}).status_code == 404
    assert admin.get("/api/v1/hosts/nope/fence").status_code == 404


def test_only_admins_change_test_or_power_and_readers_see_no_secrets(
        ctx: EngineContext, admin: TestClient) -> None:
    _set(admin, agent="fence_test_liar", options={"password": "pw-x"})
    operator = client_as(ctx, "operator")
    assert operator.put(URL, json={"agent": "fence_test_liar"}).status_code == 403
    assert operator.delete(URL).status_code == 403
    assert operator.post(f"{URL}/test").status_code == 403
    assert operator.post("/api/v1/hosts/h1/power", json={"action": "off"}).status_code == 403
    viewer = client_as(ctx, "viewer", token="v")
    seen = viewer.get(URL)
    assert seen.status_code == 200 and seen.json()[0]["secrets"] == ["password"]
    assert "pw-x" not in seen.text


def _wait(admin: TestClient, op_id: str) -> dict[str, object]:
    resp = admin.get(f"/api/v1/operations/{op_id}/wait", params={"timeout": 30})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_power_off_is_refused_with_running_vms_unless_forced(
        admin: TestClient, power: Path) -> None:
    no_method = admin.post("/api/v1/hosts/h1/power", json={"action": "on"})
    assert no_method.status_code == 409 and "no fence method" in no_method.text
    _set(admin, agent="fence_test_file", options={"state": str(power)})
    refused = admin.post("/api/v1/hosts/h1/power", json={"action": "off"})
    assert refused.status_code == 409 and "web" in refused.json()["error"]["message"]
    assert power.read_text().strip() == "on"
    assert admin.post("/api/v1/hosts/h1/power", json={"action": "sideways"}).status_code == 422
    done = _wait(admin, admin.post("/api/v1/hosts/h1/power",
                                   json={"action": "off", "force": True}).json()["id"])
    assert done["status"] == "success", done
    assert power.read_text().strip() == "off"
    done = _wait(admin, admin.post("/api/v1/hosts/h1/power", json={"action": "on"}).json()["id"])
    assert done["status"] == "success" and power.read_text().strip() == "on"


def test_a_power_off_no_device_confirms_fails_with_the_reasons(admin: TestClient) -> None:
    _set(admin, agent="fence_test_liar")
    done = _wait(admin, admin.post("/api/v1/hosts/h1/power",
                                   json={"action": "cycle", "force": True}).json()["id"])
    assert done["status"] == "failure"
    assert "status says on" in json.dumps(done)


# -- the CLI ------------------------------------------------------------------------------

@pytest.fixture
def cli(admin: TestClient, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    def sdk(_data_dir: Path | None = None) -> Client:
        c = Client("http://testserver", "unused")
        c._http = TestClient(admin.app, headers=dict(admin.headers))
        return c

    monkeypatch.setattr(fence_cli, "client", sdk)
    return CliRunner()


def _run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(cli_app, list(args), env={"COLUMNS": "200"})


def test_the_cli_sets_shows_tests_and_powers(cli: CliRunner, power: Path,
                                              tmp_path: Path) -> None:
    pw = tmp_path / "bmc.pw"
    pw.write_text("s3cret-bmc\n# a comment\n")
    made = _run(cli, "host", "fence", "set", "h1", "--agent", "fence_test_file",
                "--option", f"state={power}", "-O", "username=root", "--password-file", str(pw))
    assert made.exit_code == 0, made.output
    shown = _run(cli, "host", "fence", "show", "h1")
    assert "fence_test_file" in shown.output and "password=(set)" in shown.output
    assert "s3cret" not in made.output + shown.output
    tested = _run(cli, "host", "fence", "test", "h1")
    assert tested.exit_code == 0 and "on" in tested.output and "Status: ON" in tested.output
    refused = _run(cli, "host", "power", "h1", "off")
    assert refused.exit_code != 0 and "web" in refused.output
    off = _run(cli, "host", "power", "h1", "off", "--force")
    assert off.exit_code == 0, off.output
    status = _run(cli, "host", "power", "h1", "status", "-o", "json")
    assert json.loads(status.output)["checks"][0]["power"] == "off"
    bad = _run(cli, "host", "fence", "set", "h1", "--agent", "fence_test_file", "-O", "novalue")
    assert bad.exit_code != 0 and "KEY=VALUE" in bad.output
    sideways = _run(cli, "host", "power", "h1", "sideways")
    assert sideways.exit_code != 0 and "on, off, cycle or status" in sideways.output
    gone = _run(cli, "host", "fence", "remove", "h1")
    assert gone.exit_code == 0 and "0 fence method(s) left" in gone.output
