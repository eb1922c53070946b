"""A real host's memory through the engine: `corral host show` reads the kernel's KSM state
and `corral host set --ksm on|off` switches it (the machine's own /sys/kernel/mm/ksm: it is
put back as it was afterwards), and counts what a running guest's balloon took back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodeutil import Node, wait_for
from storageutil import running_vm

pytestmark = pytest.mark.integration

KSM_RUN = Path("/sys/kernel/mm/ksm/run")


@pytest.fixture()
def ksm_restored() -> Iterator[str]:
    if not KSM_RUN.exists():
        pytest.fail(f"{KSM_RUN} is missing: this kernel has no KSM (the test machines do)")
    before = KSM_RUN.read_text().strip()
    try:
        yield before
    finally:
        KSM_RUN.write_text(before)


def _host(node: Node) -> dict[str, Any]:
    hosts: Any = node.cli_json("host", "list")
    assert len(hosts) == 1 and hosts[0]["status"] == "up"
    shown: Any = node.cli_json("host", "show", hosts[0]["name"])
    return dict(shown)


def test_ksm_is_shown_and_switched_on_the_host(node: Node, ksm_restored: str) -> None:
    host = _host(node)
    memory = host["memory"]
    assert memory["ksm"] is (ksm_restored == "1")
    assert 0 < memory["available_mib"] <= memory["total_mib"]

    node.cli("host", "set", host["name"], "--ksm", "on")
    assert KSM_RUN.read_text().strip() == "1"
    assert _host(node)["memory"]["ksm"] is True

    node.cli("host", "set", host["name"], "--ksm", "off")
    assert KSM_RUN.read_text().strip() == "2"  # merged pages split again
    assert _host(node)["memory"]["ksm"] is False

    bad = node.cli("host", "set", host["name"], "--ksm", "sometimes", check=False)
    assert bad.returncode == 2 and "--ksm is on or off" in bad.stderr
    unknown = node.cli("host", "show", "no-such-host", check=False)
    assert unknown.returncode == 2 and "host no-such-host not found" in unknown.stderr


def test_the_host_counts_what_a_balloon_took_back(node: Node) -> None:
    with running_vm(node, "hm-balloon") as vm:  # 128 MiB
        name = _host(node)["name"]
        before = _host(node)["memory"]
        assert before["vms_booted_mib"] >= 128
        taken_before = before["vms_booted_mib"] - before["vms_balloon_mib"]
        node.cli("vm", "set", vm, "--memory-target", "96M")

        def taken_back() -> bool:
            memory = node.cli_json("host", "show", name)["memory"]  # type: ignore[index]
            taken = memory["vms_booted_mib"] - memory["vms_balloon_mib"]
            return bool(taken - taken_before >= 32)

        # The guest's virtio_balloon driver hands the pages over within seconds.
        wait_for("the host to count 32 MiB back from the balloon", taken_back, timeout=60)
