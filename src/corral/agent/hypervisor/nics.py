"""NICs of a domain: hot-plug and hot-unplug (libvirt, nothing leaves here).

The engine designs the ``<interface>`` XML (corral.domainxml.design_nic); this module plugs
it into the domain, live and persistent (corral.agent.hypervisor.hotplug). NICs are found
by their MAC address.

Hot-unplug needs the guest's cooperation (PCIe native hot-plug): :meth:`NicOps.detach` waits
until the NIC is really gone from the running domain, or fails with a clear error.
"""

from __future__ import annotations

from typing import Any

from corral.agent.hypervisor.hotplug import DETACH_TIMEOUT_S, plug, unplug
from corral.agent.hypervisor.libvirt_host import Hypervisor, _mapped
from corral.domainxml import Domain, Interface
from corral.errors import InvalidInput


def _find(xml: str, mac: str) -> Interface | None:
    mac = mac.lower()
    return next((n for n in Domain.from_xml(xml).devices.interfaces
                 if (n.mac or "").lower() == mac), None)


class NicOps:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv

    def _dom(self, name: str) -> Any:
        return self.hv._domain(name)

    def list(self, name: str) -> list[dict[str, Any]]:
        """The NICs of the running domain (or of its definition when it is not running)."""
        dom = self._dom(name)
        with _mapped(f"NICs of {name}"):
            xml = dom.XMLDesc(0)
        return [{"mac": n.mac, "bridge": n.source_bridge, "model": n.model}
                for n in Domain.from_xml(xml).devices.interfaces]

    def attach(self, name: str, nic_xml: str) -> dict[str, Any]:
        """Plug a NIC into the domain: live when it runs, and into its definition."""
        mac = Interface.from_xml(nic_xml).mac
        if not mac:
            raise InvalidInput("the interface XML names no MAC address", field="xml")
        dom = self._dom(name)
        with _mapped(f"attach NIC {mac} to {name}"):
            return plug(dom, lambda xml: _find(xml, mac), nic_xml, "a NIC", name)

    def detach(self, name: str, mac: str, timeout: float = DETACH_TIMEOUT_S) -> dict[str, Any]:
        """Unplug the NIC with MAC ``mac``; idempotent (absent is fine)."""
        dom = self._dom(name)
        with _mapped(f"detach NIC {mac} from {name}"):
            return unplug(dom, lambda xml: _find(xml, mac), f"{name} did not release NIC {mac}",
                          "does the guest support hot-unplug?", timeout)
