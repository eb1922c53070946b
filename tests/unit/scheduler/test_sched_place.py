"""Choosing a host among many: spread and pack, groups strict and soft, pinning, reservations,
and the explanation of every host, refusals included."""

from __future__ import annotations

from sched_hosts import host, member, request

from corral.engine.scheduler import (
    Cluster,
    Group,
    GroupPolicy,
    HostState,
    HostView,
    Policy,
    Strategy,
    insufficient,
    place,
    render,
)

PACK = Policy(Strategy.PACK)
ANTI = Group("web", GroupPolicy.ANTI_AFFINITY)
SOFT_ANTI = Group("web", GroupPolicy.ANTI_AFFINITY, strict=False)
AFF = Group("web", GroupPolicy.AFFINITY)
SOFT_AFF = Group("web", GroupPolicy.AFFINITY, strict=False)


def fleet(n: int = 200) -> list[HostView]:
    """``n`` up hosts h000..: 16 GiB each, host i has i*64 MiB allocated (h000 the emptiest)."""
    return [host(f"h{i:03d}", used_memory_mib=i * 64) for i in range(n)]


def test_spread_takes_the_host_with_most_free_memory_and_pack_the_least_that_fits() -> None:
    hosts = fleet()
    assert place(hosts, request(memory_mib=2048)).chosen == "h000"
    # h199 has 16384 - 12736 = 3648 MiB free: the fullest that still fits 2048
    assert place(hosts, request(memory_mib=2048), PACK).chosen == "h199"
    # 4096 MiB: h199..h193 lack it (free 3648..4032), so pack picks h192 (4096 free, exact fit)
    assert place(hosts, request(memory_mib=4096), PACK).chosen == "h192"


def test_ties_break_by_name_whatever_the_input_order() -> None:
    hosts = [host(n) for n in ("c", "a", "b")]
    assert place(hosts, request()).chosen == "a"
    assert place(list(reversed(hosts)), request(), PACK).chosen == "a"


def test_vcpus_break_a_memory_tie() -> None:
    hosts = [host("a", used_vcpus=10), host("b", used_vcpus=2)]
    assert place(hosts, request()).chosen == "b"
    assert place(hosts, request(), PACK).chosen == "a"


def test_a_host_that_is_not_up_is_never_chosen_even_when_emptiest() -> None:
    hosts = [host("big", 64, 262144, state=HostState.MAINTENANCE), *fleet(50)]
    p = place(hosts, request())
    assert p.chosen == "h000"
    refused = {v.host.name: [str(r) for r in v.reasons] for v in p.verdicts if not v.eligible}
    assert refused == {"big": ["state: maintenance, needs up"]}


def test_a_rare_tag_among_many_hosts_finds_the_one_that_has_it() -> None:
    hosts = fleet(500)
    hosts[321] = host("h321", tags="gpu", used_memory_mib=8000)
    hosts[400] = host("h400", tags="gpu ssd", used_memory_mib=16384)  # tagged but full
    p = place(hosts, request(memory_mib=1024, tags=frozenset({"gpu"})))
    assert p.chosen == "h321"
    assert [v.host.name for v in p.eligible] == ["h321"]


def test_strict_anti_affinity_keeps_members_apart_and_refuses_when_no_host_is_left() -> None:
    c = Cluster([host("a"), host("b"), host("c")])
    chosen = []
    for i in range(3):
        req = request(group=ANTI, name=f"web-{i}")
        p = c.place(req)
        assert p.chosen is not None
        c.reserve(p.chosen, req)
        chosen.append(p.chosen)
    assert sorted(chosen) == ["a", "b", "c"]
    p = c.place(request(group=ANTI, name="web-3"))
    assert p.chosen is None
    err = insufficient(p)
    assert err.status == 409 and err.code == "insufficient_resources"
    assert err.message.startswith("no host can take web-3 (1 vCPU; 1024 MiB; group anti-affinity "
                                  "web (strict)): 3 hosts, refused by group on 3")
    assert err.details["hosts"]["a"] == ["group: anti-affinity web (strict): web-0 already here"]


def test_soft_anti_affinity_spreads_while_it_can_then_doubles_up_on_the_fewest() -> None:
    c = Cluster([host("a"), host("b", used_memory_mib=8192)])
    placed = []
    for i in range(4):
        req = request(group=SOFT_ANTI, name=f"w{i}")
        p = c.place(req)
        assert p.chosen is not None
        c.reserve(p.chosen, req)
        placed.append(p.chosen)
    # a (emptier) then b (the only one without a member), then the one with fewer members
    assert placed == ["a", "b", "a", "b"]


def test_strict_affinity_follows_the_first_member_and_refuses_when_it_is_full() -> None:
    hosts = [host("a", memory_mib=4096), host("b"), host("c", memory_mib=2048)]
    c = Cluster(hosts, PACK)
    first = request(memory_mib=2048, group=AFF, name="w0")
    p = c.place(first)
    assert p.chosen == "c"  # pack: the fullest that fits
    c.reserve("c", first)
    p = c.place(request(memory_mib=1024, group=AFF, name="w1"))
    assert p.chosen is None
    reasons = {v.host.name: [str(r) for r in v.reasons] for v in p.verdicts}
    assert reasons["c"] == ["memory: needs 1024 MiB, 0 MiB free of 2048 MiB x1.0"]
    assert reasons["b"] == ["group: affinity web (strict): members are on c"]


def test_soft_affinity_prefers_members_and_falls_back_to_the_others() -> None:
    hosts = [host("a", vms=(member("w0", "web"),), used_memory_mib=15360), host("b")]
    assert place(hosts, request(group=SOFT_AFF)).chosen == "a"  # fuller, but with the member
    assert place(hosts, request(memory_mib=2048, group=SOFT_AFF)).chosen == "b"  # a lacks room


def test_a_pinned_host_is_chosen_only_when_it_passes_every_hard_rule() -> None:
    hosts = [*fleet(100), host("gpu1", tags="gpu", used_memory_mib=15000)]
    assert place(hosts, request(memory_mib=1024, host="gpu1")).chosen == "gpu1"
    p = place(hosts, request(memory_mib=2048, host="gpu1", name="big"))
    assert p.chosen is None
    assert insufficient(p).message == (
        "no host can take big: pinned host gpu1 refuses it: memory: needs 2048 MiB, "
        "1384 MiB free of 16384 MiB x1.0")
    anti = [host("a", vms=(member("w0", "web"),)), host("b")]
    p = place(anti, request(group=ANTI, host="a"))
    assert p.chosen is None  # pinning does not get around strict anti-affinity
    assert place(anti, request(host="nowhere", name="x")).chosen is None
    assert insufficient(place(anti, request(host="nowhere", name="x"))).message == (
        "no host can take x: there is no host named nowhere")


def test_overcommit_lets_more_vcpus_onto_a_host() -> None:
    hosts = [host("a", cpus=4, used_vcpus=4)]
    assert place(hosts, request(vcpus=4), Policy(cpu_overcommit=1.0)).chosen is None
    assert place(hosts, request(vcpus=4), Policy(cpu_overcommit=2.0)).chosen == "a"
    assert place(hosts, request(vcpus=4)).chosen == "a"  # Nova's default, x4.0


def test_reservations_fill_hosts_until_the_cluster_refuses() -> None:
    c = Cluster([host(f"h{i}", cpus=2, memory_mib=4096) for i in range(10)])
    count = 0
    for i in range(100):  # bounded: 10 hosts x 4 GiB hold 40 VMs of 1 GiB
        req = request(memory_mib=1024, name=f"v{i}")
        p = c.place(req)
        if p.chosen is None:
            break
        c.reserve(p.chosen, req)
        count += 1
    assert count == 40
    assert all(h.used_memory_mib == 4096 and h.used_vcpus == 4 for h in c.views.values())


def test_updating_a_host_changes_later_placements() -> None:
    c = Cluster([host("a"), host("b", used_memory_mib=1024)])
    assert c.place(request()).chosen == "a"
    c.update(host("a", state=HostState.MAINTENANCE))
    assert c.place(request()).chosen == "b"
    c.update(host("c", memory_mib=65536))
    assert c.place(request()).chosen == "c"


def test_the_explanation_is_a_snapshot_of_the_hosts_when_placed() -> None:
    c = Cluster([host("a"), host("b")])
    req = request(memory_mib=16384, name="v")
    p = c.place(req)
    assert p.chosen == "a"
    c.reserve("a", req)
    assert [v.host.name for v in p.eligible] == ["a", "b"]  # both were eligible then


def test_render_lists_eligible_by_rank_with_weights_then_refused_with_reasons() -> None:
    hosts = [host("a", used_memory_mib=4096), host("b"), host("c", state=HostState.DOWN),
             host("d", memory_mib=1024, tags="ssd")]
    lines = render(place(hosts, request(2, 2048, name="v")))
    assert lines[:3] == ["request: 2 vCPUs; 2048 MiB", "policy: spread, overcommit CPU x4.0, "
                         "memory x1.0", "chosen: b (best of 2 eligible of 4 hosts)"]
    table = [line.split() for line in lines[4:]]
    assert table[1] == ["b", "up", "yes", "1", "30", "14336", "MiB"]
    assert table[2] == ["a", "up", "yes", "2", "30", "10240", "MiB"]
    assert lines[7].split()[:3] == ["c", "down", "no"] and "state: down, needs up" in lines[7]
    assert "memory: needs 2048 MiB, 1024 MiB free of 1024 MiB x1.0" in lines[8]
    soft = render(place([host("a", vms=(member("w0", "web"),)), host("b")],
                        request(group=SOFT_ANTI)))
    assert soft[5].split()[:4] == ["b", "up", "yes", "1"]
    assert soft[6].endswith("1 of the group here (pushed away)")
    limited = render(place(hosts, request()), limit=1)
    assert limited[-1] == "... 3 more hosts"


def test_a_refusal_explains_every_host_in_details() -> None:
    hosts = fleet(30)
    err = insufficient(place(hosts, request(memory_mib=20000, name="huge")))
    assert len(err.details["hosts"]) == 30
    assert err.details["hosts"]["h000"] == [
        "memory: needs 20000 MiB, 16384 MiB free of 16384 MiB x1.0"]
    assert err.to_dict()["code"] == "insufficient_resources"
    assert insufficient(place([], request(name="x"))).message == (
        "no host can take x: there are no hosts")
