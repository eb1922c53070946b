"""What libvirt says of the host itself: the CPU model, vendor and features
(``getCapabilities``) and the hypervisor's type and version (``getType``/``getVersion``:
QEMU's own version on the qemu driver). Parsing is pure, so tests feed it real XML."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from corral.errors import HypervisorError

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


@dataclass(frozen=True)
class HostCpu:
    """``model``/``vendor``: None where libvirt names none (TCG-only hosts, the test
    driver); ``flags``: the features libvirt lists beyond the model's own, sorted."""

    arch: str | None = None
    model: str | None = None
    vendor: str | None = None
    flags: list[str] = field(default_factory=list)


def parse_host_cpu(caps_xml: str) -> HostCpu:
    try:
        root = etree.fromstring(caps_xml.encode(), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise HypervisorError(f"libvirt capabilities are not XML: {exc}") from exc
    cpu = root.find("host/cpu")
    if cpu is None:
        return HostCpu()
    # <feature name='vmx'/> on real hosts; <features><pae/></features> (older form, and
    # what the test driver gives) names them by element.
    flags = {f.get("name") or "" for f in cpu.findall("feature")}
    flags |= {str(f.tag) for f in cpu.findall("features/*") if isinstance(f.tag, str)}
    return HostCpu(arch=cpu.findtext("arch"), model=cpu.findtext("model"),
                   vendor=cpu.findtext("vendor"), flags=sorted(flags - {""}))


def dotted(version: int) -> str:
    """libvirt's packed version (major * 1,000,000 + minor * 1,000 + micro) as 7.2.0."""
    return f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"


def parse_cpu_models(domcaps_xml: str) -> list[str]:
    """The named CPU models a guest may have here (domain capabilities: custom mode, the
    models libvirt marks usable for this host and virtualization type), sorted."""
    try:
        root = etree.fromstring(domcaps_xml.encode(), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise HypervisorError(f"libvirt domain capabilities are not XML: {exc}") from exc
    custom = root.find("cpu/mode[@name='custom']")
    if custom is None or custom.get("supported") != "yes":
        return []
    return sorted({m.text.strip() for m in custom.findall("model")
                   if m.get("usable") == "yes" and m.text and m.text.strip()})
