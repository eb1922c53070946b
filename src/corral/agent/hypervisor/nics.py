"""NICs of a domain: hot-plug and hot-unplug (libvirt, nothing leaves here).

The engine designs the ``<interface>`` XML (corral.domainxml.design_nic); this module puts it
into the running domain (``VIR_DOMAIN_AFFECT_LIVE``) and into its persistent definition
(``VIR_DOMAIN_AFFECT_CONFIG``), each only where it is missing, so a re-run is harmless.
NICs are found by their MAC address.

Hot-unplug needs the guest's cooperation (PCIe native hot-plug): :meth:`NicOps.detach` waits
until the NIC is really gone from the running domain, or fails with a clear error.
"""

from __future__ import annotations

from typing import Any

import libvirt

from corral.agent.hypervisor.hotplug import CONFIG as _CONFIG
from corral.agent.hypervisor.hotplug import DETACH_TIMEOUT_S, unplug
from corral.agent.hypervisor.hotplug import LIVE as _LIVE
from corral.agent.hypervisor.libvirt_host import Hypervisor, _mapped
from corral.domainxml import Domain, Interface
from corral.errors import InvalidInput, WrongState


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
        done: dict[str, Any] = {"live": False, "config": False}
        with _mapped(f"attach NIC {mac} to {name}"):
            running = bool(dom.isActive())
            if running and dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                raise WrongState(f"VM {name} is paused: resume it to plug a NIC in")
            for flag, xml_flags, key in ((_LIVE, 0, "live"),
                                         (_CONFIG, libvirt.VIR_DOMAIN_XML_INACTIVE, "config")):
                if flag == _LIVE and not running:
                    continue
                if _find(dom.XMLDesc(xml_flags), mac) is None:
                    dom.attachDeviceFlags(nic_xml, flag)
                    done[key] = True
        return {**done, "running": running}

    def detach(self, name: str, mac: str, timeout: float = DETACH_TIMEOUT_S) -> dict[str, Any]:
        """Unplug the NIC with MAC ``mac``; idempotent (absent is fine)."""
        dom = self._dom(name)
        with _mapped(f"detach NIC {mac} from {name}"):
            return unplug(dom, lambda xml: _find(xml, mac), f"{name} did not release NIC {mac}",
                          "does the guest support hot-unplug?", timeout)
