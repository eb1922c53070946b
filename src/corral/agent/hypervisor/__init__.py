"""The only place that touches libvirt objects: no virDomain leaves this package."""

from corral.agent.hypervisor.libvirt_host import DomainInfo, Hypervisor
from corral.agent.hypervisor.virt_type import VirtType, detect_virt_type

__all__ = ["DomainInfo", "Hypervisor", "VirtType", "detect_virt_type"]
