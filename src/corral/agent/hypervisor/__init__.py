"""The only place that touches libvirt objects: no virDomain leaves this package (what leaves
it are corral.agent_api models, e.g. DomainInfo)."""

from corral.agent.hypervisor.libvirt_host import Hypervisor

__all__ = ["Hypervisor"]
