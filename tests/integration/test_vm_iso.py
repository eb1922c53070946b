"""Installing from an ISO: the ISO rides as a read-only CD-ROM, the root disk starts blank."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pycdlib
import pytest
from lxml import etree
from nodeutil import Node

pytestmark = pytest.mark.integration


def _make_iso(path: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="INSTALLER")
    data = b"corral installer medium\n"
    iso.add_fp(io.BytesIO(data), len(data), "/README.TXT;1")
    iso.write(str(path))
    iso.close()


def test_vm_installs_from_iso(node: Node, tmp_path: Path) -> None:
    medium = tmp_path / "installer.iso"
    _make_iso(medium)
    node.cli("image", "import", "inst", str(medium), "--format", "iso")
    images: Any = node.cli_json("image", "list")
    assert next(i for i in images if i["name"] == "inst")["format"] == "iso"

    refused = node.cli("vm", "create", "bad", "--image", "inst", check=False)
    assert refused.returncode == 2 and "is an ISO" in refused.stderr
    refused = node.cli("vm", "create", "bad", "--iso", "inst", check=False)
    assert refused.returncode == 2 and "needs a disk size" in refused.stderr

    node.cli("vm", "create", "inst1", "--iso", "inst", "--disk", "1G", "--memory", "128M", "--start")
    try:
        assert node.virsh("domstate", "inst1") == "running"
        dom = etree.fromstring(node.virsh("dumpxml", "inst1").encode())
        cdroms = dom.xpath("devices/disk[@device='cdrom']")
        assert [c.find("source").get("file").endswith("/images/inst.iso") for c in cdroms] == [True]
        assert cdroms[0].find("readonly") is not None
        disk = node.data_dir / "agent" / "storage" / "vms" / "inst1.qcow2"
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                         capture_output=True, text=True, check=True).stdout)
        assert info["virtual-size"] == 1 << 30
        assert "backing-filename" not in info  # blank, not a clone of the ISO
        refused = node.cli("image", "delete", "inst", check=False)
        assert refused.returncode == 2 and "used by VMs: inst1" in refused.stderr
    finally:
        node.cli("vm", "delete", "inst1", "--force")
    node.cli("image", "delete", "inst")
    assert not disk.exists()
