"""The facts a host reports: the agent side against libvirt's test driver (a private node)
and real capabilities XML; the engine's `host list`/`host show` (API and CLI) with what the
VMs on a host take of it, over a stand-in agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_seed import admin_client, seed_node
from fastapi.testclient import TestClient
from libvirt_node import private_node_uri
from typer.testing import CliRunner

from corral.agent import host_facts
from corral.agent.hypervisor import Hypervisor
from corral.agent.hypervisor.host_caps import dotted, parse_cpu_models, parse_host_cpu
from corral.agent_api.domains import HostFacts
from corral.cli import host as host_cli
from corral.cli.main import app as cli_app
from corral.client import Client
from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Host, Image, Vm

# What libvirt 9 on QEMU 7.2 reports of a real host (trimmed): <feature name=...> form.
REAL_CAPS = """<capabilities><host><uuid>0</uuid><cpu>
  <arch>x86_64</arch><model>Skylake-Client-IBRS</model><vendor>Intel</vendor>
  <topology sockets='1' dies='1' cores='2' threads='1'/>
  <feature name='vmx'/><feature name='hypervisor'/><feature name='avx512f'/>
  <pages unit='KiB' size='4'/>
</cpu></host></capabilities>"""

# -- the agent -----------------------------------------------------------------------------


def test_a_real_hosts_cpu_model_vendor_and_flags() -> None:
    cpu = parse_host_cpu(REAL_CAPS)
    assert (cpu.arch, cpu.model, cpu.vendor) == ("x86_64", "Skylake-Client-IBRS", "Intel")
    assert cpu.flags == ["avx512f", "hypervisor", "vmx"]


def test_capabilities_without_a_cpu_give_nothing_rather_than_fail() -> None:
    assert parse_host_cpu("<capabilities><host/></capabilities>").model is None


DOMCAPS = """<domainCapabilities><cpu>
  <mode name='host-passthrough' supported='yes'/>
  <mode name='custom' supported='yes'>
    <model usable='yes' vendor='Intel'>Broadwell</model>
    <model usable='no' vendor='Intel'>Skylake-Client</model>
    <model usable='yes' vendor='AMD'>EPYC</model>
    <model usable='unknown'>qemu64</model>
  </mode></cpu></domainCapabilities>"""


def test_the_models_a_guest_may_have_are_the_usable_custom_ones() -> None:
    assert parse_cpu_models(DOMCAPS) == ["Broadwell", "EPYC"]
    off = DOMCAPS.replace("name='custom' supported='yes'", "name='custom' supported='no'")
    assert parse_cpu_models(off) == []


def test_versions_are_unpacked_as_libvirt_packs_them() -> None:
    assert dotted(7002000) == "7.2.0" and dotted(9000000) == "9.0.0" and dotted(2) == "0.0.2"


def test_the_test_driver_reports_its_cpu_and_hypervisor(tmp_path: Path) -> None:
    hv = Hypervisor(private_node_uri(tmp_path))
    cpu = hv.host_cpu()
    assert cpu.arch == "i686" and cpu.flags == ["nonpae", "pae"]  # the driver's own CPU
    kind, version = hv.hypervisor()
    assert kind == "TEST" and version.count(".") == 2
    facts = HostFacts(hostname="h", agent_version="1", cpus=2, memory_mib=4096,
                      virt_type="qemu", libvirt_version=hv.version(), storage_dir="/s",
                      console_dir="/c", storage_free=0, **host_facts.reported(hv, "qemu"))
    assert facts.hypervisor_type == "TEST" and facts.cpu_flags == ["nonpae", "pae"]
    assert facts.cpu_models is None  # the test driver has no domain capabilities: unknown
    assert facts.memory_free_mib is not None and facts.memory_free_mib > 0


# -- the engine ----------------------------------------------------------------------------

FACTS: dict[str, Any] = {
    "cpus": 4, "memory_mib": 8192, "virt_type": "kvm", "agent_version": "0.13.0",
    "libvirt_version": "9.0.0", "hypervisor_type": "QEMU", "hypervisor_version": "7.2.0",
    "cpu_model": "Skylake-Client-IBRS", "cpu_vendor": "Intel", "cpu_flags": ["vmx"],
    "memory_free_mib": 6000}


def memory_answer(_req: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"total_mib": 8192, "available_mib": 5000, "ksm": None})


@pytest.fixture()
def engine(tmp_path: Path) -> Iterator[tuple[TestClient, EngineContext]]:
    """h1 with FACTS and VMs of 1 + 2 vCPUs and 256 + 512 MiB (one stopped: it counts);
    h2, an older agent's host that reported none of the new facts, with no VMs."""
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0))
    ctx.agent_transport = httpx.MockTransport(memory_answer)
    with ctx.db.session() as s:
        h1 = seed_node(s, str(tmp_path / "storage"), str(tmp_path))
        h1.url = "https://10.210.0.1:8444"
        h1.facts = {**h1.facts, **FACTS}
        s.add(Host(name="h2", url="https://10.210.0.2:8444", status="maintenance",
                   facts={"cpus": 2, "memory_mib": 2048, "virt_type": "qemu"}))
        image = s.query(Image).filter_by(name="tiny").one()
        for name, cpus, mib, state in (("a", 1, 256, "running"), ("b", 2, 512, "stopped")):
            s.add(Vm(name=name, image_id=image.id, host_id=h1.id, cpus=cpus, memory_mib=mib,
                     disk_bytes=1, state=state))
    try:
        yield admin_client(ctx), ctx
    finally:
        ctx.ops.shutdown()


def test_list_has_the_facts_and_what_vms_take_against_capacity(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, _ = engine
    h1, h2 = client.get("/api/v1/hosts").json()
    assert h1["allocated"] == {"vms": 2, "cpus": 3, "memory_mib": 768}
    assert (h1["cpus"], h1["memory_mib"], h1["memory_free_mib"]) == (4, 8192, 6000)
    assert (h1["cpu_model"], h1["cpu_vendor"], h1["cpu_flags"]) == \
        ("Skylake-Client-IBRS", "Intel", ["vmx"])
    assert (h1["libvirt_version"], h1["qemu_version"], h1["corral_version"]) == \
        ("9.0.0", "7.2.0", "0.13.0")
    assert (h1["address"], h1["virt_type"], h1["status"]) == ("10.210.0.1", "kvm", "up")
    # An older agent's host: what it did not report is null, not an error.
    assert h2["allocated"] == {"vms": 0, "cpus": 0, "memory_mib": 0}
    assert (h2["cpu_model"], h2["qemu_version"], h2["cpu_flags"]) == (None, None, [])
    assert h2["status"] == "maintenance"


def test_show_has_the_allocation_and_the_memory_now(
        engine: tuple[TestClient, EngineContext]) -> None:
    client, _ = engine
    shown = client.get("/api/v1/hosts/h1").json()
    assert shown["allocated"] == {"vms": 2, "cpus": 3, "memory_mib": 768}
    assert shown["memory"]["available_mib"] == 5000


def test_cli_host_list_is_compact(engine: tuple[TestClient, EngineContext],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = engine

    def sdk(*_args: Any, **_kwargs: Any) -> Client:
        c = Client("http://testserver", "unused")
        c._http = TestClient(client.app, headers=dict(client.headers))
        return c

    monkeypatch.setattr(host_cli, "client", sdk)
    table = CliRunner().invoke(cli_app, ["host", "list"])
    assert table.exit_code == 0, table.output
    header, h1, h2 = table.output.splitlines()[:3]
    assert header.split()[:6] == ["NAME", "STATE", "CPUS", "MEMORY", "VMS", "VIRT"]
    assert "ADDRESS" in header.split()
    assert h1.split()[:7] == ["h1", "up", "3/4", "768/8192", "MiB", "2", "kvm"]
    assert h1.split()[-1] == "10.210.0.1"
    assert h2.split()[:5] == ["h2", "maintenance", "0/2", "0/2048", "MiB"]
    shown = CliRunner().invoke(cli_app, ["host", "show", "h1", "-o", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["qemu_version"] == "7.2.0"
