"""The agent's storage-fencing routes (``POST /v1/pools/P/volumes/V/fence``,
``.../roots/VM/fence``: corral.agent.pools.rbd_fence) through the engine's typed calls, in
process, with stand-in ``rbd`` and ``ceph`` tools on PATH (the real Ceph run is
tests/integration/test_rbd_fencing.py): every watcher and the lock holder of the image are
blocklisted once each, with the expiry; an address Ceph prints that cannot be read, a
failing ``ceph``, a dir pool and bad names are refused with nothing blocklisted."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_transport import in_process
from fastapi import FastAPI

from corral.agent.hypervisor import Hypervisor
from corral.agent.pools.routes import router as pools_router
from corral.agent_api.rbd_fencing import DEFAULT_EXPIRE_S
from corral.engine.agent_client import AgentClient
from corral.errors import Conflict, HostError, InvalidInput, NotFound
from corral.httpserve import install_error_handlers

# Stand-ins of the CLIs: `rbd status|lock ls` print the test's JSON for the image named
# last; `ceph osd blocklist add ADDR EXPIRE` notes its arguments (and fails for an address
# written in ``refuse``).
FAKE = """\
import json, sys
from pathlib import Path
here = Path(__file__).parent
args = sys.argv[1:]
with open(here / "calls.log", "a") as f:
    f.write(json.dumps([Path(sys.argv[0]).name, *args]) + "\\n")
if Path(sys.argv[0]).name == "rbd":
    image = args[-1]
    data = json.loads((here / "images.json").read_text())
    if image not in data:
        sys.stderr.write(f"rbd: error opening image {image}: (2) No such file or directory")
        sys.exit(2)
    kind = "status" if "status" in args else "locks"
    print(json.dumps(data[image][kind]))
elif "blocklist" in args:
    address = args[args.index("add") + 1]
    if address in (here / "refuse").read_text().split():
        sys.stderr.write("Error EACCES: access denied")
        sys.exit(13)
    sys.stderr.write(f"blocklisting {address}")
"""


@dataclass
class Tools:
    bin: Path
    client: AgentClient

    def image(self, name: str, watchers: list[str], lockers: list[str]) -> None:
        path = self.bin / "images.json"
        data = json.loads(path.read_text())
        data[name] = {"status": {"watchers": [{"address": a, "client": 4100 + i, "cookie": i}
                                              for i, a in enumerate(watchers)]},
                      "locks": [{"id": "auto 1", "locker": "client.4100", "address": a}
                                for a in lockers]}
        path.write_text(json.dumps(data))

    def refuse(self, address: str) -> None:
        (self.bin / "refuse").write_text(address)

    def blocklisted(self) -> list[tuple[str, str]]:
        """(address, expiry) of each `ceph osd blocklist add` run."""
        out = []
        for line in (self.bin / "calls.log").read_text().splitlines():
            call = json.loads(line)
            if "blocklist" in call:
                at = call.index("add")
                out.append((call[at + 1], call[at + 2]))
        return out


@pytest.fixture()
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tools]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("rbd", "ceph"):
        tool = bin_dir / name
        tool.write_text(f"#!{sys.executable}\n{FAKE}")
        tool.chmod(0o755)
    (bin_dir / "images.json").write_text("{}")
    (bin_dir / "calls.log").write_text("")
    (bin_dir / "refuse").write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    state = tmp_path / "agent"
    (state / "pools").mkdir(parents=True)
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\n")
    (state / "pools" / "ceph.json").write_text(json.dumps(  # as `PUT /v1/pools/ceph` keeps it
        {"name": "ceph", "type": "rbd", "ceph_conf": str(conf), "ceph_pool": "rbd"}))
    (state / "pools" / "local.json").write_text(json.dumps(
        {"name": "local", "type": "dir", "path": str(tmp_path / "local")}))
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(pools_router(state, state / "storage", Hypervisor("test:///default")))
    client = AgentClient("http://agent", reconnect_s=0, transport=in_process(app))
    try:
        yield Tools(bin_dir, client)
    finally:
        client.close()


def test_every_client_of_a_root_disk_is_blocklisted_once(tools: Tools) -> None:
    tools.image("rbd/vm.prod.web", ["10.0.0.5:0/123456", "10.0.0.6:0/777"],
                ["10.0.0.5:0/123456"])  # the lock holder watches too: one entry
    fenced = tools.client.fence_root("ceph", "prod.web")
    assert fenced.image == "rbd/vm.prod.web"
    assert fenced.addresses == ["10.0.0.5:0/123456", "10.0.0.6:0/777"]
    assert fenced.expire_s == DEFAULT_EXPIRE_S
    assert tools.blocklisted() == [("10.0.0.5:0/123456", str(DEFAULT_EXPIRE_S)),
                                   ("10.0.0.6:0/777", str(DEFAULT_EXPIRE_S))]


def test_a_lock_holder_whose_watch_lapsed_is_blocklisted_too(tools: Tools) -> None:
    tools.image("rbd/data", [], ["[fd00::5]:0/42"])
    assert tools.client.fence_volume("ceph", "data").addresses == ["[fd00::5]:0/42"]
    assert tools.blocklisted() == [("[fd00::5]:0/42", str(DEFAULT_EXPIRE_S))]


def test_an_image_nobody_has_open_needs_nothing(tools: Tools) -> None:
    tools.image("rbd/data", [], [])
    assert tools.client.fence_volume("ceph", "data").addresses == []
    assert tools.blocklisted() == []


def test_an_address_that_cannot_be_read_is_never_passed_over(tools: Tools) -> None:
    tools.image("rbd/data", ["10.0.0.5:0/1", "10.0.0.6:0/2; rm -rf /"], [])
    with pytest.raises(HostError, match="unreadable"):
        tools.client.fence_volume("ceph", "data")
    assert tools.blocklisted() == []


def test_a_failing_blocklist_is_an_error_that_says_why(tools: Tools) -> None:
    tools.image("rbd/data", ["10.0.0.5:0/1"], [])
    tools.refuse("10.0.0.5:0/1")
    with pytest.raises(HostError, match="access denied"):
        tools.client.fence_volume("ceph", "data")


def test_refusals_name_what_is_wrong(tools: Tools) -> None:
    with pytest.raises(Conflict, match="dir pool"):
        tools.client.fence_volume("local", "data")
    with pytest.raises(NotFound, match="not set up"):
        tools.client.fence_volume("nope", "data")
    with pytest.raises(NotFound, match="No such file"):
        tools.client.fence_volume("ceph", "missing")
    with pytest.raises(InvalidInput) as bad:
        tools.client.fence_volume("ceph", "vm.web")  # a volume name has no dot
    assert bad.value.field == "volume"
    with pytest.raises(InvalidInput) as bad_vm:
        tools.client.fence_root("ceph", "a.b.c")
    assert bad_vm.value.field == "vm"
    assert tools.blocklisted() == []


def test_the_expiry_is_bounded(tools: Tools) -> None:
    for expire in (0, 59, 400 * 24 * 3600):
        resp = tools.client._http.post("/v1/pools/ceph/volumes/data/fence",
                                       json={"expire_s": expire})
        assert resp.status_code == 422, resp.text
    tools.image("rbd/data", ["10.0.0.5:0/1"], [])
    resp = tools.client._http.post("/v1/pools/ceph/volumes/data/fence", json={"expire_s": 3600})
    assert resp.status_code == 200 and resp.json()["expire_s"] == 3600
    assert tools.blocklisted() == [("10.0.0.5:0/1", "3600")]
