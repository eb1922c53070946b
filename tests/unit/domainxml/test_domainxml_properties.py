"""Properties that the designer does not write yet (firmware, CPU topology, VNC, RNG rate,
NIC link/MTU/VLAN, ...): each is written where libvirt's schema puts it and read back as
written, from a fresh node and from the XML text."""

from __future__ import annotations

from typing import Any

import pytest

from corral.domainxml import Domain
from corral.domainxml.devices import RNG, Disk, Graphics, Interface, MemBalloon, Video
from corral.domainxml.model import CPU, OS, Features, Loader
from corral.domainxml.xmlnode import FlagProperty, XMLNode

CASES: list[tuple[type[XMLNode], str, Any, str]] = [
    (Disk, "driver_io", "native", '<driver io="native"/>'),
    (Disk, "shareable", True, "<shareable/>"),
    (Graphics, "passwd", "s3cret", 'passwd="s3cret"'),
    (Graphics, "websocket", 5701, 'websocket="5701"'),
    (Interface, "bandwidth_inbound", 1000, '<inbound average="1000"/>'),
    (Interface, "bandwidth_outbound", 250, '<outbound average="250"/>'),
    (Interface, "boot_order", 2, '<boot order="2"/>'),
    (Interface, "link_state", "down", '<link state="down"/>'),
    (Interface, "mtu", 9000, '<mtu size="9000"/>'),
    (Interface, "source_network", "default", '<source network="default"/>'),
    (Interface, "virtualport_type", "openvswitch", '<virtualport type="openvswitch"/>'),
    (Interface, "vlan_tag", 42, '<tag id="42"/>'),
    (MemBalloon, "autodeflate", True, 'autodeflate="on"'),
    (RNG, "rate_bytes", 1024, 'bytes="1024"'),
    (RNG, "rate_period", 1000, 'period="1000"'),
    (Video, "model_heads", 2, 'heads="2"'),
    (Video, "model_primary", True, 'primary="yes"'),
    (CPU, "topology_sockets", 2, 'sockets="2"'),
    (CPU, "topology_dies", 1, 'dies="1"'),
    (CPU, "topology_threads", 2, 'threads="2"'),
    (Domain, "description", "web tier", "<description>web tier</description>"),
    (Features, "smm_state", True, '<smm state="on"/>'),
    (Loader, "readonly", True, 'readonly="yes"'),
    (Loader, "secure", False, 'secure="no"'),
    (Loader, "type", "pflash", 'type="pflash"'),
    (OS, "firmware", "efi", 'firmware="efi"'),
    (OS, "nvram", "/var/lib/corral/vm.fd", "<nvram>/var/lib/corral/vm.fd</nvram>"),
    (OS, "nvram_template", "/usr/share/OVMF/OVMF_VARS_4M.fd",
     'template="/usr/share/OVMF/OVMF_VARS_4M.fd"'),
]


@pytest.mark.parametrize(("cls", "name", "value", "written"), CASES,
                         ids=[f"{c.__name__}.{n}" for c, n, _, _ in CASES])
def test_property_is_written_where_libvirt_reads_it_and_read_back(
        cls: type[XMLNode], name: str, value: Any, written: str) -> None:
    node = cls()
    setattr(node, name, value)
    xml = node.to_xml()
    assert written in xml
    assert getattr(node, name) == value
    assert getattr(cls.from_xml(xml), name) == value  # from the text, as libvirt returns it
    # unset (a flag: False; the others: None): gone, with no empty element left behind
    setattr(node, name, False if isinstance(vars(cls)[name], FlagProperty) else None)
    assert written not in node.to_xml()
