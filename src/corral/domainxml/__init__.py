"""Typed model of libvirt domain XML, and the designer that turns a VM spec into it.

The only place corral writes domain XML (never f-strings or templates)::

    from corral.domainxml import DomainSpec, DiskSpec, NicSpec, design_domain, Domain

    xml = design_domain(spec).to_xml()          # policy: corral.domainxml.designer
    dom = Domain.from_xml(virdomain_xml)        # read back; unknown XML is kept
    dom.memory_kib = 1024 * 1024                # read-modify-write
    dom.devices.add(disk)                       # Disk(), Interface(), ...
"""

from corral.domainxml.designer import (
    design_dimm,
    design_disk,
    design_domain,
    design_nic,
    vm_id_of,
)
from corral.domainxml.devices import (
    RNG,
    Channel,
    CharDevice,
    Console,
    Controller,
    Device,
    Devices,
    Disk,
    Graphics,
    Input,
    Interface,
    MemBalloon,
    MemoryDevice,
    Serial,
    Video,
    Watchdog,
)
from corral.domainxml.model import CPU, OS, Clock, Domain, Features, Loader, Timer
from corral.domainxml.spec import GUEST_AGENT_CHANNEL, DiskSpec, DomainSpec, NicSpec, tap_of
from corral.domainxml.spec_checks import validate_spec
from corral.domainxml.xmlnode import CORRAL_NS, XMLNode

__all__ = [
    "CORRAL_NS",
    "CPU",
    "GUEST_AGENT_CHANNEL",
    "OS",
    "RNG",
    "Channel",
    "CharDevice",
    "Clock",
    "Console",
    "Controller",
    "Device",
    "Devices",
    "Disk",
    "DiskSpec",
    "Domain",
    "DomainSpec",
    "Features",
    "Graphics",
    "Input",
    "Interface",
    "Loader",
    "MemBalloon",
    "MemoryDevice",
    "NicSpec",
    "Serial",
    "Timer",
    "Video",
    "Watchdog",
    "XMLNode",
    "design_dimm",
    "design_disk",
    "design_domain",
    "design_nic",
    "tap_of",
    "validate_spec",
    "vm_id_of",
]
