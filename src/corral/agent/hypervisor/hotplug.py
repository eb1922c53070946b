"""Hot-unplug shared by disks and NICs: out of the running domain, then out of its definition.

Unplugging from a running guest needs its cooperation (PCIe native hot-plug), so the live
part waits until the device is really gone, or fails with a clear error and leaves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import libvirt

from corral.domainxml.xmlnode import XMLNode
from corral.errors import HostError

DETACH_TIMEOUT_S = 60.0

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG

Finder = Callable[[str], XMLNode | None]  # domain XML -> the device, or None


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
