"""Each filter of the scheduler: passes, or refuses with the figures a person needs."""

from __future__ import annotations

import pytest
from sched_hosts import host, member, request

from corral.engine.scheduler import (
    HOST_PASSTHROUGH,
    Context,
    Group,
    GroupPolicy,
    HostState,
    Policy,
    check,
)
from corral.errors import InvalidInput

POLICY = Policy()


def reasons(h: object, req: object, policy: Policy = POLICY, ctx: Context = Context()) -> list[str]:
    return [str(r) for r in check(h, req, policy, ctx)]  # type: ignore[arg-type]


def test_an_up_host_with_room_passes_every_filter() -> None:
    assert reasons(host("a"), request(2, 2048, pool="default", networks=frozenset({"lan"}))) == []


@pytest.mark.parametrize("state", [HostState.MAINTENANCE, HostState.UNRESPONSIVE, HostState.DOWN])
def test_only_up_hosts_take_vms(state: HostState) -> None:
    assert reasons(host("a", state=state), request()) == [f"state: {state.value}, needs up"]


def test_memory_reason_names_need_free_capacity_and_ratio() -> None:
    h = host("a", memory_mib=8192, used_memory_mib=7168)
    assert reasons(h, request(memory_mib=4096)) == [
        "memory: needs 4096 MiB, 1024 MiB free of 8192 MiB x1.0"]
    assert reasons(h, request(memory_mib=1024)) == []  # exactly the free memory fits


def test_vcpu_reason_names_need_free_capacity_ratio_and_allocation() -> None:
    h = host("a", cpus=4, used_vcpus=14)
    assert reasons(h, request(vcpus=4)) == ["vCPUs: needs 4, 2 free of 4 x4.0 (14 allocated)"]
    assert reasons(h, request(vcpus=2)) == []


def test_overcommit_ratios_change_the_room() -> None:
    h = host("a", cpus=4, memory_mib=8192, used_vcpus=4, used_memory_mib=8192)
    strict = Policy(cpu_overcommit=1.0, memory_overcommit=1.0)
    assert reasons(h, request(1, 1024), strict) == [
        "vCPUs: needs 1, 0 free of 4 x1.0 (4 allocated)",
        "memory: needs 1024 MiB, 0 MiB free of 8192 MiB x1.0"]
    loose = Policy(cpu_overcommit=2.0, memory_overcommit=1.5)
    assert reasons(h, request(4, 4096), loose) == []
    assert reasons(h, request(5, 4097), loose) == [
        "vCPUs: needs 5, 4 free of 4 x2.0 (4 allocated)",
        "memory: needs 4097 MiB, 4096 MiB free of 8192 MiB x1.5"]


def test_an_overbooked_host_shows_no_free_room_rather_than_a_negative_figure() -> None:
    h = host("a", memory_mib=4096, used_memory_mib=6000)
    assert reasons(h, request(memory_mib=1)) == ["memory: needs 1 MiB, 0 MiB free of 4096 MiB x1.0"]


def test_required_tags_lists_the_missing_and_the_present() -> None:
    assert reasons(host("a", tags="ssd"), request(tags=frozenset({"ssd", "gpu", "nvme"}))) == [
        "tags: lacks gpu, nvme (has ssd)"]
    assert reasons(host("a"), request(tags=frozenset({"ssd"}))) == ["tags: lacks ssd (has none)"]


def test_pool_and_networks_must_be_reachable() -> None:
    h = host("a", pools="default", networks="lan")
    assert reasons(h, request(pool="ceph", networks=frozenset({"lan", "dmz", "admin"}))) == [
        "pool: ceph not reachable from this host",
        "networks: admin, dmz not reachable from this host"]


def test_cpu_models_named_and_host_modes() -> None:
    h = host("a", cpu_models="Skylake-Client Haswell", host_cpu=False)
    assert reasons(h, request(cpu_model="Haswell")) == []
    assert reasons(h, request(cpu_model="EPYC")) == ["CPU model: EPYC not supported (2 models are)"]
    assert reasons(h, request(cpu_model=HOST_PASSTHROUGH)) == [
        "CPU model: host-passthrough not possible here (no KVM)"]
    assert reasons(host("b"), request(cpu_model="host-model")) == []


def test_strict_anti_affinity_names_the_members_already_there() -> None:
    h = host("a", vms=(member("web-1", "web"), member("db-1", "db"), member("web-2", "web")))
    g = Group("web", GroupPolicy.ANTI_AFFINITY)
    assert reasons(h, request(group=g)) == [
        "group: anti-affinity web (strict): web-1, web-2 already here"]
    assert reasons(h, request(group=Group("web", GroupPolicy.ANTI_AFFINITY, strict=False))) == []
    assert reasons(h, request(group=Group("cache", GroupPolicy.ANTI_AFFINITY))) == []


def test_strict_affinity_follows_the_members_and_the_first_goes_anywhere() -> None:
    g = Group("web", GroupPolicy.AFFINITY)
    ctx = Context(frozenset({"b", "c"}))
    assert reasons(host("a"), request(group=g), ctx=ctx) == [
        "group: affinity web (strict): members are on b, c"]
    assert reasons(host("b"), request(group=g), ctx=ctx) == []
    assert reasons(host("a"), request(group=g), ctx=Context()) == []


def test_pinning_refuses_every_other_host_and_keeps_the_rules_on_its_own() -> None:
    req = request(memory_mib=32768, host="a")
    assert reasons(host("b", memory_mib=65536), req) == ["pinned: the request names host a"]
    assert reasons(host("a"), req) == ["memory: needs 32768 MiB, 16384 MiB free of 16384 MiB x1.0"]


def test_every_failing_filter_is_reported_in_order() -> None:
    h = host("a", state=HostState.MAINTENANCE, cpus=1, memory_mib=512, pools="")
    got = [r.filter for r in check(h, request(8, 1024, tags=frozenset({"gpu"}), pool="default",
                                                   host="b"), POLICY, Context())]
    assert got == ["state", "pinned", "vCPUs", "memory", "tags", "pool"]


@pytest.mark.parametrize(("field", "kwargs"), [("vcpus", {"vcpus": 0}),
                                                ("memory_mib", {"memory_mib": 0})])
def test_an_empty_request_is_invalid_input(field: str, kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidInput) as e:
        request(**kwargs)
    assert e.value.field == field


@pytest.mark.parametrize("ratio", [0.0, -1.0, float("nan"), 5000.0])
def test_an_overcommit_ratio_out_of_range_is_invalid_input(ratio: float) -> None:
    with pytest.raises(InvalidInput) as e:
        Policy(cpu_overcommit=ratio)
    assert e.value.field == "cpu_overcommit"
