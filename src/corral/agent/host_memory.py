"""The host's memory: KSM (kernel same-page merging) and what balloons hand back.

KSM is the kernel's own (``/sys/kernel/mm/ksm``): ``run`` 1 scans and merges identical pages
of VMs (QEMU marks guest memory mergeable), 2 splits every merged page again and stops
(what "off" means here: memory comes back as it was), 0 stops without splitting. A host
whose kernel has no KSM says so (``ksm`` None) and refuses to turn it on with a clear 409.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.agent.hypervisor import Hypervisor
from corral.agent_api.host import HostMemory
from corral.errors import HostError, WrongState

KSM_DIR = Path("/sys/kernel/mm/ksm")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _ksm_file(name: str) -> Path:
    return KSM_DIR / name


def ksm_state() -> tuple[bool | None, int]:
    """(on, MiB saved) of the host's KSM; (None, 0) when the kernel has none."""
    try:
        run = _ksm_file("run").read_text().strip()
        sharing = int(_ksm_file("pages_sharing").read_text())
    except (OSError, ValueError):
        return None, 0
    return run == "1", sharing * _PAGE >> 20


def set_ksm(on: bool) -> None:
    if ksm_state()[0] is None:
        raise WrongState(f"this host's kernel offers no KSM ({KSM_DIR} is missing)")
    try:
        _ksm_file("run").write_text("1" if on else "2")
    except OSError as exc:
        raise HostError(f"cannot turn KSM {'on' if on else 'off'}: {exc.strerror} "
                        f"({_ksm_file('run')})") from exc


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    out: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def available_mib() -> int:
    """MemAvailable: what new processes (VMs) can have without swapping."""
    return _meminfo().get("MemAvailable", 0) >> 10


def used_percent() -> float | None:
    """Memory in use (MemTotal less MemAvailable) in percent; None when unknown."""
    info = _meminfo()
    total = info.get("MemTotal", 0)
    if total <= 0:
        return None
    return round(100.0 * max(0, total - info.get("MemAvailable", 0)) / total, 2)


def report(hv: Hypervisor) -> HostMemory:
    info = _meminfo()
    on, saved = ksm_state()
    booted, balloon = hv.memory_of_running()
    return HostMemory(total_mib=info.get("MemTotal", 0) >> 10,
                      available_mib=info.get("MemAvailable", 0) >> 10, ksm=on,
                      ksm_saved_mib=saved, vms_booted_mib=booted, vms_balloon_mib=balloon)
