"""Hot-plug and hot-unplug shared by disks and NICs.

A device goes into the running domain (``VIR_DOMAIN_AFFECT_LIVE``) and into its persistent
definition (``VIR_DOMAIN_AFFECT_CONFIG``), each only where it is missing, so a re-run is
harmless; it comes out of both the same way. Unplugging from a running guest needs its
cooperation (PCIe native hot-plug), so the live part waits until the device is really
gone, or fails with a clear error and leaves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import libvirt

from corral.domainxml.xmlnode import XMLNode
from corral.errors import HostError, WrongState

DETACH_TIMEOUT_S = 60.0

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG

Finder = Callable[[str], XMLNode | None]  # domain XML -> the device, or None


def plug(dom: Any, find: Finder, device_xml: str, what: str, vm: str,
         before: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Add the device ``find`` locates where it is missing. ``before(current_xml, flag)``
    runs first in each place (a disk's SCSI controller). Call under _mapped."""
    done: dict[str, Any] = {"live": False, "config": False}
    running = bool(dom.isActive())
    if running and dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
        raise WrongState(f"VM {vm} is paused: resume it to plug {what} in")
    places = ((LIVE, 0, "live"), (CONFIG, libvirt.VIR_DOMAIN_XML_INACTIVE, "config"))
    for flag, xml_flags, key in places[0 if running else 1:]:
        current = dom.XMLDesc(xml_flags)
        if before is not None:
            before(current, flag)
        if find(current) is None:
            dom.attachDeviceFlags(device_xml, flag)
            done[key] = True
    return {**done, "running": running}


def unplug(dom: Any, find: Finder, what: str, hint: str, timeout: float) -> dict[str, Any]:
    """Remove the device ``find`` locates; idempotent (absent is fine). Call under _mapped."""
    done: dict[str, Any] = {"live": False, "config": False}
    if dom.isActive():
        live = find(dom.XMLDesc(0))
        if live is not None:
            dom.detachDeviceFlags(live.to_xml(), LIVE)
            _wait_gone(dom, find, what, hint, timeout)
            done["live"] = True
    persistent = find(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    if persistent is not None:
        dom.detachDeviceFlags(persistent.to_xml(), CONFIG)
        done["config"] = True
    return done


def _wait_gone(dom: Any, find: Finder, what: str, hint: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while find(dom.XMLDesc(0)) is not None:
        if not dom.isActive():
            return
        if time.monotonic() > deadline:
            raise HostError(f"the guest of {what} within {timeout:g} s ({hint}); "
                            "it stays attached")
        time.sleep(0.25)
