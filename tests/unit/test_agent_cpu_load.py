"""The agent's measure of its host's CPU load (corral.agent.cpu_load): each VM's rate from
libvirt's CPU time between two reports, the host's share of its CPUs, VMs seen once left
out; and the readings the hypervisor gives (libvirt's test driver, corral VMs only)."""

from __future__ import annotations

from pathlib import Path

from libvirt_node import private_node_uri

from corral.agent.cpu_load import CpuSampler
from corral.agent.hypervisor import Hypervisor
from corral.domainxml import CORRAL_NS

S = 1_000_000_000  # ns


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_rates_of_vms_and_the_hosts_share_of_its_cpus() -> None:
    clock = Clock()
    sampler = CpuSampler(cpus=4, clock=clock)
    assert sampler.sample({"a": 10 * S, "b": 0}) == (None, {})  # nothing to compare yet
    clock.now += 2
    percent, vms = sampler.sample({"a": 12 * S, "b": 1 * S, "new": 7 * S})
    assert vms == {"a": 1.0, "b": 0.5}  # "new" counts from its next reading
    assert percent == 37.5  # 1.5 CPUs of 4
    clock.now += 1
    percent, vms = sampler.sample({"a": 1 * S, "new": 9 * S})  # a restarted: counter back
    assert vms == {"new": 2.0} and percent == 50.0


def test_the_hosts_share_never_passes_100() -> None:
    clock = Clock()
    sampler = CpuSampler(cpus=1, clock=clock)
    sampler.sample({"a": 0, "b": 0})
    clock.now += 1
    assert sampler.sample({"a": S, "b": S})[0] == 100.0


def test_the_hypervisor_reads_the_cpu_time_of_running_corral_vms(tmp_path: Path) -> None:
    hv = Hypervisor(private_node_uri(tmp_path))  # a test node lives in its connection
    for name, meta in (("ours", f"<corral:vm xmlns:corral='{CORRAL_NS}' id='vm-1'/>"),
                       ("theirs", ""),
                       ("stopped", f"<corral:vm xmlns:corral='{CORRAL_NS}' id='vm-2'/>")):
        hv.define(f"<domain type='test'><name>{name}</name><memory>65536</memory>"
                  f"<metadata>{meta}</metadata><os><type>hvm</type></os></domain>")
        if name != "stopped":
            hv.start(name)
    times = hv.cpu_times()
    assert list(times) == ["vm-1"] and times["vm-1"] >= 0
