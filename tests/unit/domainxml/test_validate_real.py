"""Designed XML validated against libvirt's own RelaxNG schema.

With ``virt-xml-validate`` (package libvirt-clients, which runs ``xmllint`` from
libxml2-utils) and, independently of those tools, with lxml's RelaxNG on the same schema
files. A missing tool fails the test with a message: it never skips silently.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from domainxml_specs import DATA, DESIGNED
from lxml import etree

from corral.domainxml import Domain, design_domain

SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")


def _tool() -> str:
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        pytest.fail("virt-xml-validate is not on PATH: install the libvirt-clients package")
    if shutil.which("xmllint") is None:
        pytest.fail("virt-xml-validate needs xmllint, which is missing: install libxml2-utils")
    return tool


def _validate_with_tool(xml: str, path: Path) -> None:
    path.write_text(xml)
    result = subprocess.run(
        [_tool(), str(path), "domain"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, (
        f"virt-xml-validate rejected {path.name} (rc {result.returncode}):\n"
        f"{result.stdout}{result.stderr}\n{xml}"
    )


@pytest.mark.parametrize("filename", sorted(DESIGNED))
def test_designed_xml_passes_virt_xml_validate(filename: str, tmp_path: Path) -> None:
    _validate_with_tool(design_domain(DESIGNED[filename]).to_xml(), tmp_path / filename)


def test_model_output_of_live_xml_passes_virt_xml_validate(tmp_path: Path) -> None:
    xml = Domain.from_xml((DATA / "libvirt_live.xml").read_text()).to_xml()
    _validate_with_tool(xml, tmp_path / "live.xml")


def test_virt_xml_validate_does_reject_bad_xml(tmp_path: Path) -> None:
    dom = design_domain(DESIGNED["designed_qemu_tiny.xml"])
    dom.on_crash = "explode"
    path = tmp_path / "bad.xml"
    path.write_text(dom.to_xml())
    result = subprocess.run(
        [_tool(), str(path), "domain"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0, "the validator accepted an invalid on_crash value"


@pytest.mark.parametrize("filename", sorted(DESIGNED))
def test_designed_xml_passes_relaxng_in_process(filename: str) -> None:
    if not SCHEMA.exists():
        pytest.fail(f"{SCHEMA} is missing: install libvirt's schemas (package libvirt0)")
    schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
    doc = etree.fromstring(design_domain(DESIGNED[filename]).to_xml().encode())
    assert schema.validate(doc), str(schema.error_log)
