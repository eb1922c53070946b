"""The agent's stats sampler (corral.agent.vm_stats) on made-up libvirt records: rates from
two readings, a VM seen once or restarted counted from its next reading, the host's sums,
the ring's bound (10 minutes), ``since``, and VMs that stopped forgotten after 10 minutes."""

from __future__ import annotations

from typing import Any

from corral.agent.vm_stats import Ring, StatsSampler, counters


def record(cpu_s: float, rd: int = 0, wr: int = 0, rx: int = 0, tx: int = 0,
           rss_kib: int = 65536) -> dict[str, Any]:
    """A record as libvirt's getAllDomainStats gives it: one disk, one NIC."""
    return {"cpu.time": int(cpu_s * 1e9), "balloon.current": 131072, "balloon.rss": rss_kib,
            "block.count": 1, "block.0.rd.bytes": rd, "block.0.wr.bytes": wr,
            "net.count": 1, "net.0.rx.bytes": rx, "net.0.tx.bytes": tx}


class World:
    """The clock and the records the sampler reads."""

    def __init__(self) -> None:
        self.t = 1_000_000.0
        self.records: dict[str, dict[str, Any]] = {}

    def sampler(self) -> StatsSampler:
        return StatsSampler(lambda: self.records, interval_s=5.0, keep_s=600.0, cpus=2,
                            clock=lambda: self.t, mono=lambda: self.t)


def test_rates_come_from_two_readings() -> None:
    w = World()
    s = w.sampler()
    w.records = {"web": record(10.0, rd=1000, wr=0, rx=500, tx=100)}
    s.sample()
    assert s.series("web").series["cpu_percent"] == []  # one reading: no rate yet
    w.t += 5
    w.records = {"web": record(12.5, rd=6000, wr=10_000, rx=1500, tx=600, rss_kib=70000)}
    s.sample()
    got = {m: pts[-1][1] for m, pts in s.series("web").series.items()}
    assert got == {"cpu_percent": 50.0, "memory_bytes": 70000 * 1024.0,
                   "disk_read_bps": 1000.0, "disk_write_bps": 2000.0,
                   "net_rx_bps": 200.0, "net_tx_bps": 100.0}
    assert s.series("web").series["cpu_percent"][0][0] == w.t  # stamped with the clock
    host = {m: pts[-1][1] for m, pts in s.series(None).series.items()}
    assert host["cpu_percent"] == 25.0  # half a CPU of the host's two
    assert host["disk_write_bps"] == 2000.0


def test_a_restarted_vm_counts_from_its_next_reading() -> None:
    w = World()
    s = w.sampler()
    for cpu in (10.0, 15.0, 1.0, 3.0):  # its counters went back: restarted
        w.records = {"web": record(cpu)}
        s.sample()
        w.t += 5
    assert [v for _, v in s.series("web").series["cpu_percent"]] == [100.0, 40.0]


def test_the_balloon_drivers_figure_wins_over_qemus_rss() -> None:
    r = record(1.0) | {"balloon.available": 120000, "balloon.unused": 20000}
    assert counters(r).memory_bytes == 100000 * 1024
    assert counters({"cpu.time": 5}).disk_read == 0  # no disk, no NIC: zeros


def test_the_ring_keeps_ten_minutes_and_since_filters() -> None:
    w = World()
    s = w.sampler()
    for n in range(200):  # 1000 s of samples
        w.records = {"web": record(float(n))}
        s.sample()
        w.t += 5
    points = s.series("web").series["cpu_percent"]
    assert len(points) == 120  # 600 s / 5 s: bounded
    assert points[-1][0] - points[0][0] == 595
    later = s.series("web", since=points[-3][0]).series["cpu_percent"]
    assert later == points[-2:]


def test_a_stopped_vm_is_forgotten_after_ten_minutes() -> None:
    w = World()
    s = w.sampler()
    for _ in range(3):
        w.records = {"web": record(1.0), "db": record(1.0)}
        s.sample()
        w.t += 5
    for _ in range(125):  # web stopped; db goes on
        w.records = {"db": record(1.0)}
        s.sample()
        w.t += 5
    assert s.series("web").series["cpu_percent"] == []
    assert s.series("nope").series["memory_bytes"] == []
    assert len(s.series("db").series["cpu_percent"]) == 120


def test_a_ring_wraps_in_place() -> None:
    ring = Ring(3)
    for t in range(1, 6):
        ring.add(float(t), (float(t),) * 6)
    assert [row[0] for row in ring.since(0)] == [3.0, 4.0, 5.0]
    assert ring.newest() == 5.0
