"""Storage fencing on a real Ceph cluster (the `ceph` fixture, inside the node's lab host):
a writer that has an RBD volume open (qemu-io on librbd, as QEMU opens a VM's disk: it
watches the image and takes its exclusive lock) is blocklisted by the agent's fence route,
called as the engine calls it (corral.engine.agent_calls.pools over mutual TLS); the
writer's next write fails with errno 108 (ESHUTDOWN), while a new client (the VM started on
another host) writes at once. The blocklist entry is removed at the end."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from ceph_cluster import CephCluster
from nodeutil import Node

pytestmark = pytest.mark.integration

POOL, VOLUME = "st-fence", "fenced"
AGENT_URL = "https://127.0.0.1:8444"  # the node's agent, on its lab host's loopback
ESHUTDOWN = "Cannot send after transport endpoint shutdown"  # strerror(108)

# The engine's typed call, run inside the lab host (where the agent listens).
_CALL = """\
import json, sys
from pathlib import Path
from corral.engine.agent_client import AgentClient
from corral.engine.tls import agent_ssl_context
from corral.errors import CorralError
url, tls, kind, pool, name = sys.argv[1:6]
client = AgentClient(url, tls=agent_ssl_context(Path(tls)), reconnect_s=0)
try:
    fence = client.fence_root if kind == "root" else client.fence_volume
    print(json.dumps(fence(pool, name).model_dump()))
except CorralError as exc:
    print(json.dumps({"error": exc.to_dict()}))
"""


def _fence(node: Node, kind: str = "volume", pool: str = POOL, name: str = VOLUME) -> Any:
    """The agent's fence route of a volume or (``kind`` root) a VM's root disk."""
    proc = node.host.run([sys.executable, "-c", _CALL, AGENT_URL, str(node.data_dir / "tls"),
                          kind, pool, name], timeout=120)
    return json.loads(proc.stdout)


class Writer:
    """qemu-io with the image open, fed commands one at a time; its output kept."""

    def __init__(self, node: Node, conf: str, image: str = VOLUME) -> None:
        self.out = ""
        self._lock = threading.Lock()
        self.proc = node.host.popen(
            ["qemu-io", "-f", "raw", f"rbd:rbd/{image}:conf={conf}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read(1) if self.proc.stdout else "", ""):
            with self._lock:
                self.out += chunk

    def do(self, command: str, expect: tuple[str, ...], timeout: float = 60) -> str:
        """Send ``command``; the output it caused once one of ``expect`` shows."""
        with self._lock:
            start = len(self.out)
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                said = self.out[start:]
            if any(e in said for e in expect):
                return said
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"qemu-io did not say any of {expect} to {command!r}: "
                             f"{self.out[start:]!r}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)


@contextmanager
def _volume(node: Node, ceph: CephCluster) -> Iterator[None]:
    node.cli("storage", "pool", "create", POOL, "--type", "rbd", "--ceph-conf",
             str(ceph.conf), "--ceph-pool", "rbd")
    try:
        node.cli("volume", "create", f"{POOL}/{VOLUME}", "--size", "16M")
        yield
    finally:
        node.cli("volume", "delete", f"{POOL}/{VOLUME}", check=False)
        node.cli("storage", "pool", "delete", POOL, check=False)


def _images(ceph: CephCluster) -> list[str]:
    return sorted(json.loads(ceph.rbd("ls", "-p", "rbd", "--format", "json")))


def _watchers(ceph: CephCluster, image: str = VOLUME) -> list[str]:
    status = json.loads(ceph.rbd("status", "--format", "json", f"rbd/{image}"))
    return [str(w["address"]) for w in status["watchers"]]


def _blocklist(ceph: CephCluster) -> dict[str, str]:
    """Address → until of the blocklist (Ceph 16.2.15 prints a second list after it: the
    ranges, empty)."""
    out = ceph.cli("osd", "blocklist", "ls", "--format", "json").strip()
    entries, _ = json.JSONDecoder().raw_decode(out)
    return {str(e["addr"]): str(e["until"]) for e in entries}


def write_until_refused(writer: Writer, tries: int = 20) -> str:
    """Write until a write fails (the OSDs learn the blocklist with the next OSD map: about
    0.5 s here), at most ``tries`` writes 0.5 s apart; the last write's output."""
    said = ""
    for _ in range(tries):
        said = writer.do("write -P 0xcd 0 4k", (ESHUTDOWN, "wrote 4096/4096"))
        if ESHUTDOWN in said:
            break
        time.sleep(0.5)
    return said


def test_a_fenced_writer_can_no_longer_write_and_a_new_one_can(node: Node,
                                                              ceph: CephCluster) -> None:
    with _volume(node, ceph):
        old = Writer(node, str(ceph.conf))
        fenced: list[str] = []
        try:
            old.do("write -P 0xab 0 4k", ("wrote 4096/4096",))
            watching = _watchers(ceph)
            assert len(watching) == 1  # qemu-io's librbd watches the image

            answer = _fence(node)
            fenced = answer.get("addresses", [])
            assert answer["image"] == f"rbd/{VOLUME}", answer
            assert fenced == watching
            assert fenced[0] in _blocklist(ceph)
            assert answer["expire_s"] >= 24 * 3600  # outlives a host left cut off for long

            assert ESHUTDOWN in write_until_refused(old)  # errno 108: fenced off
            assert _watchers(ceph) == []

            # The VM's new QEMU (a new client instance) writes at once: only the old one is out.
            new = ceph.run(["qemu-io", "-f", "raw", "-c", "write -P 0xee 0 4k", "-c",
                            "read -P 0xee 0 4k", f"rbd:rbd/{VOLUME}:conf={ceph.conf}"],
                           timeout=60)
            assert "wrote 4096/4096" in new and "read 4096/4096" in new

            again = _fence(node)  # nothing has it open now: nothing to fence
            assert again["addresses"] == []
        finally:
            old.close()
            for address in fenced:
                ceph.cli("osd", "blocklist", "rm", address)
        assert not set(fenced) & set(_blocklist(ceph))


def test_a_vm_root_disk_on_rbd_is_fenced_by_the_vm_name(node: Node, ceph: CephCluster) -> None:
    """The root disk as `vm create --pool` makes it (``rbd/vm.NAME``), held by a writer as
    the VM's QEMU would hold it."""
    vm = "st-fenced-vm"
    before = _images(ceph)
    with _volume(node, ceph):
        node.cli("vm", "create", vm, "--image", "tiny", "--memory", "64M", "--pool", POOL,
                 timeout=300)
        writer: Writer | None = None
        fenced: list[str] = []
        try:
            writer = Writer(node, str(ceph.conf), f"vm.{vm}")
            writer.do("write -P 0xab 0 4k", ("wrote 4096/4096",))
            answer = _fence(node, "root", POOL, vm)
            fenced = answer.get("addresses", [])
            assert answer["image"] == f"rbd/vm.{vm}", answer
            assert len(fenced) == 1 and fenced[0] in _blocklist(ceph)
            assert ESHUTDOWN in write_until_refused(writer)
        finally:
            if writer is not None:
                writer.close()
            for address in fenced:
                ceph.cli("osd", "blocklist", "rm", address)
            node.cli("vm", "delete", vm, "--force", check=False)
    assert _images(ceph) == before  # its disk and the image's base in Ceph are gone


def test_a_pool_that_is_not_rbd_is_refused(node: Node) -> None:
    error = _fence(node, "volume", "default", "whatever")["error"]
    assert error["code"] == "conflict" and "only the clients of RBD images" in error["message"]
