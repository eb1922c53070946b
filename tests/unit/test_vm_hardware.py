"""A VM's hardware through the API: what a create asks for is what `vm show` says and what
the domain designed for its host holds; what cannot work together is a 422 naming the field,
and leaves no VM behind.

The engine runs for real (SQLite, routes, services) over a stand-in host, held closed so
that the operations stay in flight while a test reads what they were given (its jobs fail).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import QuickHost
from engine_seed import seed_node
from fastapi.testclient import TestClient

from corral.domainxml import Domain
from corral.engine.app import build_context, create_app
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Nic, Vm
from corral.engine.services import vm_design
from corral.engine.services.auth import create_token


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    """One host, the tiny image, the default network, and ``old``: a VM made before VMs had
    hardware settings (its column is NULL)."""
    # CPU overcommit 8: `win` has 8 vCPUs on the seed's 2 CPUs, beside `old`'s one
    ctx = build_context(EngineSettings(data_dir=tmp_path, agent_reconnect_s=0,
                                       cpu_overcommit=8.0))
    host = QuickHost()
    host.close()
    ctx.agent_transport = httpx.MockTransport(host)
    with ctx.db.session() as s:
        node = seed_node(s, str(tmp_path / "storage"), str(tmp_path))
        image = s.query(Image).one()
        net = s.query(Network).one()
        vm = Vm(name="old", image_id=image.id, host_id=node.id, cpus=1, memory_mib=64,
                disk_bytes=64 << 20, state="stopped", desired_power="stopped")
        s.add(vm)
        s.flush()
        s.add(Nic(vm_id=vm.id, network_id=net.id, mac="52:54:00:00:00:02", idx=0))
    try:
        yield ctx
    finally:
        host.open()
        ctx.ops.shutdown()


@pytest.fixture()
def client(ctx: EngineContext) -> TestClient:
    return TestClient(create_app(ctx),
                      headers={"Authorization": f"Bearer {create_token(ctx, 'admin')}"})


def _designed(ctx: EngineContext, name: str) -> Domain:
    with ctx.db.session() as s:
        vm_id = s.query(Vm).filter_by(name=name).one().id
    return Domain.from_xml(vm_design.domain_xml(ctx, vm_id)[2])


def _vm_count(ctx: EngineContext) -> int:
    with ctx.db.session() as s:
        return s.query(Vm).count()


def test_windows_11_hardware_is_shown_and_designed(ctx: EngineContext, client: TestClient,
                                                   tmp_path: Path) -> None:
    hardware = {"firmware": "uefi", "secure_boot": True, "tpm": True, "sockets": 2,
                "threads": 2, "boot": ["cdrom", "disk"], "cpu_model": "Haswell"}
    resp = client.post("/api/v1/vms", json={"name": "win", "image": "tiny", "cpus": 8,
                                            "hardware": hardware})
    assert resp.status_code == 202, resp.text
    shown = client.get("/api/v1/vms/win").json()["hardware"]
    assert shown == {**shown, **hardware} and shown["machine"] == "q35"

    dom = _designed(ctx, "win")
    assert dom.os.firmware == "efi"
    assert {(f.name, f.enabled) for f in dom.os.firmware_features.features} == {
        ("secure-boot", True), ("enrolled-keys", True)}
    # the NVRAM lives with the VM's disk on its host, and goes with its domain
    assert dom.os.nvram == f"{tmp_path}/storage/vms/win.nvram.fd"
    assert dom.features.smm_state is True
    assert [(t.model, t.backend_version) for t in dom.devices.tpms] == [("tpm-crb", "2.0")]
    assert (dom.cpu.mode, dom.cpu.model) == ("custom", "Haswell")
    assert (dom.cpu.topology_sockets, dom.cpu.topology_cores, dom.cpu.topology_threads) == (
        2, 2, 2)


def test_i440fx_without_graphics(ctx: EngineContext, client: TestClient) -> None:
    resp = client.post("/api/v1/vms", json={"name": "legacy", "image": "tiny", "hardware": {
        "machine": "i440fx", "graphics": "none", "cpu_model": "host-passthrough"}})
    assert resp.status_code == 202, resp.text
    dom = _designed(ctx, "legacy")
    assert dom.os.machine == "pc"
    assert dom.devices.graphics == [] and dom.devices.videos == []
    assert dom.os.firmware is None and dom.devices.tpms == []


def test_a_vm_made_before_hardware_settings_keeps_its_domain(ctx: EngineContext,
                                                             client: TestClient) -> None:
    shown = client.get("/api/v1/vms/old").json()["hardware"]
    assert (shown["firmware"], shown["machine"], shown["graphics"], shown["boot"]) == (
        "bios", "q35", "vnc", [])
    dom = _designed(ctx, "old")
    assert dom.os.firmware is None and dom.os.machine == "q35"
    assert [g.type for g in dom.devices.graphics] == ["vnc"]
    assert dom.cpu.topology_sockets is None


def test_a_clone_has_the_hardware_of_its_source(ctx: EngineContext, client: TestClient) -> None:
    with ctx.db.session() as s:
        s.query(Vm).filter_by(name="old").one().hardware = {"firmware": "uefi", "tpm": True}
    resp = client.post("/api/v1/vms/old/clone", json={"name": "copy"})
    assert resp.status_code == 202, resp.text
    shown = client.get("/api/v1/vms/copy").json()["hardware"]
    assert (shown["firmware"], shown["tpm"]) == ("uefi", True)
    assert _designed(ctx, "copy").os.nvram.endswith("/vms/copy.nvram.fd")


@pytest.mark.parametrize(("hardware", "cpus", "field", "words"), [
    ({"secure_boot": True}, 1, "hardware", "secure_boot needs firmware uefi"),
    ({"secure_boot": True, "firmware": "uefi", "machine": "i440fx"}, 1, "hardware", "q35"),
    ({"boot": ["disk", "disk"]}, 1, "hardware", "twice"),
    ({"boot": ["floppy"]}, 1, "hardware.boot.0", "disk"),
    ({"boot": ["disk", "cdrom", "network", "disk"]}, 1, "hardware.boot", "3"),
    ({"firmware": "coreboot"}, 1, "hardware.firmware", "bios"),
    ({"machine": "virt"}, 1, "hardware.machine", "q35"),
    ({"cpu_model": "Haswell; rm -rf /"}, 1, "hardware.cpu_model", "pattern"),
    ({"sockets": 0}, 1, "hardware.sockets", "1"),
    ({"sockets": 2}, 3, "hardware.sockets", "do not split"),
    ({"threads": 2, "sockets": 2}, 2, "hardware.sockets", "do not split"),
    ({"graphics": "spice"}, 1, "hardware.graphics", "vnc"),
    ({"tpm": "maybe"}, 1, "hardware.tpm", "bool"),
    ({"nvram": "/etc/shadow"}, 1, "hardware.nvram", "unknown field"),
])
def test_hardware_that_cannot_work_is_a_422_and_leaves_nothing(
        ctx: EngineContext, client: TestClient, hardware: dict[str, Any], cpus: int, field: str,
        words: str) -> None:
    resp = client.post("/api/v1/vms", json={"name": "bad", "image": "tiny", "cpus": cpus,
                                            "hardware": hardware})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == field and words in error["message"], error
    assert _vm_count(ctx) == 1  # only `old`
