"""Helpers of the storage tests: a booted tiny VM, and reading the guest through its console.

The tiny guest keeps a root shell on its serial console; commands are typed on it through
the engine's console WebSocket (`Node.console_run`, corral.lab.guest_console).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nodeutil import Node, wait_for

from corral.images.tiny import BOOT_MARKER

SECTOR = 512


def traversable(node: Node) -> None:
    """QEMU (user libvirt-qemu) must reach disks below the node's data dir; pytest sets its
    base temporary dir back to 0700 whenever another pytest session starts on this machine."""
    for d in (node.data_dir.parent, node.data_dir.parent.parent,
              node.data_dir.parent.parent.parent):
        d.chmod(d.stat().st_mode | 0o011)


@contextmanager
def running_vm(node: Node, name: str) -> Iterator[str]:
    """A tiny VM (128 MiB), booted to its shell; deleted (with its disk) at the end."""
    traversable(node)
    node.cli("vm", "create", name, "--image", "tiny", "--memory", "128M", "--start")
    try:
        wait_for(f"{name} to boot", lambda: BOOT_MARKER in node.console_log(name), timeout=120)
        yield name
    finally:
        node.cli("vm", "delete", name, "--force", check=False)


def guest_sh(node: Node, vm: str, command: str, timeout: float = 30) -> str:
    """Run a shell command in the guest; its output on one line (as the shell splits it)."""
    return node.console_run(vm, command, timeout).output


def disk_bytes(node: Node, vm: str, dev: str) -> int | None:
    """The size the guest kernel sees for /dev/DEV, or None when it has no such disk."""
    out = guest_sh(node, vm, f"cat /sys/block/{dev}/size 2>/dev/null || echo none")
    return None if out == "none" else int(out) * SECTOR


def wait_guest_size(node: Node, vm: str, dev: str, size: int | None, timeout: float = 60) -> None:
    seen: list[int | None] = []

    def check() -> bool:
        seen.append(disk_bytes(node, vm, dev))
        return seen[-1] == size

    try:
        wait_for(f"the guest of {vm} to see /dev/{dev} as {size}", check, timeout=timeout,
                 every=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen[-1:] or 'nothing'}") from None


def domblklist(node: Node, vm: str, inactive: bool = False) -> dict[str, str]:
    """target -> source of the domain's disks as libvirt has them (running, or defined)."""
    args = ["domblklist", vm] + (["--inactive"] if inactive else [])
    rows = {}
    for line in node.virsh(*args).splitlines()[2:]:
        parts = line.split()
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    return rows
