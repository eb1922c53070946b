"""`corral down --purge`: when it refuses (VMs), what --force deletes, the network teardown
of the agent's specs, and `corral up`'s advice when another node holds the bridge or subnet.
Fakes at purge's own seams (an SDK-shaped object, a domain lister); nothing touches the host."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from corral.agent import network
from corral.agent.network import NetworkSpec
from corral.cli.main import app
from corral.errors import Conflict, HostError
from corral.node import hostnet, purge

DATA = Path("/srv/node2")


@dataclass
class FakeVm:
    name: str


@dataclass
class FakeOp:
    id: str


@dataclass
class FakeApi:
    vms: list[str]
    deleted: list[tuple[str, bool]] = field(default_factory=list)
    waited: list[str] = field(default_factory=list)
    closed: bool = False
    fail: str | None = None

    def list_vms(self) -> list[FakeVm]:
        return [FakeVm(n) for n in self.vms]

    def delete_vm(self, name: str, force: bool = False) -> FakeOp:
        self.deleted.append((name, force))
        return FakeOp(f"op-{name}")

    def wait(self, op_id: str, timeout: float = 600) -> object:
        if op_id == self.fail:
            raise HostError("disk busy")
        self.waited.append(op_id)
        return None

    def close(self) -> None:
        self.closed = True


@dataclass
class Host:
    running: bool
    api: FakeApi = field(default_factory=lambda: FakeApi([]))
    domains: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def seams(self) -> purge.Seams:
        def stop(d: Path) -> bool:
            self.calls.append("stop")
            return self.running

        def networks(d: Path) -> tuple[list[str], dict[str, str]]:
            self.calls.append("networks")
            return ["default"], {}

        def tables(d: Path) -> list[str]:
            self.calls.append("tables")
            return []

        return purge.Seams(engine_running=lambda d: self.running, api=lambda d: self.api,
                           domains=lambda d: self.domains, stop=stop, networks=networks,
                           tables=tables)


def test_refusal_logic() -> None:
    r = purge.refusal
    assert r(DATA, engine_running=True, force=False, vms=[], domains=[]) is None
    why = r(DATA, engine_running=True, force=False, vms=["web", "db"], domains=["db", "web"])
    assert why is not None and "db, web" in why and "--force" in why
    assert r(DATA, engine_running=True, force=True, vms=["web"], domains=["web"]) is None
    why = r(DATA, engine_running=True, force=True, vms=["web"], domains=["web", "stray"])
    assert why is not None and "stray" in why and "web" not in why.split(":")[1]
    why = r(DATA, engine_running=False, force=True, vms=[], domains=["web"])
    assert why is not None and "web" in why
    assert f"corral up --detach --data-dir {DATA}" in why
    assert r(DATA, engine_running=False, force=False, vms=[], domains=[]) is None


def test_vms_refuse_and_nothing_is_done() -> None:
    host = Host(running=True, api=FakeApi(["web", "db"]), domains=["db", "web"])
    with pytest.raises(Conflict) as caught:
        purge.purge(DATA, seams=host.seams())
    assert caught.value.details["vms"] == ["db", "web"]
    assert host.calls == [] and host.api.deleted == []
    assert host.api.closed


def test_force_deletes_vms_then_stops_and_removes() -> None:
    host = Host(running=True, api=FakeApi(["web", "db"]), domains=["db", "web"])
    said: list[str] = []
    report = purge.purge(DATA, force=True, seams=host.seams(), say=said.append)
    assert host.api.deleted == [("db", True), ("web", True)]
    assert host.api.waited == ["op-db", "op-web"]
    assert host.calls == ["stop", "networks", "tables"]
    assert report.deleted_vms == ["db", "web"] and report.networks == ["default"]
    assert "deleted VM web" in said and "removed network default" in said


def test_failed_vm_delete_stops_nothing() -> None:
    host = Host(running=True, api=FakeApi(["web"], fail="op-web"), domains=["web"])
    with pytest.raises(HostError):
        purge.purge(DATA, force=True, seams=host.seams())
    assert host.calls == []


def test_engine_stopped_domains_refuse_even_with_force() -> None:
    host = Host(running=False, domains=["web"])
    with pytest.raises(Conflict, match="corral up --detach"):
        purge.purge(DATA, force=True, seams=host.seams())
    assert host.calls == []


def test_engine_stopped_no_vms_removes() -> None:
    host = Host(running=False)
    report = purge.purge(DATA, seams=host.seams())
    assert host.calls == ["stop", "networks", "tables"]
    assert not report.stopped and report.networks == ["default"]


DOMAIN = """<domain type='kvm'><name>web</name><devices>
  <disk type='file' device='disk'><source file='{disk}'/><target dev='vda'/></disk>
  <disk type='network' device='disk'><source protocol='rbd' name='pool/img'/>
    <target dev='vdb'/></disk>
</devices></domain>"""


def test_disks_under() -> None:
    assert purge.disks_under(DOMAIN.format(disk=f"{DATA}/agent/storage/vms/web.qcow2"), DATA)
    assert not purge.disks_under(DOMAIN.format(disk="/srv/node1/agent/web.qcow2"), DATA)
    assert not purge.disks_under(DOMAIN.format(disk="/srv/node22/web.qcow2"), DATA)


def test_remove_networks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nets = tmp_path / "agent" / "networks"
    nets.mkdir(parents=True)
    bodies = {
        "default": {"bridge": "corral0", "subnet": "10.210.0.0/24", "gateway": "10.210.0.1",
                    "dhcp_start": "10.210.0.128", "dhcp_end": "10.210.0.254"},
        "v5": {"bridge": "cr-trunk", "vlan": 5, "subnet": "10.5.0.0/24",
               "gateway": "10.5.0.1", "dhcp_start": "10.5.0.128", "dhcp_end": "10.5.0.254"},
        "v6": {"bridge": "cr-trunk", "vlan": 6, "subnet": "10.6.0.0/24",
               "gateway": "10.6.0.1", "dhcp_start": "10.6.0.128", "dhcp_end": "10.6.0.254"},
        "bad": {"bridge": "corral9"},
    }
    for name, body in bodies.items():
        (nets / f"{name}.json").write_text(json.dumps(body))
    calls: list[tuple[str, bool, Path]] = []

    def delete(spec: NetworkSpec, state_dir: Path, *, keep_bridge: bool = False) -> None:
        calls.append((spec.name, keep_bridge, state_dir))
        if spec.name == "bad":
            raise HostError("`ip link del` failed")

    monkeypatch.setattr(network, "delete_network", delete)
    removed, failed = purge.remove_networks(tmp_path)
    assert removed == ["default", "v5", "v6"]
    assert failed == {"bad": "`ip link del` failed"}
    # the trunk is kept while another network of this node is on it, removed with the last
    assert calls == [("bad", False, nets), ("default", False, nets), ("v5", True, nets),
                     ("v6", False, nets)]
    assert sorted(p.name for p in nets.glob("*.json")) == ["bad.json"]


def test_free_bridge_and_subnet() -> None:
    assert hostnet.free_bridge({"eth0"}, "corral0") == "corral0"
    assert hostnet.free_bridge({"corral0", "corral1"}, "corral0") == "corral2"
    assert hostnet.free_bridge({"br"}, "br") == "br1"
    routes: list[dict[str, Any]] = [
        {"dst": "default", "dev": "eth0"},
        {"dst": "10.210.0.0/24", "dev": "corral0"},
        {"dst": "10.211.0.0/16", "dev": "wg0"},
    ]
    assert hostnet.free_subnet("10.210.0.0/24", routes, []) == "10.212.0.0/24"
    assert hostnet.free_subnet("10.213.0.0/24", routes, []) == "10.213.0.0/24"
    addrs = [{"ifname": "x", "addr_info": [{"family": "inet", "local": "10.212.0.9",
                                              "prefixlen": 24}]}]
    assert hostnet.free_subnet("10.210.0.0/24", routes, addrs) == "10.213.0.0/24"


def test_up_advice_names_node_and_options() -> None:
    refused = Conflict("bridge corral0 belongs to the corral node in /var/lib/corral; choose "
                       "another bridge name and subnet", field="bridge", owner="/var/lib/corral")
    cmd = hostnet.up_command(DATA, "10.211.0.0/24", "corral1", " --port 9443")
    exc = hostnet.explain(refused, DATA, "10.210.0.0/24", "corral0", suggest=cmd)
    assert exc.field == "bridge" and exc.details["owner"] == "/var/lib/corral"
    assert "the corral node in /var/lib/corral" in exc.message
    assert ("`corral up --data-dir /srv/node2 --subnet 10.211.0.0/24 --bridge corral1 "
            "--port 9443`") in exc.message
    assert "corral down --purge --data-dir /var/lib/corral" in exc.message


runner = CliRunner()


def test_cli_down_purge_help() -> None:
    result = runner.invoke(app, ["down", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for word in ("--purge", "--force", "rm -rf DATA_DIR", "dnsmasq"):
        assert word in result.output


def test_cli_up_help_has_bridge() -> None:
    result = runner.invoke(app, ["up", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--bridge" in result.output


def test_cli_force_needs_purge(tmp_path: Path) -> None:
    result = runner.invoke(app, ["down", "--force", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2


def test_cli_purge_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(data_dir: Path, *, force: bool, seams: purge.Seams, say: Any) -> purge.PurgeReport:
        say("removed network default")
        return purge.PurgeReport(stopped=True, networks=["default"])

    monkeypatch.setattr(purge, "purge", fake)
    result = runner.invoke(app, ["down", "--purge", "--data-dir", str(tmp_path)],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "removed network default" in result.output
    # The console wraps at 80 columns, where the path's length puts it: read it unwrapped.
    assert f"rm -rf {tmp_path}" in " ".join(result.output.split())

    def refuse(data_dir: Path, **_: Any) -> purge.PurgeReport:
        raise Conflict("the node still has VMs: web", field="vms")

    monkeypatch.setattr(purge, "purge", refuse)
    result = runner.invoke(app, ["down", "--purge", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2


def test_taps_left() -> None:
    links = [{"ifname": "eth0"}, {"ifname": "cv5254008511db"}, {"ifname": "cvnothex"},
             {"ifname": "corral0"}]
    assert purge.taps_left(links) == ["cv5254008511db"]
    assert purge.taps_left([{"ifname": "eth0"}]) == []


def test_remove_port_tables_deletes_only_this_nodes(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node's taps and tables stay; this node's pair goes unless one of its own
    ports' taps is still up."""
    import subprocess

    from corral.agent.network import _cmd, firewall

    links = [{"ifname": "cv5254008511db"}]  # a VM of another node
    calls: list[list[str]] = []
    monkeypatch.setattr(_cmd, "run_json", lambda args, **_: links)

    def run(args: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(_cmd, "run", run)
    ports = tmp_path / "agent" / "ports"
    ports.mkdir(parents=True)
    (ports / "cv525400000001.json").write_text("{}")  # a stale port: its tap is gone
    own = firewall.SgTables.for_state_dir(tmp_path / "agent")
    assert purge.remove_port_tables(tmp_path) == [f"bridge {own.bridge}", f"inet {own.inet}"]
    assert calls == [["nft", "delete", "table", "bridge", own.bridge],
                     ["nft", "delete", "table", "inet", own.inet]]
    links.append({"ifname": "cv525400000001"})
    assert purge.remove_port_tables(tmp_path) == []
