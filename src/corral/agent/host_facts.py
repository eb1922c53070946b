"""The facts of a host the cluster issue added to ``GET /v1/host`` (HostFacts): its CPU as
libvirt names it, the hypervisor's version and the memory free now. A dict of HostFacts
fields, so Agent.facts takes them in one line."""

from __future__ import annotations

from typing import Any

from corral.agent import host_memory
from corral.agent.hypervisor import Hypervisor


def reported(hv: Hypervisor, virt_type: str) -> dict[str, Any]:
    cpu = hv.host_cpu()
    kind, version = hv.hypervisor()
    return {"cpu_model": cpu.model, "cpu_vendor": cpu.vendor, "cpu_flags": cpu.flags,
            "cpu_models": hv.cpu_models(virt_type),  # what the scheduler matches --cpu-model to
            "hypervisor_type": kind, "hypervisor_version": version,
            "memory_free_mib": host_memory.available_mib()}
