"""Agent routes of domains, their root disks and cloud-init seeds, and the host's facts
(the protocol: corral.agent_api.domains)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from corral.agent import clones
from corral.agent.hypervisor import Hypervisor
from corral.agent.storage import Storage
from corral.agent_api import Deleted
from corral.agent_api.domains import (
    DefineBody,
    DiskBody,
    DiskInfo,
    DomainAction,
    DomainInfo,
    HostFacts,
    InterfaceAddress,
    LiveResources,
    MemoryPlugBody,
    MemoryTargetBody,
    SeedBody,
    SeedInfo,
    VcpusBody,
)
from corral.errors import NotFound
from corral.validation import validate_vm_name


def router(hv: Hypervisor, storage: Storage, console_dir: Path,
           facts: Callable[[], HostFacts], after_start: Callable[[], None]) -> APIRouter:
    """``after_start``: what must follow a domain start (its taps exist only then)."""
    r = APIRouter()

    def console_file(vm: str) -> Path:
        return console_dir / f"{validate_vm_name(vm, 'vm')}.log"

    @r.get("/v1/host")
    def host() -> HostFacts:
        return facts()

    @r.get("/v1/domains")
    def domains() -> list[DomainInfo]:
        return hv.list_domains()

    @r.get("/v1/domains/{name}")
    def domain(name: str) -> DomainInfo:
        return hv.get(name)

    @r.put("/v1/domains/{name}")
    def define(name: str, body: DefineBody) -> DomainInfo:
        return hv.define(body.xml)

    actions: dict[str, Callable[[str], DomainInfo]] = {
        "start": hv.start, "shutdown": hv.shutdown, "destroy": hv.destroy, "reboot": hv.reboot,
        "reset": hv.reset, "suspend": hv.suspend, "resume": hv.resume,
    }

    @r.post("/v1/domains/{name}/{action}")
    def act(name: str, action: DomainAction) -> DomainInfo:
        out = actions[action](name)
        if action == "start":
            after_start()
        return out

    @r.get("/v1/domains/{name}/resources")
    def resources(name: str) -> LiveResources:
        return LiveResources.model_validate(hv.resources(name))

    @r.put("/v1/domains/{name}/vcpus")
    def set_vcpus(name: str, body: VcpusBody) -> LiveResources:
        return LiveResources.model_validate(hv.set_vcpus(name, body.count))

    @r.put("/v1/domains/{name}/memory-target")
    def set_memory_target(name: str, body: MemoryTargetBody) -> LiveResources:
        return LiveResources.model_validate(hv.set_memory_target(name, body.mib))

    @r.put("/v1/domains/{name}/memory")
    def plug_memory(name: str, body: MemoryPlugBody) -> LiveResources:
        return LiveResources.model_validate(hv.plug_memory(name, body.xml, body.total_mib))

    @r.delete("/v1/domains/{name}")
    def undefine(name: str) -> Deleted:
        try:
            hv.undefine(name)
        except NotFound:
            return Deleted(deleted=False)
        return Deleted(deleted=True)

    @r.get("/v1/domains/{name}/console-log")
    def console_log(name: str) -> PlainTextResponse:
        path = console_file(name)
        return PlainTextResponse(path.read_text(errors="replace") if path.exists() else "")

    @r.get("/v1/domains/{name}/addresses")
    def addresses(name: str) -> list[InterfaceAddress]:
        return [InterfaceAddress.model_validate(a) for a in hv.interface_addresses(name)]

    @r.put("/v1/disks/{vm}")
    def create_disk(vm: str, body: DiskBody) -> DiskInfo:
        return DiskInfo.model_validate(storage.create_disk(vm, body.image, body.size))

    @r.delete("/v1/disks/{vm}")
    def delete_disk(vm: str) -> Deleted:
        storage.delete_disk(vm)
        clones.collect_bases(storage)  # frozen bases of linked clones no disk uses any more
        console_file(vm).unlink(missing_ok=True)
        return Deleted(deleted=True)

    @r.put("/v1/seeds/{vm}")
    def write_seed(vm: str, body: SeedBody) -> SeedInfo:
        return SeedInfo.model_validate(storage.write_seed(vm, body.files))

    @r.delete("/v1/seeds/{vm}")
    def delete_seed(vm: str) -> Deleted:
        storage.delete_seed(vm)
        return Deleted(deleted=True)

    return r
