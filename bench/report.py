"""docs/benchmarks.md and the summary printed at the end of `make bench`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import sections
from m_ack import AckResult
from m_createstart import CreateStartResult
from m_rss import RssResult
from timing import median, percentile, ratio_interval

RATIO_TARGET = 1.15
ACK_P50_TARGET_S = 0.030
ENGINE_RSS_TARGET_MB = 150.0
AGENT_RSS_TARGET_MB = 80.0


@dataclass
class Run:
    started: str = ""
    duration_s: float = 0.0
    facts: dict[str, str] = field(default_factory=dict)  # machine and software, in order
    setup: dict[str, str] = field(default_factory=dict)
    rss_before_mib: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> which
    create: CreateStartResult | None = None
    ack: AckResult | None = None
    rss: RssResult | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Verdict:
    what: str
    figure: str
    target: str
    ok: bool | None  # None: not measured

    @property
    def word(self) -> str:
        return "n/a" if self.ok is None else ("PASS" if self.ok else "MISS")


def _ms(s: float) -> str:
    return "n/a" if math.isnan(s) else f"{s * 1000:.1f} ms"


def _mb(mib: float) -> float:
    return mib * 1024 * 1024 / 1e6


def verdicts(run: Run) -> list[Verdict]:
    out: list[Verdict] = []
    c = run.create
    if c is not None and c.corral_s and c.virsh_s:
        ratio = median(c.corral_s) / median(c.virsh_s)
        lo, hi = ratio_interval(c.corral_s, c.virsh_s)
        out.append(Verdict(
            f"1. create+start until running: corral API vs `virsh create` ({len(c.corral_s)} + "
            f"{len(c.virsh_s)} VMs)",
            f"ratio of medians {ratio:.2f} (90% bootstrap interval {lo:.2f}-{hi:.2f}; corral "
            f"{_ms(median(c.corral_s))}, virsh {_ms(median(c.virsh_s))})",
            f"ratio <= {RATIO_TARGET:.2f}", ratio <= RATIO_TARGET))
    else:
        out.append(Verdict("1. create+start until running: corral API vs `virsh create`",
                           "not measured", f"ratio <= {RATIO_TARGET:.2f}", None))
    a = run.ack
    if a is not None and a.ack_s:
        p50 = median(a.ack_s)
        out.append(Verdict(
            f"2. operation acknowledged: PUT /vms/{{name}}/state -> 202 ({len(a.ack_s)} requests)",
            f"p50 {_ms(p50)}, p90 {_ms(percentile(a.ack_s, 90))}, p99 {_ms(percentile(a.ack_s, 99))}",
            f"p50 < {ACK_P50_TARGET_S * 1000:.0f} ms", p50 < ACK_P50_TARGET_S))
    else:
        out.append(Verdict("2. operation acknowledged (request -> 202)", "not measured",
                           f"p50 < {ACK_P50_TARGET_S * 1000:.0f} ms", None))
    r = run.rss
    for which, target in (("engine", ENGINE_RSS_TARGET_MB), ("agent", AGENT_RSS_TARGET_MB)):
        label = f"3. {which} RSS, idle, {r.running_vms if r else 20} running VMs"
        if r is not None and r.samples_mib.get(which):
            mib = r.peak(which)
            out.append(Verdict(label, f"{_mb(mib):.1f} MB ({mib:.1f} MiB)", f"< {target:.0f} MB",
                               _mb(mib) < target))
        else:
            out.append(Verdict(label, "not measured", f"< {target:.0f} MB", None))
    return out


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _samples(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.0f}" for v in values)


def markdown(run: Run) -> str:
    lines = [
        "## Node: create+start, operation latency, memory (`bench/run.py`)",
        "",
        f"Written by `make bench` (`bench/run.py`) on {run.started}; the whole run took "
        f"{run.duration_s / 60:.1f} min. Timings are compared with the raw tool (virsh) measured "
        "in the same run; a target missed is reported as MISS with its figure.",
        "",
    ]
    if run.error:
        lines += sections.error_lines("**The run did not finish:**", run.error)
    lines += ["### Results", "", _row("Measure", "Result", "Target", "Verdict"),
              _row("---", "---", "---", "---")]
    lines += [_row(v.what, v.figure, v.target, f"**{v.word}**") for v in verdicts(run)]
    lines += ["", "### Machine and software", ""]
    lines += [f"- {k}: {v}" for k, v in run.facts.items()]
    lines += ["", "### Set-up (untimed by the measures)", ""]
    lines += [f"- {k}: {v}" for k, v in run.setup.items()]

    c = run.create
    if c is not None and c.corral_s:
        lines += [
            "", "### 1. Create + start until libvirt reports the domain running", "",
            "corral: `Client.create_vm(VmCreate(..., memory='128M', cpus=1, start=True))` "
            "(POST /api/v1/vms) until `virDomain.state()` on the lab host's libvirt says "
            "running, asked every 5 ms. virsh: `virsh -c URI create FILE` of the XML corral "
            f"defined ({c.template_from}), renamed (name, UUID, MAC, disk, console log, "
            "corral's metadata removed), from the launch of virsh until the same poll says "
            "running. The virsh twin's qcow2 overlay is made beforehand with `qemu-img create` "
            "(untimed); corral's timed path includes making its overlay. Pairs interleaved, "
            "order alternating; each VM destroyed right after it is measured; one warm-up pair "
            "not counted.",
            "",
            _row("", "n", "median", "p90", "min", "max"),
            _row("---", "---", "---", "---", "---", "---"),
        ]
        for label, xs in (("corral API", c.corral_s), ("virsh create", c.virsh_s),
                          ("corral API, until the operation is done (info)", c.corral_op_done_s),
                          ("`qemu-img info` + `qemu-img create` of an overlay (untimed for virsh; "
                           "corral's agent runs both inside its timed path)", c.qemu_img_s)):
            if not xs:
                continue
            lines.append(_row(label, len(xs), _ms(median(xs)), _ms(percentile(xs, 90)),
                              _ms(min(xs)), _ms(max(xs))))
        if c.virsh_s:
            lo, hi = ratio_interval(c.corral_s, c.virsh_s)
            lines += ["", f"Ratio of medians corral / virsh: "
                          f"{median(c.corral_s) / median(c.virsh_s):.2f} (90% bootstrap interval "
                          f"{lo:.2f}-{hi:.2f}: resampling both sets 2000 times shows how much of "
                          "the ratio is chance on this machine); ratio of p90: "
                          f"{percentile(c.corral_s, 90) / percentile(c.virsh_s, 90):.2f}.", ""]
        lines += [f"Samples corral (ms, in order): {_samples(c.corral_s)}", "",
                  f"Samples virsh (ms, in order): {_samples(c.virsh_s)}"]

    a = run.ack
    if a is not None and a.ack_s:
        lines += [
            "", "### 2. Operation acknowledgement latency", "",
            "`PUT /api/v1/vms/ba-ack/state` alternating pause and resume on one running, booted "
            "128M VM, over one kept-alive HTTPS connection (httpx); only the PUT round trip is "
            "timed; each operation is waited for (`/operations/{id}/wait`) before the next "
            f"request; {len(a.ack_s)} timed requests after 4 warm-up ones. For context, the "
            "HTTP floor of the same connection (`GET /api/v1/health`: no auth, no DB) and the "
            "completion of the same pause/resume against `virsh suspend` / `virsh resume`.",
            "",
            _row("", "n", "p50", "p90", "p99", "max"),
            _row("---", "---", "---", "---", "---", "---"),
        ]
        for label, xs in (("PUT -> 202", a.ack_s), ("GET /api/v1/health (HTTP floor)", a.health_s),
                          ("PUT -> operation success", a.done_s),
                          ("virsh suspend / resume", a.virsh_s)):
            if xs:
                lines.append(_row(label, len(xs), _ms(median(xs)), _ms(percentile(xs, 90)),
                                  _ms(percentile(xs, 99)), _ms(max(xs))))
        if a.virsh_s and a.done_s:
            lines += ["", f"Pause/resume completion, ratio of medians corral / virsh: "
                          f"{median(a.done_s) / median(a.virsh_s):.2f} (informational, no target)."]

    r = run.rss
    lines += ["", "### 3. Resident memory (VmRSS)", ""]
    if r is not None and r.samples_mib:
        lines += [
            f"{r.running_vms} running 128M VMs (all booted; {r.boot_all_s:.0f} s to create and "
            "boot them), then 10 s of quiet, then 5 readings of /proc/PID/status a second apart; "
            "the highest counts. MB = 10^6 bytes.",
            "",
            _row("process", "readings (MiB)", "highest", "target"),
            _row("---", "---", "---", "---"),
        ]
        targets = {"engine": f"< {ENGINE_RSS_TARGET_MB:.0f} MB",
                   "agent": f"< {AGENT_RSS_TARGET_MB:.0f} MB", "libvirtd": "(raw tool, for scale)"}
        for which, xs in r.samples_mib.items():
            lines.append(_row(which, ", ".join(f"{x:.1f}" for x in xs),
                              f"{_mb(max(xs)):.1f} MB", targets.get(which, "")))
    if run.rss_before_mib:
        lines += ["", "Earlier readings (informational):", ""]
        for stage, values in run.rss_before_mib.items():
            vals = ", ".join(f"{k} {_mb(v):.1f} MB" for k, v in values.items())
            lines.append(f"- {stage}: {vals}")
    if run.notes:
        lines += ["", "### Notes", ""] + [f"- {n}" for n in run.notes]
    return "\n".join(lines) + "\n"


def summary(run: Run) -> str:
    lines = [f"corral benchmarks ({run.started}, {run.duration_s / 60:.1f} min)"]
    for v in verdicts(run):
        lines.append(f"  {v.word:4}  {v.what}: {v.figure}  [target {v.target}]")
    if run.error:
        lines.append(f"  ERROR: {run.error}")
    return "\n".join(lines)
