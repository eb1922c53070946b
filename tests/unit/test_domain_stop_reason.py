"""The agent says why a stopped domain stopped (DomainInfo.reason, libvirt's shutoff
reason), which HA's restart policy on-failure reads: a domain destroyed on the test driver
lists as destroyed; the reasons libvirt gives a killed QEMU and a guest's own power-off map
to crashed and shutdown (the killed QEMU itself: tests/integration/test_ha_restart_in_place)."""

from __future__ import annotations

import uuid

import libvirt

from corral.agent.hypervisor.libvirt_host import Hypervisor, _reason

XML = """<domain type='test'><name>{name}</name><memory>65536</memory>
<os><type>hvm</type></os></domain>"""
URI = "test:///default"  # one node per process: the agent's connection sees this one's


def test_a_listed_domain_says_why_it_stopped() -> None:
    name = f"why-{uuid.uuid4().hex[:6]}"
    conn = libvirt.open(URI)
    dom = conn.defineXML(XML.format(name=name))
    try:
        dom.create()
        hv = Hypervisor(URI)
        [running] = [d for d in hv.list_domains() if d.name == name]
        assert (running.state, running.reason) == ("running", "")
        dom.destroy()
        [stopped] = [d for d in hv.list_domains() if d.name == name]
        assert (stopped.state, stopped.reason) == ("stopped", "destroyed")
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        conn.close()


def test_libvirts_reasons_in_words() -> None:
    off = libvirt.VIR_DOMAIN_SHUTOFF
    assert _reason(off, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED) == "crashed"  # QEMU killed
    assert _reason(off, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN) == "shutdown"  # guest power-off
    assert _reason(off, libvirt.VIR_DOMAIN_SHUTOFF_FAILED) == "failed"
    assert _reason(libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED) == "panicked"
    assert _reason(libvirt.VIR_DOMAIN_RUNNING, 1) == ""
