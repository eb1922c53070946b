"""CPU lists as the kernel and libvirt write them: ``0-3,8-11`` (sysfs ``cpulist`` files,
``<vcpupin cpuset>``, `corral vm create --cpu-pin`). Pure: the agent, the engine, the API
models and the designer all use it."""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_CPU = 8191  # the kernel's NR_CPUS ceiling on x86-64; a bigger id is a typo
_PART_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


def parse_cpu_list(text: str) -> list[int]:
    """``"0-3,8,10-11"`` -> ``[0, 1, 2, 3, 8, 10, 11]`` (sorted, each once); ``""`` -> ``[]``.

    ValueError with a message that names the bad part (callers map it to their error)."""
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return []
    for part in text.split(","):
        m = _PART_RE.match(part.strip())
        if m is None:
            raise ValueError(f"{part.strip()!r} is not a CPU number or range like 0-3")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
        if high < low:
            raise ValueError(f"range {part.strip()} goes backwards")
        if high > MAX_CPU:
            raise ValueError(f"CPU {high} is above {MAX_CPU}")
        cpus.update(range(low, high + 1))
    return sorted(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 8]`` -> ``"0-3,8"``: the shortest form, ranges of three or more."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{ordered[i]}-{ordered[j]}")
        else:
            parts.extend(str(c) for c in ordered[i:j + 1])
        i = j + 1
    return ",".join(parts)
