"""Calls of domains, root disks, seeds and host facts (``corral.agent_api.domains``)."""

from __future__ import annotations

from corral.agent_api import Deleted
from corral.agent_api.domains import (
    DefineBody,
    DiskBody,
    DiskInfo,
    DomainAction,
    DomainInfo,
    GraphicsInfo,
    GuestAgentStatus,
    GuestExecBody,
    GuestExecResult,
    HostFacts,
    InterfaceAddress,
    LiveResources,
    MemoryPlugBody,
    MemoryTargetBody,
    SeedBody,
    SeedInfo,
    VcpusBody,
)
from corral.engine.agent_calls import AgentCalls


class DomainCalls(AgentCalls):
    def facts(self) -> HostFacts:
        # Also the probe of a host being added: a wrong address fails at once.
        return self._send("GET", "/v1/host", HostFacts, timeout=10, reconnect=False)

    def domains(self) -> list[DomainInfo]:
        # The reconciler's poll: a refusing agent is reported at once, not waited for.
        return self._send_list("GET", "/v1/domains", DomainInfo, timeout=10, reconnect=False)

    def domain(self, name: str) -> DomainInfo:
        return self._send("GET", f"/v1/domains/{name}", DomainInfo, timeout=10)

    def define(self, name: str, xml: str) -> DomainInfo:
        return self._send("PUT", f"/v1/domains/{name}", DomainInfo, DefineBody(xml=xml))

    def act(self, name: str, action: DomainAction) -> DomainInfo:
        return self._send("POST", f"/v1/domains/{name}/{action}", DomainInfo)

    def resources(self, name: str) -> LiveResources:
        return self._send("GET", f"/v1/domains/{name}/resources", LiveResources, timeout=10)

    def set_vcpus(self, name: str, count: int) -> LiveResources:
        return self._send("PUT", f"/v1/domains/{name}/vcpus", LiveResources,
                          VcpusBody(count=count))

    def set_memory_target(self, name: str, mib: int) -> LiveResources:
        return self._send("PUT", f"/v1/domains/{name}/memory-target", LiveResources,
                          MemoryTargetBody(mib=mib))

    def plug_memory(self, name: str, dimm_xml: str, total_mib: int) -> LiveResources:
        return self._send("PUT", f"/v1/domains/{name}/memory", LiveResources,
                          MemoryPlugBody(xml=dimm_xml, total_mib=total_mib))

    def undefine(self, name: str) -> Deleted:
        return self._send("DELETE", f"/v1/domains/{name}", Deleted)

    def console_log(self, name: str) -> str:
        return str(self._request("GET", f"/v1/domains/{name}/console-log", text=True))

    def addresses(self, vm: str) -> list[InterfaceAddress]:
        return self._send_list("GET", f"/v1/domains/{vm}/addresses", InterfaceAddress,
                               timeout=10)

    def guest_agent(self, name: str) -> GuestAgentStatus:
        # A ping of a few seconds at most; `vm show` waits for it, but not for a host that
        # is gone (no reconnect: the answer is then "not known").
        return self._send("GET", f"/v1/domains/{name}/guest-agent", GuestAgentStatus,
                          timeout=10, reconnect=False)

    def guest_exec(self, name: str, body: GuestExecBody) -> GuestExecResult:
        return self._send("POST", f"/v1/domains/{name}/guest-agent/exec", GuestExecResult,
                          body, timeout=body.timeout + 30)

    def graphics(self, name: str) -> list[GraphicsInfo]:
        return self._send_list("GET", f"/v1/domains/{name}/graphics", GraphicsInfo,
                               timeout=10)

    def create_disk(self, vm: str, image: str | None, size: int | None) -> DiskInfo:
        return self._send("PUT", f"/v1/disks/{vm}", DiskInfo, DiskBody(image=image, size=size))

    def delete_disk(self, vm: str) -> Deleted:
        return self._send("DELETE", f"/v1/disks/{vm}", Deleted)

    def write_seed(self, vm: str, files: dict[str, str]) -> SeedInfo:
        return self._send("PUT", f"/v1/seeds/{vm}", SeedInfo, SeedBody(files=files))

    def delete_seed(self, vm: str) -> Deleted:
        return self._send("DELETE", f"/v1/seeds/{vm}", Deleted)
