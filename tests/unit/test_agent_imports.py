"""The idle agent's memory: what it must not import at start, and routes that import on first use.

An agent that starts holds only what registering its routes needs (corral.agent.app); the
image download stack (httpx, which also drags rich and pygments in), corral.api's models
(with cloud-init's pycdlib and yaml) and the libguestfs customization are imported by their
routes on their first call. Those routes must answer bad input exactly as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.agent import image_api
from corral.agent.jobs import JobRunner
from corral.agent.storage import Storage
from corral.api import GuestCustomize
from corral.httpserve import install_error_handlers

# Imported on first use only: each costs the idle agent memory (about 11 MiB together).
NOT_AT_START = ("httpx", "rich", "pygments", "psutil", "pycdlib", "yaml", "corral.api",
                "corral.cloudinit", "corral.agent.download", "corral.agent.image_import",
                "corral.agent.customize")

PROBE = """
import json, sys, types
from pathlib import Path
import corral.agent.__main__ as main
from corral.agent import image_api
from corral.agent.jobs import JobRunner
from corral.agent.storage import Storage
main.tune_malloc()
agent = types.SimpleNamespace(storage=Storage(Path(sys.argv[1])), virt=None, hv=None)
image_api.router(agent, JobRunner())
print(json.dumps(sorted(m for m in sys.modules
                        if any(m == n or m.startswith(n + ".") for n in sys.argv[2:]))))
"""


def test_agent_start_imports_none_of_the_rare_work(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), *NOT_AT_START],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(out) == []


def _agent_routes(tmp_path: Path) -> TestClient:
    agent = types.SimpleNamespace(storage=Storage(tmp_path / "storage"), virt=None, hv=None)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(image_api.router(agent, JobRunner()))  # type: ignore[arg-type]
    return TestClient(app)


def _declared_routes() -> TestClient:
    """The same paths with the body declared as the model, as the routes were before."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/images/{name}/customize")
    @app.post("/v1/disks/{name}/customize")
    def customize(name: str, body: GuestCustomize) -> dict[str, Any]:
        return {"ok": True}

    return TestClient(app)


@pytest.mark.parametrize("body", [
    None, [], "text", 3, {}, {"hostname": "bad host"}, {"extra": 1}, {"commands": [1]},
    {"passwords": [{"user": "ro ot", "password": "x"}]},
    {"files": [{"path": "/etc/x", "content": "%%%"}]},
])
@pytest.mark.parametrize("path", ["/v1/images/img/customize", "/v1/disks/vm1/customize"])
def test_customize_routes_refuse_bad_bodies_as_a_declared_model_does(
        tmp_path: Path, path: str, body: object) -> None:
    lazy, declared = _agent_routes(tmp_path), _declared_routes()
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    got, want = lazy.post(path, **kwargs), declared.post(path, **kwargs)
    assert (got.status_code, got.json()) == (want.status_code, want.json())
    assert got.status_code == 422


def test_customize_route_with_a_good_body_reaches_its_checks(tmp_path: Path) -> None:
    resp = _agent_routes(tmp_path).post("/v1/images/img/customize", json={"hostname": "ok"})
    assert resp.status_code == 404
    assert resp.json()["error"]["message"] == "image img not found on this host"
    resp = _agent_routes(tmp_path).post("/v1/images/img/customize", content=b"{bad",
                                        headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"]["message"] == "body: request body is not valid JSON"
