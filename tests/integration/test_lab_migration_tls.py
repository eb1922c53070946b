"""How a live migration travels, for real (a 2-host `corral lab`, shared dir pool, a tiny
guest): the lab hosts' libvirtds listen with TLS only (no plain libvirt TCP port); by
default QEMU's stream is TLS (the frames on the target's interface start with a TLS
handshake, QEMU's stream magic never crosses in the clear) and the operation says so;
`corral cluster set migration.tls off` sends it plain (the magic shows, the operation says
it was not encrypted); `migration.network` names the network the stream goes to (a target
without an address there is refused before anything moves); `migration.converge_s` cancels
a migration that does not converge in time, with the reason, the guest still where it was.

One lab for the module (its own root, names and HOME; brought down at the end even when a
test fails), driven through the CLI as a user would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import LabEngine, host, lab_engine
from labutil import LabCli, lab_session
from streamsniff import TLS_HANDSHAKE, sniffing

pytestmark = pytest.mark.integration

VM = "sealed"
QEVM = b"QEVM".hex()


@pytest.fixture(scope="module")
def lab(tiny_cache: Path) -> Iterator[LabCli]:
    with lab_session(2, "shared", 600, "lt", "--deb-cache", str(tiny_cache)) as cli:
        yield cli


@pytest.fixture(scope="module")
def engine(lab: LabCli) -> Iterator[LabEngine]:
    yield from lab_engine(lab)


@pytest.fixture(scope="module")
def guest(lab: LabCli, engine: LabEngine) -> Iterator[str]:
    lab.run("vm", "create", VM, "--image", "tiny", "--memory", "128M", "--pool", "shared",
            "--host", host(lab, 1), "--start", timeout=300)
    try:
        engine.wait_booted(VM)
        yield VM
    finally:
        lab.run("vm", "delete", VM, "--force", check=False, timeout=300)


def virsh_list(lab: LabCli, n: int) -> list[str]:
    uri = lab.lab_host(host(lab, n)).libvirt_uri()
    return subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True,
                          text=True, timeout=60, check=True).stdout.split()


def setting(lab: LabCli, key: str, value: str | None) -> None:
    if value is None:
        lab.run("cluster", "unset", key)
    else:
        lab.run("cluster", "set", key, value)


def test_libvirtd_listens_with_tls_only_on_the_lab_hosts_address(lab: LabCli) -> None:
    for n in (1, 2):
        lab_host = lab.lab_host(host(lab, n))
        listening = [line.split()[3] for line in
                     lab_host.run(["ss", "-Hltn"]).stdout.splitlines() if line.strip()]
        assert f"{lab_host.address}:16514" in listening, listening
        assert not [a for a in listening if a.endswith(":16509")], listening


def test_a_migration_is_encrypted_by_default(lab: LabCli, engine: LabEngine, guest: str,
                                             tmp_path: Path) -> None:
    h2 = host(lab, 2)
    with sniffing(lab.lab_host(h2), tmp_path / "sniff.json") as seen:
        op = lab.json("vm", "migrate", guest, "--to", h2)
    assert op["status"] == "success", op
    print(f"\nmigration: {op['message']}; stream: {seen[0]}")
    assert op["message"].endswith(", encrypted (TLS)"), op["message"]
    assert engine.vm(guest)["host"] == h2
    assert seen[0].flows, "no migration stream crossed the target's interface"
    assert all(first.startswith(TLS_HANDSHAKE) for first in seen[0].firsts()), seen[0]
    assert not seen[0].qevm  # nothing of QEMU's stream readable


def test_with_tls_off_the_stream_is_plain_and_the_operation_says_so(
        lab: LabCli, engine: LabEngine, guest: str, tmp_path: Path) -> None:
    h1 = host(lab, 1)
    setting(lab, "migration.tls", "off")
    try:
        with sniffing(lab.lab_host(h1), tmp_path / "sniff.json") as seen:
            op = lab.json("vm", "migrate", guest, "--to", h1)
    finally:
        setting(lab, "migration.tls", None)
    assert op["status"] == "success", op
    print(f"\nmigration: {op['message']}; stream: {seen[0]}")
    assert op["message"].endswith(", not encrypted (migration.tls is off)"), op["message"]
    assert engine.vm(guest)["host"] == h1
    assert any(first.startswith(QEVM) for first in seen[0].firsts()), seen[0]
    assert seen[0].qevm


def test_the_stream_goes_to_the_migration_network_and_a_host_outside_is_refused(
        lab: LabCli, engine: LabEngine, guest: str) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    assert engine.vm(guest)["host"] == h1
    setting(lab, "migration.network", "10.99.0.0/24")
    try:
        refused = lab.run("vm", "migrate", guest, "--to", h2, check=False)
        assert refused.returncode == 2, refused
        assert f"host {h2} has no address in the migration network 10.99.0.0/24" in \
            refused.stderr, refused.stderr
        assert engine.vm(guest)["host"] == h1 and guest not in virsh_list(lab, 2)
        # The lab's underlay: every lab host has its address there.
        setting(lab, "migration.network", "10.209.0.0/16")
        op = lab.json("vm", "migrate", guest, "--to", h2)
        assert op["status"] == "success", op
    finally:
        setting(lab, "migration.network", None)
    assert engine.vm(guest)["host"] == h2


def test_a_migration_that_does_not_converge_in_time_is_cancelled_with_the_reason(
        lab: LabCli, engine: LabEngine, guest: str) -> None:
    h1, h2 = host(lab, 1), host(lab, 2)
    assert engine.vm(guest)["host"] == h2
    setting(lab, "migration.converge_s", "10")
    try:
        # 1 MiB/s: 128 MiB of memory cannot be sent in 10 s.
        op = lab.json("vm", "migrate", guest, "--to", h1, "--bandwidth", "1", "--no-wait")
        ended = engine.sdk().wait_quiet(op["id"], timeout=180)
    finally:
        setting(lab, "migration.converge_s", None)
    assert ended.status.value == "failure", ended
    print(f"\nerror: {ended.error}")
    assert ended.error and "did not converge in 10 s: " in ended.error["message"]
    assert "the VM keeps running here" in ended.error["message"]
    shown = engine.vm(guest)
    assert shown["host"] == h2 and shown["state"] == "running"
    assert guest not in virsh_list(lab, 1)  # nothing left on the target
