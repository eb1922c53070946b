"""`python bench/migration.py`: live migration through corral against raw `virsh migrate`,
the same guest, the same two lab hosts, interleaved in one run. Writes its own section
(``<!-- migration -->``) of docs/benchmarks.md. Needs root (the lab).

Method: `corral lab up --hosts 2 --storage shared` (bench/benchlab.py). Two tiny guests of
256 MiB (TCG), booted and idle, counted as the same guest: ``bmig``, a corral VM (root disk
in the shared pool), and ``bmigraw``, a domain corral does not know, defined through virsh
on host 1 from ``bmig``'s own XML (another name, MAC and tap; its disk a fresh overlay of the
same image base; its kernel, initramfs, seed and console log in the shared directory, so
both hosts read the same paths). Each round moves both to the other host, which one first
alternating: ``corral vm migrate bmig --to H`` (the CLI, a process, as a user runs it; wall
time) and ``virsh migrate --live --p2p --persistent --undefinesource --auto-converge
--unsafe`` with the flags corral's agent sets (corral.agent.hypervisor.migration.flags_of:
``--tls --tls-destination`` and ``--migrateuri`` when the cluster's ``migration.tls`` is on)
to the same libvirt URI. Downtime: libvirt's own ("Total downtime" of ``virsh domjobinfo
--completed`` on the destination; corral's operation reports the same figure). Then the
same with storage copy: two guests with their root disks on each host's own storage
(``corral vm migrate --copy-storage`` / ``virsh migrate --copy-storage-inc --migrate-disks
vda`` with the target's overlay made first, as corral does). Last, `corral host
maintenance` of host 1 with 5 running guests (shared pool) is timed until every one runs on
host 2 (no raw tool to compare with). Targets (issue 14): median total time corral / virsh
at most 1.2; median downtime under 300 ms for both. A CLI call that moves nothing (`corral
vm show`) is timed too: the fixed cost in every corral figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

import sections
from benchlab import host_names, lab_host
from benchmain import InLab, LabSpec, in_lab, run_bench
from corral.client import Client
from corral.errors import CorralError
from corral.images.tiny import BOOT_MARKER
from corral.lab.cluster import Lab
from timing import BenchError, median, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
SECTION = "migration"
PREFIX = "bm"
MEMORY = "256M"
RAW_MAC = "52:54:00:b6:00:01"
RATIO_TARGET = 1.2
DOWNTIME_TARGET_MS = 300
CORRAL = [sys.executable, "-m", "corral.cli.main"]
DOWNTIME = re.compile(r"Total downtime:\s+(\d+)\s+ms")
CORRAL_DOWNTIME = re.compile(r"downtime (\d+) ms")
CORRAL_TOTAL = re.compile(r"total ([\d.]+) s")


@dataclass
class Move:
    tool: str  # corral | virsh
    to: str
    total_s: float
    downtime_ms: int | None
    op_total_s: float | None = None  # corral: the operation's own figure (no CLI start-up)


@dataclass
class Case:
    """One kind of migration (shared storage, storage copy): its guests and its moves."""

    title: str
    corral_vm: str
    raw_vm: str
    moves: list[Move] = field(default_factory=list)

    def of(self, tool: str) -> list[Move]:
        return [m for m in self.moves if m.tool == tool]


@dataclass
class Evacuation:
    vms: int
    total_s: float
    parallel: str  # the cluster's migration.parallel, as the engine said


@dataclass
class Result:
    cases: list[Case] = field(default_factory=list)
    evacuation: Evacuation | None = None
    cli_call_s: list[float] = field(default_factory=list)  # `corral vm show`: no work
    tls: bool = False  # the cluster's migration.tls, for the section
    errors: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


def _run(argv: list[str], what: str, timeout: float = 300,
         env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    if proc.returncode != 0:
        raise BenchError(f"{what} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


class Bench:
    """The lab, its two hosts and how to reach them: the engine (CLI and SDK) and each
    host's libvirtd (virsh)."""

    def __init__(self, lab: Lab, client: Client, home: Path) -> None:
        self.lab, self.client = lab, client
        self.h1, self.h2 = host_names(lab)[:2]
        st = lab.state()
        self.engine_dir = Path(st.engine.data_dir) if st.engine else Path()
        self.shared = lab.root / "shared"
        self.raw_dir = self.shared / "raw"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        self.env.update(HOME=str(home), CORRAL_DATA_DIR=str(self.engine_dir))
        self.tls = _tls_on(client)

    def corral(self, *args: str, timeout: float = 300) -> str:
        return _run([*CORRAL, *args], f"corral {' '.join(args)}", timeout, self.env)

    def uri(self, host: str) -> str:
        return lab_host(self.lab, host).libvirt_uri()

    def virsh(self, host: str, *args: str, timeout: float = 300) -> str:
        return _run(["virsh", "-c", self.uri(host), *args], f"virsh {' '.join(args)}",
                    timeout)

    def address(self, host: str) -> str:
        return self.lab.state().hosts[host].address

    def other(self, host: str) -> str:
        return self.h2 if host == self.h1 else self.h1

    def host_root(self, host: str) -> Path:
        return Path(self.lab.state().hosts[host].root_dir)

    def dest_uri(self, source: str, target: str) -> str:
        """The libvirt URI the source's libvirtd opens to the target's, as corral's."""
        if self.tls:
            pki = self.host_root(source) / "agent" / "migration-pki"
            return f"qemu+tls://{self.address(target)}/system?pkipath={pki}"
        return f"qemu+tcp://{self.address(target)}/system"


def _tls_on(client: Client) -> bool:
    """The cluster's ``migration.tls`` (off where the engine has no such setting)."""
    try:
        return bool(client.cluster_setting("migration.tls").value)
    except (CorralError, AttributeError):
        return False


# -- the guests ----------------------------------------------------------------------------

def wait_booted(read_log: object, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if BOOT_MARKER in read_log():  # type: ignore[operator]
                return
        except (CorralError, OSError):
            pass
        time.sleep(1)
    raise BenchError(f"{what} did not boot in {timeout:g} s")


def create_corral_vm(b: Bench, name: str, shared: bool) -> None:
    pool = ["--pool", "shared"] if shared else []
    say(f"creating {name} ({MEMORY}, {'shared pool' if shared else 'host storage'}) on {b.h1}")
    b.corral("vm", "create", name, "--image", "tiny", "--memory", MEMORY, *pool, "--host",
             b.h1, "--start", timeout=600)
    wait_booted(lambda: b.client.console_log(name), name)


def raw_xml(b: Bench, source_vm: str, raw: str, disk_for: dict[str, Path]
            ) -> dict[str, str]:
    """``source_vm``'s domain XML made into ``raw``'s, one per host (they differ only by the
    disk path: ``disk_for``); its other host files copied to the shared directory."""
    b.raw_dir.mkdir(parents=True, exist_ok=True)
    b.raw_dir.chmod(0o755)
    doc = etree.fromstring(b.virsh(b.h1, "dumpxml", "--migratable", source_vm).encode())
    doc.find("name").text = raw  # type: ignore[union-attr]
    for tag in ("uuid", "metadata"):
        for el in doc.findall(tag):
            doc.remove(el)
    etree.SubElement(doc, "uuid").text = str(uuid.uuid4())  # one for both hosts' XML
    for nic in doc.findall("devices/interface"):
        nic.find("mac").set("address", RAW_MAC)  # type: ignore[union-attr]
        for el in nic.findall("target"):
            nic.remove(el)
    for tag in ("os/kernel", "os/initrd"):
        boot = doc.find(tag)
        if boot is not None and boot.text:
            boot.text = str(_shared_copy(b, Path(boot.text), raw))
    for disk in doc.findall("devices/disk"):
        src = disk.find("source")
        if src is None or src.get("file") is None:
            continue
        if disk.get("device") == "disk":
            src.set("file", "@DISK@")
            backing = disk.find("backingStore")
            if backing is not None:
                disk.remove(backing)
        else:  # the seed CD-ROM (read-only): the same file for both hosts
            src.set("file", str(_shared_copy(b, Path(src.get("file", "")), raw)))
    log = b.raw_dir / f"{raw}.console.log"
    for dev in (*doc.findall("devices/serial"), *doc.findall("devices/console")):
        src, logged = dev.find("source"), dev.find("log")
        if dev.get("type") == "file" and src is not None and src.get("path"):
            src.set("path", str(log))
        if logged is not None and logged.get("file"):
            logged.set("file", str(log))
    text = etree.tostring(doc, encoding="unicode")
    return {h: text.replace("@DISK@", str(p)) for h, p in disk_for.items()}


def _shared_copy(b: Bench, path: Path, raw: str) -> Path:
    dest = b.raw_dir / f"{raw}-{path.name}"
    if not dest.exists():
        shutil.copyfile(path, dest)
        dest.chmod(0o644)
    return dest


def _backing(disk: Path) -> Path:
    info = json.loads(_run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                           f"qemu-img info {disk}", 60))
    base = info.get("full-backing-filename") or info.get("backing-filename")
    if not base:
        raise BenchError(f"{disk} has no backing file (not a linked clone of the image)")
    return Path(base)


def overlay(base: Path, path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path),
          str(size)], f"qemu-img create {path}", 60)
    path.chmod(0o666)


def vm_disk(b: Bench, host: str, vm: str) -> Path:
    out = b.virsh(host, "domblklist", vm, "--details")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] == "disk":
            return Path(parts[3])
    raise BenchError(f"no disk of {vm} in `virsh domblklist` on {host}")


def _virtual_size(disk: Path) -> int:
    info = json.loads(_run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                           f"qemu-img info {disk}", 60))
    return int(info["virtual-size"])


def start_raw(b: Bench, case: Case, shared: bool) -> dict[str, str]:
    """Define and start the raw guest on host 1 like ``case.corral_vm``; its XML per host."""
    disk = vm_disk(b, b.h1, case.corral_vm)
    base = _backing(disk)
    if not base.is_relative_to(b.shared):
        base = _shared_copy(b, base, case.raw_vm)
    if shared:
        paths = {b.h1: b.raw_dir / f"{case.raw_vm}.qcow2"}
        paths[b.h2] = paths[b.h1]
    else:  # each host's own copy, made before a move to it (as corral does)
        paths = {h: b.host_root(h) / "bench-raw" / f"{case.raw_vm}.qcow2" for h in (b.h1, b.h2)}
    xmls = raw_xml(b, case.corral_vm, case.raw_vm, paths)
    overlay(base, paths[b.h1], _virtual_size(disk))
    say(f"defining and starting {case.raw_vm} on {b.h1} (virsh)")
    defined = b.raw_dir / f"{case.raw_vm}-{b.h1}.xml"
    defined.write_text(xmls[b.h1])
    b.virsh(b.h1, "define", str(defined))
    b.virsh(b.h1, "start", case.raw_vm)
    log = b.raw_dir / f"{case.raw_vm}.console.log"
    wait_booted(lambda: log.read_text(errors="replace") if log.exists() else "",
                case.raw_vm)
    return xmls


# -- the moves -------------------------------------------------------------------------------

def move_corral(b: Bench, case: Case, target: str, copy: bool) -> Move:
    args = ["vm", "migrate", case.corral_vm, "--to", target, "-o", "json"]
    if copy:
        args.append("--copy-storage")
    t0 = time.monotonic()
    op = json.loads(b.corral(*args, timeout=600))
    total = time.monotonic() - t0
    if op.get("status") != "success":
        raise BenchError(f"corral vm migrate {case.corral_vm}: {op.get('status')}: "
                         f"{op.get('message')}")
    found = CORRAL_DOWNTIME.search(op.get("message") or "")
    own = CORRAL_TOTAL.search(op.get("message") or "")
    return Move("corral", target, total, int(found.group(1)) if found else None,
                float(own.group(1)) if own else None)


def move_virsh(b: Bench, case: Case, target: str, copy: bool,
               xmls: dict[str, str]) -> Move:
    source = b.other(target)
    argv = ["virsh", "-c", b.uri(source), "migrate", "--live", "--p2p", "--persistent",
            "--undefinesource", "--auto-converge"]
    if copy:
        disk = vm_disk(b, source, case.raw_vm)
        overlay(_backing(disk), Path(_target_disk(xmls[target])), _virtual_size(disk))
        argv += ["--copy-storage-inc", "--migrate-disks", "vda"]
    else:
        argv.append("--unsafe")
    if b.tls:
        argv += ["--tls", "--tls-destination", target,
                 "--migrateuri", f"tcp://{b.address(target)}"]
    xml = b.raw_dir / f"{case.raw_vm}-{target}.xml"
    xml.write_text(xmls[target])
    argv += ["--xml", str(xml), "--persistent-xml", str(xml), case.raw_vm,
             b.dest_uri(source, target)]
    t0 = time.monotonic()
    _run(argv, f"virsh migrate {case.raw_vm} to {target}", 600)
    total = time.monotonic() - t0
    info = b.virsh(target, "domjobinfo", "--completed", "--keep-completed", case.raw_vm)
    found = DOWNTIME.search(info)
    if found is None:
        say(f"no downtime in `virsh domjobinfo --completed` on {target}: {info!r}")
    if copy:  # the source's copy is no longer used (corral's agent removes its own too)
        vm_disk_path = Path(_target_disk(xmls[source]))
        vm_disk_path.unlink(missing_ok=True)
    return Move("virsh", target, total, int(found.group(1)) if found else None)


def _target_disk(xml: str) -> str:
    doc = etree.fromstring(xml.encode())
    src = doc.find("devices/disk[@device='disk']/source")
    if src is None or src.get("file") is None:
        raise BenchError("the raw guest's XML has no disk file")
    return str(src.get("file"))


def run_case(b: Bench, case: Case, rounds: int, copy: bool,
             after: Callable[[], None] | None = None) -> None:
    create_corral_vm(b, case.corral_vm, shared=not copy)
    xmls = start_raw(b, case, shared=not copy)
    try:
        where = b.h1
        for i in range(rounds):
            target = b.other(where)
            order = ("corral", "virsh") if i % 2 == 0 else ("virsh", "corral")
            for tool in order:
                m = (move_corral(b, case, target, copy) if tool == "corral"
                     else move_virsh(b, case, target, copy, xmls))
                case.moves.append(m)
                say(f"{case.title} round {i + 1}/{rounds}: {tool} to {target} "
                    f"{m.total_s:.2f} s, downtime {m.downtime_ms} ms")
                time.sleep(1)  # the guests settle (dirty pages) before the next move
            where = target
        if after is not None:
            after()
    finally:
        for host in (b.h1, b.h2):
            subprocess.run(["virsh", "-c", b.uri(host), "destroy", case.raw_vm],
                           capture_output=True, timeout=60, check=False)
            subprocess.run(["virsh", "-c", b.uri(host), "undefine", case.raw_vm],
                           capture_output=True, timeout=60, check=False)
        subprocess.run([*CORRAL, "vm", "delete", case.corral_vm, "--force"], env=b.env,
                       capture_output=True, timeout=300, check=False)


def run_evacuation(b: Bench, res: Result, count: int) -> None:
    """``count`` running guests on host 1, then `corral host maintenance` (timed: until every
    one runs on host 2), then `host activate`."""
    names = [f"bevac{i}" for i in range(1, count + 1)]
    try:
        for name in names:
            create_corral_vm(b, name, shared=True)
        say(f"evacuating {b.h1} ({count} VMs): corral host maintenance")
        t0 = time.monotonic()
        b.corral("host", "maintenance", b.h1, timeout=900)
        total = time.monotonic() - t0
        where = {n: b.client.get_vm(n).host for n in names}
        if set(where.values()) != {b.h2}:
            raise BenchError(f"after the evacuation the VMs are on {where}")
        try:
            parallel = str(b.client.cluster_setting("migration.parallel").value)
        except (CorralError, AttributeError):
            parallel = "?"
        res.evacuation = Evacuation(count, total, parallel)
        say(f"evacuation of {count} VMs: {total:.2f} s")
        b.corral("host", "activate", b.h1)
    finally:
        for name in names:
            subprocess.run([*CORRAL, "vm", "delete", name, "--force"], env=b.env,
                           capture_output=True, timeout=300, check=False)


def cli_calls(b: Bench, vm: str, n: int = 3) -> list[float]:
    """Wall times of `corral vm show VM`: what any CLI call costs (Python start-up, TLS)."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        b.corral("vm", "show", vm, "-o", "json")
        out.append(time.monotonic() - t0)
    return out


# -- the report -------------------------------------------------------------------------------

def _p50_max(values: list[float], unit: str, scale: float = 1.0) -> str:
    if not values:
        return "-"
    fmt = "{:.0f}" if unit == "ms" else "{:.2f}"
    return (f"{fmt.format(median(values) * scale)} / {fmt.format(max(values) * scale)} "
            f"{unit}")


def case_lines(case: Case, missed: list[str]) -> list[str]:
    c, v = case.of("corral"), case.of("virsh")
    lines = [f"### {case.title}", "",
             "| tool | moves | total p50 / max | downtime p50 / max |", "|---|---|---|---|"]
    for name, moves in (("`corral vm migrate` (CLI)", c), ("`virsh migrate`", v)):
        downs = [float(m.downtime_ms) for m in moves if m.downtime_ms is not None]
        lines.append(f"| {name} | {len(moves)} | {_p50_max([m.total_s for m in moves], 's')} "
                     f"| {_p50_max(downs, 'ms')} |")
    lines.append("")
    if c and v:
        ratio = median([m.total_s for m in c]) / median([m.total_s for m in v])
        ok = ratio <= RATIO_TARGET
        verdict = "PASS" if ok else "MISS"
        lines.append(f"Total time ratio corral / virsh (medians): **{ratio:.2f}** (target <= "
                     f"{RATIO_TARGET}: **{verdict}**).")
        own = [m.op_total_s for m in c if m.op_total_s is not None]
        if own:
            lines.append(f"For context: the operation's own total (the agent's, from its call "
                         f"to the guest running on the target; no CLI start-up, no checks) "
                         f"p50 {median(own):.2f} s, ratio to virsh "
                         f"{median(own) / median([m.total_s for m in v]):.2f}.")
        if not ok:
            missed.append(f"{case.title}: time ratio {ratio:.2f} (target <= {RATIO_TARGET})")
        for tool, moves in (("corral", c), ("virsh", v)):
            downs = [float(m.downtime_ms) for m in moves if m.downtime_ms is not None]
            if downs and median(downs) >= DOWNTIME_TARGET_MS:
                missed.append(f"{case.title}: {tool} downtime p50 {median(downs):.0f} ms "
                              f"(target < {DOWNTIME_TARGET_MS} ms)")
        lines += ["", "| # | tool | to | total | downtime |", "|---|---|---|---|---|"]
        for i, m in enumerate(case.moves, 1):
            lines.append(f"| {i} | {m.tool} | {m.to} | {m.total_s:.2f} s | "
                         f"{m.downtime_ms if m.downtime_ms is not None else '-'} ms |")
    lines.append("")
    return lines


def section(res: Result, rounds: int, started: str, duration_s: float, tls: bool
            ) -> tuple[str, list[str]]:
    lines = ["## Live migration: corral vs virsh (`bench/migration.py`)", "",
             f"Run {started}, {duration_s:.0f} s: `make bench BENCHES=migration` (or "
             f"`.venv/bin/python bench/migration.py --rounds {rounds}`). Method: see the "
             "docstring of `bench/migration.py`: a 2-host lab (shared directory pool), two "
             f"idle tiny guests of {MEMORY} (TCG), one corral's and one defined through virsh "
             f"from the same XML, moved to the other host {rounds} times each, interleaved; "
             f"migration TLS {'on (both)' if tls else 'off (both)'}. Targets: total time "
             f"ratio (medians) <= {RATIO_TARGET}, downtime (libvirt's, medians) < "
             f"{DOWNTIME_TARGET_MS} ms for both. The corral figure is the CLI's wall time "
             "(its Python start-up included: what a user waits for).", ""]
    missed: list[str] = []
    for case in res.cases:
        lines += case_lines(case, missed)
    for m in missed:
        lines.append(f"- missed: {m}")
    if res.cli_call_s:
        lines += ["", f"A CLI call that moves nothing (`corral vm show`, {len(res.cli_call_s)} "
                  f"times) takes p50 {median(res.cli_call_s):.2f} s here: part of every "
                  "corral figure above (Python start-up, TLS to the engine)."]
    e = res.evacuation
    lines += ["", "### Evacuation", ""]
    if e is not None:
        lines.append(f"`corral host maintenance` of a host with {e.vms} running guests "
                     f"({MEMORY}, shared pool; `migration.parallel` {e.parallel}): "
                     f"**{e.total_s:.1f} s** in all, until every one ran on the other host.")
    else:
        lines.append("Not measured (see the error below, or `--no-evacuation`).")
    lines.append("")
    lines += sections.closing_lines(res.errors, res.facts)
    return "\n".join(lines), missed


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5, help="moves per tool and case")
    parser.add_argument("--no-copy", action="store_true", help="skip the storage-copy case")
    parser.add_argument("--no-evacuation", action="store_true",
                        help="skip the evacuation of a host with --evacuate VMs")
    parser.add_argument("--evacuate", type=int, default=5, help="VMs on the evacuated host")


def _measure(res: Result, up: InLab) -> None:
    args = up.args
    home = Path(tempfile.mkdtemp(prefix="corral-bench-migration-home-"))
    try:
        b = Bench(up.lab, up.client, home)
        res.tls = b.tls
        shared = Case("Shared storage (pool `shared`: nothing copied)", "bmig", "bmigraw")
        res.cases.append(shared)
        run_case(b, shared, args.rounds, copy=False, after=lambda: res.cli_call_s.extend(
            cli_calls(b, shared.corral_vm)))
        if not args.no_copy:
            local = Case("Storage copy (root disk on each host's own storage)", "bmigl",
                         "bmigrawl")
            res.cases.append(local)
            run_case(b, local, args.rounds, copy=True)
        if not args.no_evacuation:
            run_evacuation(b, res, args.evacuate)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    return run_bench(
        SECTION, __doc__, REPORT, lab_root=Path("/var/tmp/corral-bench-migration"),
        options=_options, positive=["rounds"], result=lambda _args, facts: Result(facts=facts),
        body=in_lab(LabSpec(PREFIX, hosts=2, storage="shared"), _measure,
                    "lab set-up (`lab up`, 2 hosts, shared pool)"),
        section=lambda res, ran: section(res, ran.args.rounds, ran.started, ran.duration_s,
                                         res.tls))


if __name__ == "__main__":
    sys.exit(main())
