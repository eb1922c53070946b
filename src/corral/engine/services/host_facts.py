"""The facts `host list`/`host show` give of a host beyond placement: where its agent is,
its CPU as libvirt names it, the versions it runs, and what its VMs take of it.

Facts are what the agent reported last (``hosts.facts``, a dict: a key an older agent did
not send reads as None); the allocation is counted from the VM rows, so it is exact now."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from corral.api import HostAllocation
from corral.engine.db.models import Host, Vm


def allocations(s: Session, host_id: str | None = None) -> dict[str, HostAllocation]:
    """Per host id: the VMs defined on it (stopped ones too: they keep their place) and
    their vCPUs and memory; one grouped query for every host (or only ``host_id``)."""
    q = (s.query(Vm.host_id, sa.func.count(Vm.id), sa.func.sum(Vm.cpus),
                 sa.func.sum(Vm.memory_mib))
         .filter(Vm.host_id.is_not(None)).group_by(Vm.host_id))
    if host_id is not None:
        q = q.filter(Vm.host_id == host_id)
    return {str(hid): HostAllocation(vms=n, cpus=int(cpus or 0), memory_mib=int(mem or 0))
            for hid, n, cpus, mem in q}


def api_fields(h: Host, allocated: HostAllocation | None) -> dict[str, Any]:
    """The fields of api.Host this module owns, from the row and its allocation."""
    f = h.facts
    qemu = f.get("hypervisor_version") if f.get("hypervisor_type") == "QEMU" else None
    return {"address": urlsplit(h.url).hostname, "cpu_model": f.get("cpu_model"),
            "cpu_vendor": f.get("cpu_vendor"), "cpu_flags": list(f.get("cpu_flags") or []),
            "memory_free_mib": f.get("memory_free_mib"),
            "libvirt_version": f.get("libvirt_version"), "qemu_version": qemu,
            "corral_version": f.get("agent_version"),
            "allocated": allocated or HostAllocation()}
