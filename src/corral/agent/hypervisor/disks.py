"""Disks of a domain: hot-plug, hot-unplug and live resize (libvirt, nothing leaves here).

The engine designs the ``<disk>`` XML (corral.domainxml.design_disk); this module plugs it
into the domain, live and persistent (corral.agent.hypervisor.hotplug). Disks are found by
their source (a file path, or ``POOL/IMAGE`` of an RBD image).

Hot-unplug needs the guest: libvirt asks it to release the device (PCIe native hot-plug
takes about 5 s in Linux guests) and returns; :meth:`DiskOps.detach` waits until the disk is
really gone from the running domain, or fails with a clear error.
"""

from __future__ import annotations

from typing import Any

import libvirt

from corral.agent.hypervisor.hotplug import DETACH_TIMEOUT_S, plug, unplug
from corral.agent.hypervisor.libvirt_host import Hypervisor, _mapped
from corral.domainxml import Controller, Disk, Domain
from corral.errors import InvalidInput, WrongState


def _disks(xml: str) -> list[Disk]:
    return Domain.from_xml(xml).devices.disks


def _find(xml: str, source: str) -> Disk | None:
    return next((d for d in _disks(xml) if d.source_path == source), None)


def _has_scsi_controller(xml: str) -> bool:
    return any(c.type == "scsi" and c.index == 0 for c in Domain.from_xml(xml).devices.controllers)


class DiskOps:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv

    def _dom(self, name: str) -> Any:
        return self.hv._domain(name)

    def list(self, name: str) -> list[dict[str, Any]]:
        """The disks of the running domain (or of its definition when it is not running)."""
        dom = self._dom(name)
        with _mapped(f"disks of {name}"):
            xml = dom.XMLDesc(0)
        return [{"target": d.target_dev, "bus": d.target_bus, "device": d.device,
                 "type": d.type, "format": d.driver_type, "source": d.source_path}
                for d in _disks(xml)]

    def attach(self, name: str, disk_xml: str, controller_xml: str | None = None) -> dict[str, Any]:
        """Plug a disk into the domain: live when it runs, and into its definition."""
        disk = Disk.from_xml(disk_xml)
        source = disk.source_path
        if not source:
            raise InvalidInput("the disk XML names no source", field="xml")
        dom = self._dom(name)

        def controller_first(current: str, flag: int) -> None:
            if controller_xml and not _has_scsi_controller(current):
                Controller.from_xml(controller_xml)  # well-formed, one controller
                dom.attachDeviceFlags(controller_xml, flag)

        with _mapped(f"attach disk {disk.target_dev} to {name}"):
            return plug(dom, lambda xml: _find(xml, source), disk_xml, "a disk", name,
                        before=controller_first)

    def detach(self, name: str, source: str, timeout: float = DETACH_TIMEOUT_S) -> dict[str, Any]:
        """Unplug the disk whose source is ``source``; idempotent (absent is fine)."""
        dom = self._dom(name)
        with _mapped(f"detach disk {source} from {name}"):
            return unplug(dom, lambda xml: _find(xml, source),
                          f"{name} did not release disk {source}",
                          "is it mounted or busy? does the guest support hot-unplug?", timeout)

    def resize(self, name: str, target: str, size: int) -> dict[str, Any]:
        """Grow a disk of a running domain through QEMU: the guest sees the new size."""
        dom = self._dom(name)
        with _mapped(f"resize disk {target} of {name}"):
            if not dom.isActive():
                raise WrongState(f"VM {name} is not running: resize the volume offline")
            dom.blockResize(target, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            capacity, _allocation, _physical = dom.blockInfo(target)
        return {"target": target, "capacity": int(capacity)}
