"""The facts of a host the cluster issue added to ``GET /v1/host`` (HostFacts): its CPU as
libvirt names it, the hypervisor's version and the memory free now, and (issue 14) its
addresses, per interface, for the cluster's migration network. A dict of HostFacts fields,
so Agent.facts takes them in one line."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

from corral.agent import host_memory
from corral.agent.hypervisor import Hypervisor


def reported(hv: Hypervisor, virt_type: str) -> dict[str, Any]:
    cpu = hv.host_cpu()
    kind, version = hv.hypervisor()
    return {"cpu_model": cpu.model, "cpu_vendor": cpu.vendor, "cpu_flags": cpu.flags,
            "cpu_models": hv.cpu_models(virt_type),  # what the scheduler matches --cpu-model to
            "hypervisor_type": kind, "hypervisor_version": version,
            "memory_free_mib": host_memory.available_mib(), "addresses": addresses()}


def addresses() -> list[dict[str, Any]]:
    """Every IPv4 and IPv6 address of every interface but loopback, with its prefix (from
    iproute2: psutil would cost the idle agent memory); empty when ``ip`` cannot say."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        links = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    found: list[dict[str, Any]] = []
    for link in links if isinstance(links, list) else []:
        for a in link.get("addr_info") or []:
            if a.get("family") not in ("inet", "inet6") or "local" not in a:
                continue
            try:
                ip = ipaddress.ip_address(str(a["local"]).split("%")[0])
            except ValueError:
                continue
            if not ip.is_loopback:
                found.append({"interface": str(link.get("ifname")), "address": str(ip),
                              "prefix": int(a.get("prefixlen", ip.max_prefixlen))})
    return found
