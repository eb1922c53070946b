"""The only place that touches libvirt objects: no virDomain leaves this package."""

from corral.agent.hypervisor.libvirt_host import DomainInfo, Hypervisor

__all__ = ["DomainInfo", "Hypervisor"]
