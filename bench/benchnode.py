"""The benchmark's own corral node: `corral up` inside a lab host (name "bench", index 41).

The lab host (corral.lab.host) is a network + mount namespace with its own libvirtd, so the
benchmark never touches this machine's libvirt or networks; the SDK and virsh reach it from
the root namespace (https://10.209.41.2:8443 and the lab's libvirt socket). Its only traffic
goes to that address and to loopback: the tiny image is built from .deb files already on
this machine (see :func:`seed_debs`), never downloaded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from corral.client import Client
from corral.images.tiny_ssh import SSH_DEB_GLOBS
from corral.lab import LabHost
from timing import BenchError, say

NAME, INDEX, PORT = "bench", 41, 8443
CORRAL = [sys.executable, "-m", "corral.cli.main"]

# .deb files the tiny image needs (the globs of corral.images.tiny), and where they may lie
# already on this machine: our own copy first, then corral's and the tests' caches, then apt's.
KERNEL_DEB_GLOB = "linux-image-[0-9]*-cloud-amd64_*.deb"
BUSYBOX_DEB_GLOB = "busybox-static_*.deb"
DEB_DIRS_GLOBS = (
    "/var/lib/corral/agent/storage/build/cache/debs",
    "/tmp/pytest-of-*/corral-tiny-cache/debs",
    "/tmp/*/agent/storage/build/cache/debs",
    "/var/cache/apt/archives",
)


@dataclass
class BenchNode:
    root: Path
    host: LabHost
    notes: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "node"

    @property
    def url(self) -> str:
        return f"https://{self.host.address}:{PORT}"

    @property
    def uri(self) -> str:
        return self.host.libvirt_uri()

    def config(self) -> dict[str, str]:
        cfg: dict[str, str] = json.loads((self.data_dir / "client.json").read_text())
        return cfg

    def client(self, timeout: float = 60.0) -> Client:
        cfg = self.config()
        return Client(self.url, cfg["token"], cfg["ca"], timeout=timeout)

    def pid(self, which: str) -> int:
        return int((self.data_dir / f"{which}.pid").read_text().strip())

    def libvirtd_pid(self) -> int:
        return int((self.host.root_dir / "run" / "libvirtd.pid").read_text().strip())

    @property
    def storage(self) -> Path:
        return self.data_dir / "agent" / "storage"

    def up(self) -> None:
        # The image-import benchmark serves its file on the lab host's own loopback: a
        # loopback URL must be allowed explicitly (corral.safeurls refuses it by default).
        self.host.run([*CORRAL, "up", "--detach", "--data-dir", str(self.data_dir),
                       "--port", str(PORT), "--import-allow-cidr", "127.0.0.0/8"], timeout=180)

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self.host.run([*CORRAL, "down", "--data-dir", str(self.data_dir)], timeout=60,
                          check=False)


def _lab_left_behind(root: Path) -> bool:
    return Path(f"/run/netns/corral-{NAME}").exists() or (root / "run" / "holder.pid").exists()


def start_lab_host(root: Path, notes: list[str], retry_for: float, retry_wait: float) -> LabHost:
    """Start the lab host; on failure wait ``retry_wait`` s and try again for ``retry_for`` s."""
    deadline = time.monotonic() + retry_for
    attempt = 0
    while True:
        attempt += 1
        host = LabHost(NAME, INDEX, root)
        if _lab_left_behind(root):
            say(f"lab host {NAME} left by an earlier run: stopping it first")
            host.stop()
        t0 = time.monotonic()
        try:
            host.start()
        except Exception as exc:
            msg = (f"lab host start, attempt {attempt}, failed after "
                   f"{time.monotonic() - t0:.1f} s: {type(exc).__name__}: {exc}")
            notes.append(msg)
            say(msg)
            if time.monotonic() + retry_wait > deadline:
                raise BenchError(f"the lab host did not start in {attempt} attempts") from exc
            say(f"trying again in {retry_wait:.0f} s")
            time.sleep(retry_wait)
            continue
        say(f"lab host {NAME} up in {time.monotonic() - t0:.1f} s (attempt {attempt}), "
            f"address {host.address}")
        return host


def _pick_debs(directory: Path) -> tuple[Path, ...] | None:
    """Kernel, busybox and the SSH server's .debs (corral.images.tiny_ssh), all in one dir."""
    picked = []
    for pattern in (KERNEL_DEB_GLOB, BUSYBOX_DEB_GLOB, *SSH_DEB_GLOBS):
        found = sorted(directory.glob(pattern))
        if not found:
            return None
        picked.append(found[-1])
    return tuple(picked)


def seed_debs(own_cache: Path, target: Path) -> str:
    """Put the tiny image's kernel and busybox .debs into the node's build cache.

    The lab host cannot reach an apt mirror (and the benchmark must not send traffic
    anywhere else), so the build has to find them cached. Returns where they came from.
    """
    candidates = [own_cache]
    for pattern in DEB_DIRS_GLOBS:
        candidates += sorted(Path("/").glob(pattern.lstrip("/")))
    for directory in candidates:
        picked = _pick_debs(directory) if directory.is_dir() else None
        if picked is None:
            continue
        for dst_dir in (own_cache, target):
            dst_dir.mkdir(parents=True, exist_ok=True)
            for deb in picked:
                if deb.parent != dst_dir:
                    shutil.copyfile(deb, dst_dir / deb.name)
        return str(directory)
    raise BenchError(
        "no cached linux-image-*-cloud-amd64, busybox-static and dropbear-bin (with its "
        "libraries) .debs found together (looked in "
        f"{own_cache} and {', '.join(DEB_DIRS_GLOBS)}); run `corral image build-tiny` once on "
        f"this machine, or put those .deb files into {own_cache}: the benchmark's lab host "
        "cannot reach an apt mirror"
    )


def fresh_node(host: LabHost, root: Path) -> BenchNode:
    """Start ``host`` (stopping one an earlier run left behind) and give it an empty corral
    data dir with the tiny image's .debs seeded: the node of a benchmark, ready for up()."""
    if Path(f"/run/netns/corral-{host.name}").exists():
        host.stop()
    host.start()
    node = BenchNode(root, host)
    shutil.rmtree(node.data_dir, ignore_errors=True)
    seed_debs(root / "debs", node.storage / "build" / "cache" / "debs")
    return node
