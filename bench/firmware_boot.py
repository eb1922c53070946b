"""`python bench/firmware_boot.py`: boot to the console marker, BIOS against UEFI, for the
same tiny image, each through corral against `virsh create` of corral's own XML. Writes its
own section (``<!-- firmware_boot -->``) of docs/benchmarks.md, leaving the others as they are.

Method: a lab host "fwbench" (index 81: a network + mount namespace with its own libvirtd;
``corral up`` inside) builds the tiny image. For each firmware (``bios``: SeaBIOS; ``uefi``:
OVMF, picked by libvirt's firmware auto-selection, with the VM's own NVRAM file):

- corral: from the POST /api/v1/vms (SDK ``create_vm``, ``start=True``, ``hardware.firmware``)
  until the guest's boot marker (:data:`corral.images.tiny.BOOT_MARKER`) is in its serial
  console log, the file of the domain's ``<serial><log>``, read every 5 ms;
- virsh: ``virsh -c URI create FILE`` of the XML corral defined for that firmware (``virsh
  dumpxml --inactive`` of a warm-up VM corral created; renamed as bench/m_createstart.py does:
  name, UUID, MAC, disk overlay, console log, corral's metadata removed; for UEFI its own
  NVRAM file), from the launch of virsh until the marker is in its own console log. Its
  overlay (``qemu-img create``) and its NVRAM (a copy of the firmware's variable-store
  template, what libvirt makes at a first start) are made beforehand, untimed; corral's timed
  path includes making both.

One warm-up pair per firmware, not counted; then ``--pairs`` rounds of four boots (a pair per
firmware), the order of the firmwares and of corral / virsh within a pair alternating every
round; each guest is destroyed (the corral one deleted) right after its marker, so no guest
competes with the next one for the CPUs. Target: corral / virsh (ratio of medians) <= 1.15
for each firmware, as for create+start; the UEFI cost (UEFI / BIOS) is reported, no target.
Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal

import outcome
import sections
from benchnode import BenchNode, fresh_node
from corral.api import Hardware, VmCreate
from corral.client import Client
from corral.domainxml import Domain
from corral.images.tiny import BOOT_MARKER
from corral.lab import LabHost
from guests import console_tail
from m_createstart import CreateNode, VirshTwin, leftover_twins
from timing import POLL_S, BenchError, median, percentile, ratio_interval, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
SECTION = "firmware_boot"
LAB_NAME, LAB_INDEX = "fwbench", 81
Firmware = Literal["bios", "uefi"]
FIRMWARES: tuple[Firmware, ...] = ("bios", "uefi")
MEMORY = "256M"  # OVMF's own needs included; the same for both firmwares
IMAGE = "tiny"
BOOT_TIMEOUT_S = 300.0
RATIO_TARGET = 1.15


@dataclass
class Boots:
    """Seconds to the boot marker of one firmware, corral and virsh, in the order measured."""

    corral_s: list[float] = field(default_factory=list)
    virsh_s: list[float] = field(default_factory=list)
    warmup: tuple[float, float] | None = None  # (corral, virsh), not counted


@dataclass
class Result:
    started: str = ""
    boots: dict[Firmware, Boots] = field(default_factory=lambda: {f: Boots() for f in FIRMWARES})
    facts: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def _virsh(uri: str, *args: str) -> str:
    out = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                         timeout=60, check=False)
    if out.returncode != 0:
        raise BenchError(f"virsh {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def wait_marker(log: Path, t0: float, timeout: float,
                abort: Callable[[], str | None] | None = None) -> float:
    """Seconds from ``t0`` (a ``perf_counter`` value) until :data:`BOOT_MARKER` is in the
    console log ``log`` (read every :data:`POLL_S` s, only what was added since the last
    read); ``abort`` (asked every round) or ``timeout`` ends the wait with BenchError."""
    marker = BOOT_MARKER.encode()
    seen, tail = 0, b""
    deadline = t0 + timeout
    while True:
        with contextlib.suppress(FileNotFoundError), log.open("rb") as f:
            f.seek(seen)
            chunk = f.read()
            seen += len(chunk)
            if marker in tail + chunk:
                return time.perf_counter() - t0
            tail = (tail + chunk)[-len(marker):]
        why = abort() if abort is not None else None
        if why:
            raise BenchError(f"waiting for {BOOT_MARKER} in {log.name}: {why}")
        if time.perf_counter() > deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise BenchError(f"no {BOOT_MARKER} in {log} {timeout:g} s after the request\n"
                             f"--- last lines of that console ---\n{console_tail(text) or '(empty)'}")
        time.sleep(POLL_S)


class _Every:
    """True at most once per ``every`` seconds (an abort check that costs a request)."""

    def __init__(self, every: float) -> None:
        self.every, self.last = every, time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.every:
            return False
        self.last = now
        return True


def corral_boot(client: Client, name: str, firmware: Firmware, console_dir: Path) -> float:
    """POST (create + start) -> boot marker in the VM's console log, in seconds; the VM is
    deleted afterwards (untimed)."""
    log = console_dir / f"{name}.log"
    log.unlink(missing_ok=True)  # the log is appended to: only this boot's lines
    rate = _Every(1.0)
    op_id = ""

    def failed() -> str | None:
        if not op_id or not rate.due():
            return None
        op = client.get_operation(op_id)
        return f"operation {op_id} failed: {op.message}" if op.status.value == "failure" else None

    req = VmCreate(name=name, image=IMAGE, memory=MEMORY, cpus=1, start=True,
                   hardware=Hardware(firmware=firmware))
    t0 = time.perf_counter()
    op_id = client.create_vm(req).id
    try:
        seconds = wait_marker(log, t0, BOOT_TIMEOUT_S, failed)
    except BaseException:
        with contextlib.suppress(Exception):  # the wait's error matters more
            client.wait_quiet(op_id, timeout=120)
            client.wait_quiet(client.delete_vm(name, force=True).id, timeout=120)
        raise
    client.wait(op_id, timeout=120)
    client.wait(client.delete_vm(name, force=True).id, timeout=120)
    return seconds


class FirmwareTwin(VirshTwin):
    """bench/m_createstart.py's virsh twin of corral's XML, timed to the boot marker; a UEFI
    twin gets its own NVRAM file, copied from the firmware's template beforehand."""

    def __init__(self, node: CreateNode, template_xml: str, work: Path,
                 nvram_template: Path | None) -> None:
        super().__init__(node, template_xml, work)
        self.nvram_template = nvram_template
        self.loader: str | None = None  # the firmware its last boot ran (None: SeaBIOS)

    def prepare(self, name: str) -> tuple[Path, float]:
        xml_file, qemu_img_s = super().prepare(name)
        if self.nvram_template is not None:
            nvram = self.work / f"{name}.nvram.fd"
            shutil.copyfile(self.nvram_template, nvram)
            dom = Domain.from_xml(xml_file.read_text())
            dom.os.nvram = str(nvram)
            xml_file.write_text(dom.to_xml())
        return xml_file, qemu_img_s

    def boot(self, name: str, xml_file: Path) -> float:
        """`virsh create` launch -> boot marker in the twin's console log, in seconds; the
        domain is destroyed afterwards (untimed)."""
        t0 = time.perf_counter()
        proc = subprocess.Popen(["virsh", "-c", self.node.uri, "create", str(xml_file)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def failed() -> str | None:
            rc = proc.poll()
            if rc is None or rc == 0:
                return None
            return f"virsh create exited {rc}: {(proc.stderr.read() if proc.stderr else '').strip()}"

        try:
            seconds = wait_marker(self.work / f"{name}.log", t0, BOOT_TIMEOUT_S, failed)
            live = Domain.from_xml(_virsh(self.node.uri, "dumpxml", name))  # untimed
            self.loader = live.os.loader.path if live.os.loader is not None else None
            return seconds
        finally:
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.communicate(timeout=60)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            self.destroy(name)

    def destroy(self, name: str) -> None:
        super().destroy(name)
        (self.work / f"{name}.nvram.fd").unlink(missing_ok=True)


def warm_up(res: Result, node: BenchNode, client: Client, firmware: Firmware, root: Path
            ) -> tuple[FirmwareTwin, Path]:
    """A corral VM of ``firmware`` (its XML: the twins' template; the live one tells the
    firmware libvirt picked) and one twin, both booted, timed and not counted."""
    name = f"fc-{firmware}-w"
    req = VmCreate(name=name, image=IMAGE, memory=MEMORY, cpus=1, start=True,
                   hardware=Hardware(firmware=firmware))
    t0 = time.perf_counter()
    op = client.create_vm(req)
    client.wait(op.id, timeout=300)
    defined = Domain.from_xml(_virsh(node.uri, "dumpxml", "--inactive", name))
    console_log = next((s.log_file for s in defined.devices.serials if s.log_file), None)
    if console_log is None:
        raise BenchError(f"corral's domain XML of {name} has no serial console log")
    console_dir = Path(console_log).parent
    corral_s = wait_marker(Path(console_log), t0, BOOT_TIMEOUT_S)
    live = Domain.from_xml(_virsh(node.uri, "dumpxml", name))
    loader = live.os.loader.path if live.os.loader is not None else None
    template = live.os.nvram_template
    res.facts[f"{firmware}: firmware libvirt ran"] = (
        f"`{loader}`" + (f", NVRAM template `{template}`" if template else "")
        if loader else "SeaBIOS (QEMU's default, no <loader>)")
    client.wait(client.delete_vm(name, force=True).id, timeout=120)
    if firmware == "uefi" and not template:
        raise BenchError(f"the running UEFI domain {name} shows no NVRAM template")
    twin = FirmwareTwin(node, defined.to_xml(), root / "virsh",
                        Path(template) if template else None)
    xml, _ = twin.prepare(f"fv-{firmware}-w")
    virsh_s = twin.boot(f"fv-{firmware}-w", xml)
    if twin.loader != loader:
        raise BenchError(f"the {firmware} twin ran firmware {twin.loader}, corral's VM {loader}")
    res.boots[firmware].warmup = (corral_s, virsh_s)
    say(f"{firmware} warm-up: corral {corral_s:.2f} s, virsh {virsh_s:.2f} s (not counted)")
    return twin, console_dir


def measure(res: Result, root: Path, pairs: int) -> None:
    host = LabHost(LAB_NAME, LAB_INDEX, root / "host")
    node: BenchNode | None = None
    try:
        node = fresh_node(host, root)
        shutil.rmtree(root / "virsh", ignore_errors=True)
        say("corral up in the lab host")
        t0 = time.monotonic()
        node.up()
        res.facts["`corral up --detach` inside the lab host"] = f"{time.monotonic() - t0:.1f} s"
        with node.client(timeout=120) as client:
            st = client.status()
            h = st.hosts[0] if st.hosts else None
            res.facts["virtualization (corral status)"] = (
                "?" if h is None else (h.virt_type or "?").replace("qemu", "TCG (qemu)"))
            say("building the tiny image")
            t0 = time.monotonic()
            client.wait(client.build_tiny(IMAGE).id, timeout=900)
            res.facts["tiny image build"] = f"{time.monotonic() - t0:.1f} s"
            twins: dict[str, FirmwareTwin] = {}
            console_dir = Path()
            for firmware in FIRMWARES:
                twins[firmware], console_dir = warm_up(res, node, client, firmware, root)
            for i in range(pairs):
                firmwares = FIRMWARES if i % 2 == 0 else FIRMWARES[::-1]
                sides = ("corral", "virsh") if i % 2 == 0 else ("virsh", "corral")
                for firmware in firmwares:
                    boots = res.boots[firmware]
                    for side in sides:
                        if side == "corral":
                            boots.corral_s.append(corral_boot(
                                client, f"fc-{firmware}-{i:02d}", firmware, console_dir))
                        else:
                            twin = twins[firmware]
                            name = f"fv-{firmware}-{i:02d}"
                            xml, _ = twin.prepare(name)
                            boots.virsh_s.append(twin.boot(name, xml))
                    say(f"round {i + 1}/{pairs}, {firmware}: corral "
                        f"{boots.corral_s[-1]:.2f} s, virsh {boots.virsh_s[-1]:.2f} s")
    finally:
        if node is not None:
            cleanup(node)
            node.down()
        with contextlib.suppress(Exception):
            host.stop()


def cleanup(node: BenchNode) -> None:
    """Delete corral's VMs and destroy leftover twins (bounded), whatever happened."""
    with contextlib.suppress(Exception), node.client(timeout=30) as client:
        ops = [client.delete_vm(vm.name, force=True) for vm in client.list_vms()]
        for op in ops:
            client.wait_quiet(op.id, timeout=120)
    with contextlib.suppress(Exception):
        for name in leftover_twins(node.uri, "fv-"):
            subprocess.run(["virsh", "-c", node.uri, "destroy", name], capture_output=True,
                           timeout=60, check=False)


def _s(x: float) -> str:
    return f"{x:.2f} s"


def _ratio(a: list[float], b: list[float]) -> str:
    lo, hi = ratio_interval(a, b)
    return f"{median(a) / median(b):.2f} ({lo:.2f} to {hi:.2f})"


def missed(res: Result) -> list[str]:
    """corral / virsh (ratio of medians) above the target, for each firmware measured."""
    out = []
    for firmware, b in res.boots.items():
        if b.corral_s and b.virsh_s:
            ratio = median(b.corral_s) / median(b.virsh_s)
            if ratio > RATIO_TARGET:
                out.append(f"{firmware} boot corral / virsh {ratio:.2f} > {RATIO_TARGET}")
    return out


def section(res: Result, pairs: int) -> str:
    lines = [
        "## Boot to the console marker: BIOS against UEFI (`bench/firmware_boot.py`)", "",
        f"Run {res.started}, {res.duration_s:.0f} s. The same tiny image (direct kernel boot, "
        f"{MEMORY}, 1 vCPU, q35, TCG), from the create+start request until `{BOOT_MARKER}` is "
        "in the guest's serial console log; corral (SDK `create_vm`, `start=True`, "
        "`hardware.firmware`) against `virsh create` of the XML corral defined, with its "
        "overlay and NVRAM made beforehand (untimed). One warm-up pair per firmware not "
        f"counted, then {pairs} rounds, order alternating. Method: the docstring of "
        "`bench/firmware_boot.py`. Medians; intervals: 90% bootstrap of the ratio of medians.",
        "",
        "| firmware, path | n | median | p90 | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for firmware, b in res.boots.items():
        for who, xs in (("corral API", b.corral_s), ("`virsh create`", b.virsh_s)):
            if xs:
                lines.append(f"| {firmware}, {who} | {len(xs)} | {_s(median(xs))} | "
                             f"{_s(percentile(xs, 90))} | {_s(min(xs))} | {_s(max(xs))} |")
    lines += ["", "| ratio of medians | figure | target | verdict |", "|---|---|---|---|"]
    for firmware, b in res.boots.items():
        if b.corral_s and b.virsh_s:
            ok = median(b.corral_s) / median(b.virsh_s) <= RATIO_TARGET
            lines.append(f"| {firmware}: corral / virsh | {_ratio(b.corral_s, b.virsh_s)} | "
                         f"≤ {RATIO_TARGET:.2f} | **{'PASS' if ok else 'MISS'}** |")
    bios, uefi = res.boots["bios"], res.boots["uefi"]
    for who, u, v in (("corral", uefi.corral_s, bios.corral_s),
                      ("virsh", uefi.virsh_s, bios.virsh_s)):
        if u and v:
            lines.append(f"| UEFI cost, {who}: UEFI / BIOS | {_ratio(u, v)}; "
                         f"+{median(u) - median(v):.2f} s | (reported) | - |")
    lines.append("")
    for firmware, b in res.boots.items():
        if b.warmup is not None:
            lines.append(f"- {firmware} warm-up (not counted): corral {_s(b.warmup[0])}, "
                         f"virsh {_s(b.warmup[1])}")
        for who, xs in (("corral", b.corral_s), ("virsh", b.virsh_s)):
            if xs:
                lines.append(f"- {firmware} samples, {who} (s, in order): "
                             + ", ".join(f"{x:.2f}" for x in xs))
    lines.append("")
    lines += sections.closing_lines(res.errors, res.facts)
    return "\n".join(lines)


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)  # unwinds through the finally blocks: cleanup still runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--pairs", type=int, default=7,
                        help="rounds, each one corral + one virsh boot per firmware")
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/corral-bench-firmware"))
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")
    if os.geteuid() != 0:
        print("bench/firmware_boot.py needs root (lab host, libvirtd)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    root: Path = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # QEMU (libvirt-qemu) opens the twins' disks and NVRAM below
    measured = sections.Measured.now()
    res = Result(started=f"{measured.started:%Y-%m-%d %H:%M} UTC",
                 facts={"machine": f"{platform.machine()}, {os.cpu_count()} CPUs"})
    t0 = time.monotonic()
    try:
        measure(res, root, args.pairs)
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")
        say(f"benchmark failed: {res.errors[-1].splitlines()[0]}")
    res.facts["load average at the end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    res.duration_s = time.monotonic() - t0
    text = section(res, args.pairs)
    sections.write_section(args.report, SECTION, text, measured)
    print(text)
    return outcome.finish("\n".join(res.errors) or None, missed(res))


if __name__ == "__main__":
    sys.exit(main())
