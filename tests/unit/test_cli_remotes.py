"""`corral remote`: two real engines on loopback over HTTPS (uvicorn, SQLite, their own CAs),
``home`` as this machine's `corral up` node (remote ``local``) and ``far`` as a remote;
HOME is a temporary directory, so ~/.config/corral/remotes.json is the test's own.
Which engine answered a command: `corral status -o json` names its data dir."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from api_server import serving
from cli_node import cli, isolated_home
from click.testing import Result
from fastapi import FastAPI

from corral.client import Client, remotes
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.services.auth import create_token
from corral.engine.tls import ensure_tls
from corral.node import paths


@contextmanager
def _https(app: FastAPI, tls_dir: Path, port: int = 0) -> Iterator[int]:
    """``app`` over HTTPS on 127.0.0.1 (``port``, or a free one) with the certificate
    ensure_tls makes in ``tls_dir``; the port."""
    _ca, cert, key = ensure_tls(tls_dir)
    with serving(app, port, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        yield int(url.rsplit(":", 1)[1])


@dataclass
class Engine:
    data: Path
    ctx: EngineContext
    token: str
    port: int = 0
    stack: list[object] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> str:
        return (self.data / "tls" / "ca.pem").read_text()

    @property
    def fingerprint(self) -> str:
        return remotes.fingerprint(self.ca_pem)


@contextmanager
def _engine(data: Path) -> Iterator[Engine]:
    ctx = build_context(EngineSettings(data_dir=data, agent_reconnect_s=0))
    eng = Engine(data=data, ctx=ctx, token=create_token(ctx, "admin"))
    try:
        with _https(create_app(ctx), data / "tls") as port:
            eng.port = port
            yield eng
    finally:
        ctx.ops.shutdown()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """This machine's node, found as `corral up` leaves it: ~/.config/corral/client.json."""
    user_config = isolated_home(tmp_path, monkeypatch)
    with _engine(tmp_path / "home-node") as eng:
        paths.write_private(user_config, json.dumps(
            {"url": eng.url, "token": eng.token, "ca": str(eng.data / "tls" / "ca.pem"),
             "data_dir": str(eng.data)}))
        yield eng


@pytest.fixture
def far(tmp_path: Path, home: Engine) -> Iterator[Engine]:
    with _engine(tmp_path / "far-node") as eng:
        yield eng


def said(result: Result) -> str:
    """The output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


def answered_by(*args: str) -> str:
    """The data dir of the engine that answered `corral [ARGS] status`."""
    res = cli(*args, "status", "-o", "json")
    assert res.exit_code == 0, res.output
    return str(json.loads(res.stdout)["data_dir"])


def add_far(far: Engine, *extra: str) -> Result:
    return cli("remote", "add", "far", far.url, "--token", far.token,
               "--accept-fingerprint", far.fingerprint, *extra)


def test_add_with_the_right_fingerprint_then_commands_go_there(
        home: Engine, far: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    assert answered_by() == str(home.data)  # nothing switched: local
    colons = ":".join(far.fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
    res = cli("remote", "add", "far", far.url, "--token", far.token,
              "--accept-fingerprint", colons)
    assert res.exit_code == 0, res.output
    assert far.fingerprint in said(res) and "remote far added" in said(res)
    config = remotes.config_path()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = json.loads(config.read_text())
    assert saved["current"] == "local"  # add alone does not switch
    assert saved["remotes"]["far"]["fingerprint"] == far.fingerprint
    assert saved["remotes"]["far"]["ca_pem"] == far.ca_pem

    assert answered_by() == str(home.data)
    assert answered_by("--remote", "far") == str(far.data)
    monkeypatch.setenv("CORRAL_REMOTE", "far")
    assert answered_by() == str(far.data)
    assert answered_by("--remote", "local") == str(home.data)  # --remote beats CORRAL_REMOTE
    monkeypatch.delenv("CORRAL_REMOTE")

    res = cli("remote", "switch", "far")
    assert res.exit_code == 0 and "current remote: far" in said(res)
    assert answered_by() == str(far.data)
    assert answered_by("--remote", "local") == str(home.data)
    # CORRAL_DATA_DIR (as --data-dir) still names a node and beats the current remote
    monkeypatch.setenv("CORRAL_DATA_DIR", str(home.data))
    paths.write_private(home.data / "client.json", paths.USER_CONFIG.read_text())
    assert answered_by() == str(home.data)
    monkeypatch.setenv("CORRAL_REMOTE", "far")  # ... and CORRAL_REMOTE beats it
    assert answered_by() == str(far.data)


def test_list_switch_remove(home: Engine, far: Engine) -> None:
    assert add_far(far).exit_code == 0
    assert cli("remote", "switch", "far").exit_code == 0
    res = cli("remote", "list", "-o", "json")
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["local"] == {"name": "local", "url": home.url, "current": False,
                             "fingerprint": home.fingerprint}
    assert rows["far"] == {"name": "far", "url": far.url, "current": True,
                           "fingerprint": far.fingerprint}
    assert "token" not in res.stdout
    table = cli("remote", "list")
    line = next(x for x in table.output.splitlines() if x.split()[:1] == ["far"])
    assert line.split() == ["far", far.url, remotes.short(far.fingerprint), "*"]

    # other connections (the console's WebSocket) verify far with its pinned CA too
    with Client.from_config(remote="far") as c, \
            socket.create_connection(("127.0.0.1", far.port), timeout=10) as raw, \
            c.tls.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version()

    again = add_far(far)
    assert again.exit_code == 2 and "remote 'far' exists" in said(again)
    res = cli("remote", "add", "local", far.url, "--token", far.token)
    assert res.exit_code == 2 and "pick another name" in said(res)
    res = cli("remote", "remove", "local")
    assert res.exit_code == 2 and "cannot be removed" in said(res)
    res = cli("remote", "switch", "nowhere")
    assert res.exit_code == 2 and "known remotes: local, far" in said(res)
    res = cli("--remote", "nowhere", "status")
    assert res.exit_code == 2 and "known remotes: local, far" in said(res)

    res = cli("remote", "remove", "far")
    assert res.exit_code == 0 and "current remote: local" in said(res)
    assert remotes.current() == "local" and remotes.load().remotes == {}
    assert answered_by() == str(home.data)
    res = cli("remote", "remove", "far")
    assert res.exit_code == 2 and "no remote named 'far'" in said(res)


def test_wrong_fingerprint_is_refused_and_nothing_saved(home: Engine, far: Engine) -> None:
    res = cli("remote", "add", "far", far.url, "--token", far.token,
              "--accept-fingerprint", home.fingerprint)
    assert res.exit_code == 2, res.output
    assert f"has fingerprint {far.fingerprint}, not the {home.fingerprint}" in said(res)
    assert "nothing was saved" in said(res)
    assert "far" not in remotes.load().remotes
    res = cli("remote", "add", "far", far.url, "--token", far.token,
              "--accept-fingerprint", "abc")
    assert res.exit_code == 2 and "64 hex digits" in said(res)


def test_the_fingerprint_is_confirmed_by_a_yes_or_not_at_all(home: Engine, far: Engine) -> None:
    no = cli("remote", "add", "far", far.url, "--token", far.token, input="n\n")
    assert no.exit_code == 1 and far.fingerprint in said(no)
    assert "--accept-fingerprint" in said(no) and "far" not in remotes.load().remotes
    silent = cli("remote", "add", "far", far.url, "--token", far.token, input="")
    assert silent.exit_code == 1 and "far" not in remotes.load().remotes
    yes = cli("remote", "add", "far", far.url, "--token", far.token, "--switch", input="y\n")
    assert yes.exit_code == 0, yes.output
    assert remotes.current() == "far" and answered_by() == str(far.data)


def test_bad_token_is_refused_and_nothing_saved(home: Engine, far: Engine) -> None:
    res = cli("remote", "add", "far", far.url, "--token", "not-a-token",
              "--accept-fingerprint", far.fingerprint)
    assert res.exit_code == 2, res.output
    assert "refused the token" in said(res)
    assert not remotes.config_path().exists() or "far" not in remotes.load().remotes


def test_a_ca_changed_after_pinning_is_refused_with_the_way_to_re_pin(
        tmp_path: Path, home: Engine) -> None:
    data = tmp_path / "moved-node"
    ctx = build_context(EngineSettings(data_dir=data, agent_reconnect_s=0))
    token = create_token(ctx, "admin")
    try:
        with _https(create_app(ctx), data / "tls") as port:
            url = f"https://127.0.0.1:{port}"
            fp = remotes.fingerprint((data / "tls" / "ca.pem").read_text())
            res = cli("remote", "add", "moved", url, "--token", token,
                      "--accept-fingerprint", fp)
            assert res.exit_code == 0, res.output
            assert answered_by("--remote", "moved") == str(data)
        for old in ("ca.pem", "ca.key"):  # the engine gets a new CA, same address
            (data / "tls" / old).unlink()
        with _https(create_app(ctx), data / "tls", port):
            res = cli("--remote", "moved", "status")
            assert res.exit_code == 1, res.output
            text = said(res)
            assert "not the one pinned for remote 'moved'" in text and fp in text
            assert "corral remote remove moved" in text
            assert f"corral remote add moved {url} --token TOKEN" in text
            assert cli("remote", "remove", "moved").exit_code == 0  # re-pin
            new_fp = remotes.fingerprint((data / "tls" / "ca.pem").read_text())
            assert new_fp != fp
            res = cli("remote", "add", "moved", url, "--token", token,
                      "--accept-fingerprint", new_fp)
            assert res.exit_code == 0, res.output
            assert answered_by("--remote", "moved") == str(data)
    finally:
        ctx.ops.shutdown()


def test_the_api_lab_up_and_down_use(home: Engine, far: Engine) -> None:
    """`lab up` adds and switches; `lab down` removes and goes back to what was current."""
    remotes.add_remote("far", far.url, far.token, far.ca_pem)
    assert remotes.current() == "far"
    remotes.add_remote("lab", home.url, home.token, home.ca_pem)
    assert (remotes.current(), remotes.previous()) == ("lab", "far")
    assert answered_by() == str(home.data)  # through remote lab, pinned to home's CA
    with pytest.raises(Exception, match="exists"):
        remotes.add_remote("lab", home.url, home.token, home.ca_pem)
    remotes.add_remote("lab", home.url, home.token, home.ca_pem, replace=True)
    assert remotes.remove_remote("lab", switch_to=None) == "far"
    assert answered_by() == str(far.data)
    remotes.add_remote("lab", home.url, home.token, home.ca_pem, switch=False)
    assert remotes.remove_remote("lab") == "far"  # not current: nothing switches
    assert remotes.remove_remote("far") == "local"
