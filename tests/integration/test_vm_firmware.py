"""UEFI and TPM on a real guest: the tiny guest boots under OVMF with an emulated TPM 2.0,
its NVRAM file is its own and goes with `vm delete`, and the guest's kernel sees UEFI, Secure
Boot on only when asked, and the TPM."""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest
from lxml import etree
from nodeutil import Node, wait_for

from corral.images.tiny import BOOT_MARKER

pytestmark = pytest.mark.integration
# A UEFI guest under TCG answered a typed command slower than console_run's 30 s while
# the other test lane's guests shared the CPUs (make test; its echo had begun).
ANSWER_S = 120.0


def test_uefi_with_tpm_boots_and_its_nvram_goes_with_the_vm(node: Node) -> None:
    refused = node.cli("vm", "create", "bad", "--image", "tiny", "--secure-boot",
                       "--machine", "i440fx", check=False)
    assert refused.returncode == 2 and "secure_boot needs machine q35" in refused.stderr

    node.cli("vm", "create", "efi1", "--image", "tiny", "--memory", "256M", "--firmware",
             "uefi", "--tpm", "--start")
    nvram = node.data_dir / "agent" / "storage" / "vms" / "efi1.nvram.fd"
    try:
        shown = node.cli_json("vm", "show", "efi1")
        assert isinstance(shown, dict)
        assert (shown["hardware"]["firmware"], shown["hardware"]["tpm"]) == ("uefi", True)
        wait_for("efi1 to boot under OVMF", lambda: BOOT_MARKER in node.console_log("efi1"),
                 timeout=180)
        live = etree.fromstring(node.virsh("dumpxml", "efi1").encode())
        loader = live.find("os/loader")
        assert loader is not None and "OVMF" in (loader.text or "")
        assert live.findtext("os/nvram") == str(nvram)
        assert [t.get("model") for t in live.findall("devices/tpm")] == ["tpm-crb"]
        assert nvram.stat().st_size > 0  # made from the firmware's template at first start
        tpm_state = _swtpm_state_dir(live.findtext("uuid") or "?")
        assert _is_dir_in(node, tpm_state)  # libvirt keeps it in the host's own swtpm dir
        # what the guest sees: booted by UEFI firmware, Secure Boot off (not asked)
        assert node.console_run("efi1", "test -d /sys/firmware/efi", ANSWER_S).status == 0
        assert "Secure boot disabled" in _secureboot_lines(node, "efi1")
    finally:
        node.cli("vm", "delete", "efi1", "--force")
    assert not nvram.exists()
    assert not _is_dir_in(node, tpm_state)
    assert node.virsh("domstate", "efi1") == ""


def test_secure_boot_is_on_in_the_guest_and_so_is_its_tpm(node: Node) -> None:
    node.cli("vm", "create", "sb1", "--image", "tiny", "--memory", "256M", "--secure-boot",
             "--tpm", "--start")
    try:
        wait_for("sb1 to boot under Secure Boot", lambda: BOOT_MARKER in node.console_log("sb1"),
                 timeout=180)
        live = etree.fromstring(node.virsh("dumpxml", "sb1").encode())
        loader = live.find("os/loader")
        assert loader is not None and loader.get("secure") == "yes"
        # The guest's kernel reads the firmware's SecureBoot variable: the keys are enrolled
        # and enforcing (it locks itself down as it does on a real Secure Boot machine).
        assert "Secure boot enabled" in _secureboot_lines(node, "sb1")
        # The emulated TPM 2.0 is a device the guest's kernel found.
        assert node.console_run("sb1", "ls /sys/class/tpm", ANSWER_S).output == "tpm0"
    finally:
        node.cli("vm", "delete", "sb1", "--force")


def _secureboot_lines(node: Node, vm: str) -> str:
    """What the guest's kernel said of Secure Boot at boot (``secureboot: ...``)."""
    return node.console_run(vm, "dmesg | grep -i 'secure boot'", ANSWER_S).output


def _is_dir_in(node: Node, path: Path) -> bool:
    """Whether ``path`` is a directory as the lab host sees it (its own /var/lib/libvirt)."""
    return node.host.run(["test", "-d", str(path)], check=False).returncode == 0


def _swtpm_state_dir(uuid: str) -> Path:
    """The state dir of the swtpm that libvirt runs for the domain ``uuid``."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "swtpm" and uuid in line:
            found = re.search(r"dir=([^,\s]+)", line)
            assert found, line
            return Path(found.group(1))
    raise AssertionError(f"no swtpm runs for domain {uuid}")
