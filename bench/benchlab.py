"""The 3-host lab of the cluster benchmarks (bench/detection.py, cluster_api.py, cluster_rss.py):
`corral lab up` (corral.lab.Lab, the code of the CLI) under a root of the benchmark's own,
always brought down again, and what they all read from it.

The lab is the one users get: an engine (`corral up --no-local-agent`) in its own network
namespace and lab hosts whose agents joined with a token over mutual TLS. The CLI is not
switched to it (no remote is added); the benchmarks talk to it with the SDK, like the CLI.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from benchnode import seed_debs
from corral.client import Client
from corral.errors import NotFound
from corral.lab.cluster import Lab
from corral.lab.host import LabHost
from timing import BenchError, say

HOSTS = 3
DEBS_CACHE = Path("/tmp/corral-bench/debs")  # bench/run.py's: the tiny image's .debs
# Lab indexes (10.209.N.0/30) from here: not the tests' (50 and up) nor bench/run.py's (41).
INDEX_BASE = "30"
IMAGE = "tiny"


def sigterm_exits() -> None:
    """`make bench` stops a benchmark with SIGTERM: unwind through the finally blocks (the
    lab comes down)."""
    def _exit(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _exit)


def rss_mib(pid: int) -> float:
    """VmRSS of one process (its children not counted), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise BenchError(f"no VmRSS for pid {pid}")


def mb(mib: float) -> str:
    """MiB as the reports write them: MB (10^6 bytes) first."""
    return f"{mib * 1048576 / 1e6:.1f} MB ({mib:.1f} MiB)"


@contextmanager
def lab_up(root: Path, prefix: str, hosts: int = HOSTS, heartbeat_timeout: float | None = None,
           cpu_overcommit: float | None = None, storage: str = "none", fence: bool = True,
           quorum: bool | None = None) -> Iterator[Lab]:
    """A running lab of ``hosts`` hosts, every one `up`, with network `default` and image
    `tiny` (`lab up` makes them; the image's .debs from bench/run.py's cache, filled from
    what earlier builds left on this machine, see benchnode.seed_debs); `lab down` at the
    end, whatever happened (and before, for what a killed run left). ``fence``,
    ``quorum``: `lab up --fence/--no-fence`, `--quorum/--no-quorum` (None: its default)."""
    os.environ.setdefault("CORRAL_LAB_INDEX_BASE", INDEX_BASE)
    root = root.absolute()
    lab = Lab(root)
    left = lab.down(prefix)  # an earlier run killed before its own `lab down`
    if left:
        raise BenchError(f"a lab {prefix!r} is still there: {', '.join(left)}")
    root.parent.mkdir(parents=True, exist_ok=True)
    seed_debs(DEBS_CACHE, DEBS_CACHE)
    say(f"lab up: {hosts} hosts, prefix {prefix}, root {root}")
    try:
        lab.up(hosts, storage, prefix=prefix, remote=False, heartbeat_timeout=heartbeat_timeout,
               cpu_overcommit=cpu_overcommit, deb_cache=DEBS_CACHE.parent, fence=fence,
               quorum=quorum)
        wait_facts(lab)
        say("lab up: every host is up, its CPUs and memory known")
        yield lab
    except BaseException:
        keep_logs(root)
        raise
    finally:
        say("lab down")
        left = lab.down(prefix)
        shutil.rmtree(root, ignore_errors=True)
        if left:
            say(f"lab down could not remove: {', '.join(left)}")


def keep_logs(root: Path) -> None:
    """Copy the engine's and the agents' logs next to ROOT (ROOT-logs/) before `lab down`
    removes them: what a failed run needs to be understood."""
    dest = root.with_name(root.name + "-logs")
    shutil.rmtree(dest, ignore_errors=True)
    logs = [*root.glob("engine/*.log"), *root.glob("hosts/*/agent.log")]
    for log in logs:
        target = dest / log.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)
    if logs:
        say(f"logs kept in {dest}")


def wait_facts(lab: Lab, timeout: float = 60.0) -> None:
    """Until the engine knows every host's CPUs and memory: a host is `up` as soon as its
    agent reports, its facts may come a moment later (the scheduler gives a host without
    them nothing)."""
    deadline = time.monotonic() + timeout
    with lab.client() as client:
        while True:
            missing = [h.name for h in client.list_hosts() if not (h.cpus and h.memory_mib)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"no CPUs or memory known after {timeout:g} s for "
                                 f"{', '.join(missing)}")
            time.sleep(0.2)


def engine_pid(lab: Lab) -> int:
    st = lab.state()
    if st.engine is None or st.engine.pid is None:
        raise BenchError("the lab's engine has no pid")
    return st.engine.pid


def agent_pids(lab: Lab) -> dict[str, int]:
    """Each lab host's agent process itself (`lab status`: its lease guard's child; the
    state file holds the guard's pid)."""
    out = {}
    for row in lab.status().hosts:
        if row.agent_pid is None:
            raise BenchError(f"lab host {row.name} has no agent")
        out[row.name] = row.agent_pid
    return out


def lab_host(lab: Lab, name: str) -> LabHost:
    rec = lab.state().hosts[name]
    return LabHost(rec.name, rec.index, Path(rec.root_dir))


def host_names(lab: Lab) -> list[str]:
    return sorted(lab.state().hosts, key=lambda n: lab.state().hosts[n].number)


def check_guests(client: Client) -> str:
    """That `lab up` made image `tiny` and network `default`; what they are, in words."""
    images = {i.name: i for i in client.list_images()}
    if IMAGE not in images or str(images[IMAGE].status) != "ready":
        raise BenchError(f"`lab up` made no image {IMAGE} (images: {', '.join(images) or '-'})")
    try:
        net = client.get_network("default")
    except NotFound as exc:
        raise BenchError("`lab up` made no network default") from exc
    overlay = f", {net.overlay}" if net.overlay else ""
    return (f"image {IMAGE} (built by `lab up` on one host, copied to the others by the "
            f"first create there), network default ({net.mode}{overlay}, {net.subnet})")


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts() -> dict[str, str]:
    return {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "Python": platform.python_version(),
            "load average at the start": load_average()}
