"""A real engine over HTTPS (uvicorn on loopback) for tests of the CLI, and the CLI run
in-process against it. HOME is the test's own: its ~/.config/corral/client.json points at
the engine with an admin token, as `corral up` leaves it, and no CORRAL_* variable of the
caller's leaks in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from api_server import serving
from engine_seed import Agent, Prepare, seeded_context
from typer.testing import CliRunner, Result

from corral.cli.main import app as cli_app
from corral.engine.app import create_app
from corral.engine.context import EngineContext
from corral.engine.services.auth import create_token
from corral.engine.tls import ensure_tls
from corral.node import paths

ENV = ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_CA", "CORRAL_DATA_DIR", "CORRAL_REMOTE",
       "CORRAL_PROJECT")


@dataclass
class Node:
    ctx: EngineContext
    url: str
    token: str  # the admin token client.json starts with
    ca: Path
    config: Path  # ~/.config/corral/client.json, as `corral up` leaves it

    @property
    def ca_pem(self) -> str:
        return self.ca.read_text()

    def use_token(self, token: str) -> None:
        """Point client.json at this engine with ``token`` (the CLI acts as its user)."""
        paths.write_private(self.config, json.dumps({"url": self.url, "token": token,
                                                     "ca": str(self.ca)}))


def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME the test's own, no CORRAL_* variable of the caller's, no node at the default
    data dir; the path of ~/.config/corral/client.json (not written yet)."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "home" / ".config" / "corral" / "client.json"
    monkeypatch.setattr(paths, "USER_CONFIG", config)
    monkeypatch.setattr(paths, "DEFAULT_DATA_DIR", tmp_path / "no-node")
    return config


@contextmanager
def serving_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: Agent | None = None,
                 prepare: Prepare | None = None) -> Iterator[Node]:
    """The engine (engine_seed.seeded_context, ``agent`` and ``prepare`` as there) served
    over HTTPS while the block runs, and stopped after it."""
    config = isolated_home(tmp_path, monkeypatch)
    data = tmp_path / "node"
    ctx = seeded_context(data, tmp_path, agent, prepare)
    ca, cert, key = ensure_tls(data / "tls")
    try:
        with serving(create_app(ctx), 0, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
            node = Node(ctx=ctx, url=url.replace("http://", "https://"),
                        token=create_token(ctx, "admin"), ca=ca, config=config)
            node.use_token(node.token)
            yield node
    finally:
        ctx.ops.shutdown()


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli_app, list(args), input=input)


def ok(*args: str, input: str | None = None) -> Result:
    res = cli(*args, input=input)
    assert res.exit_code == 0, res.output
    return res
