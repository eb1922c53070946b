"""Property tests (hypothesis): no placement ever breaks a hard rule.

Over random hosts, requests and policies: the chosen host passes every filter; a host is
chosen whenever one passes them all, and refused only when none does; the chosen one is the
best-ranked eligible host of the full explanation (the index's short cuts change nothing);
and a run of placements with reservations never overbooks a host nor breaks a strict group.
Small value ranges on purpose, so tags, pools, groups and full hosts collide often.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.engine.scheduler import (
    Cluster,
    Group,
    GroupPolicy,
    GuestOnHost,
    HostState,
    HostView,
    Policy,
    Request,
    Strategy,
    check,
    place,
)
from corral.engine.scheduler import placement as place_module

WORDS = st.frozensets(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3)
GROUPS = ["g1", "g2"]
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def hosts(draw: st.DrawFn, max_size: int = 24) -> list[HostView]:
    n = draw(st.integers(0, max_size))
    out = []
    for i in range(n):
        cpus = draw(st.integers(1, 16))
        memory = draw(st.sampled_from([1024, 2048, 4096, 8192]))
        vms = tuple(GuestOnHost(f"vm{i}-{j}", draw(st.frozensets(st.sampled_from(GROUPS))))
                    for j in range(draw(st.integers(0, 3))))
        out.append(HostView(
            f"h{i:02d}", draw(st.sampled_from([HostState.UP] * 4 + list(HostState))), cpus, memory,
            draw(st.integers(0, cpus * 3)), draw(st.integers(0, memory + 1024) | st.just(0)),
            draw(WORDS), draw(WORDS), draw(WORDS),
            draw(st.frozensets(st.sampled_from(["m1", "m2"]))), draw(st.booleans()), vms))
    return out


@st.composite
def requests(draw: st.DrawFn, names: int = 24) -> Request:
    group = draw(st.none() | st.builds(Group, st.sampled_from(GROUPS),
                                       st.sampled_from(list(GroupPolicy)), st.booleans()))
    pin = draw(st.sampled_from([None] * 8 + [f"h{i:02d}" for i in range(names + 1)]))
    return Request(
        draw(st.integers(1, 4)), draw(st.sampled_from([256, 512, 1024, 2048, 4096])),
        draw(st.frozensets(st.sampled_from(["a", "b", "c"]), max_size=1)),
        draw(st.sampled_from([None, None, "a", "b", "c"])),
        draw(st.frozensets(st.sampled_from(["a", "b", "c"]), max_size=1)),
        draw(st.sampled_from([None, None, None, "m1", "m2", "host-passthrough", "host-model"])),
        group, pin, "new")


policies = st.builds(Policy, st.sampled_from(list(Strategy)),
                     st.sampled_from([1.0, 1.5, 4.0]), st.sampled_from([0.5, 1.0, 1.5]))


@contextmanager
def narrow_always() -> Iterator[None]:
    """Make the index look only at the candidate sets whenever it has one (a short cut it
    otherwise takes only when the set is much smaller than the cluster)."""
    saved = place_module.NARROW
    place_module.NARROW = 10**9
    try:
        yield
    finally:
        place_module.NARROW = saved


def assert_sound(hs: list[HostView], req: Request, policy: Policy) -> None:
    p = place(hs, req, policy)
    ctx = p.ctx
    passing = [h.name for h in hs if not check(h, req, policy, ctx)]
    if p.chosen is None:
        assert passing == []
        assert all(v.reasons for v in p.verdicts)
    else:
        assert check(p.host, req, policy, ctx) == ()  # type: ignore[arg-type]
        assert p.verdicts[0].host.name == p.chosen and p.verdicts[0].rank == 1
    assert sorted(v.host.name for v in p.eligible) == sorted(passing)
    assert len(p.verdicts) == len(hs)


@EXAMPLES
@given(hosts(), requests(), policies)
def test_the_choice_passes_every_filter_and_is_the_best_eligible(
        hs: list[HostView], req: Request, policy: Policy) -> None:
    assert_sound(hs, req, policy)


@EXAMPLES
@given(hosts(), requests(), policies)
def test_the_candidate_set_short_cut_chooses_the_same(
        hs: list[HostView], req: Request, policy: Policy) -> None:
    with narrow_always():
        assert_sound(hs, req, policy)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hosts(max_size=12), st.lists(requests(names=12), min_size=1, max_size=20), policies,
       st.booleans())
def test_a_run_of_placements_never_overbooks_nor_breaks_a_strict_group(
        hs: list[HostView], reqs: list[Request], policy: Policy, narrow: bool) -> None:
    c = Cluster(hs, policy)
    with narrow_always() if narrow else _nothing():
        for i, r in enumerate(reqs):
            req = Request(r.vcpus, r.memory_mib, r.tags, r.pool, r.networks, r.cpu_model,
                          r.group, r.host, f"new{i}")
            p = c.place(req)
            # the kept index chooses as a fresh one over the same hosts would
            assert p.chosen == place(c.views.values(), req, policy).chosen
            if p.chosen is None:
                continue
            assert check(c.views[p.chosen], req, policy, c.context(req)) == ()
            booked = c.reserve(p.chosen, req)
            assert booked.used_memory_mib <= policy.memory_capacity(booked)
            assert booked.used_vcpus <= policy.vcpu_capacity(booked)
            g = req.group
            if g is not None and g.strict and g.policy is GroupPolicy.ANTI_AFFINITY:
                assert len(booked.members(g.name)) == 1
            if g is not None and g.strict and g.policy is GroupPolicy.AFFINITY:
                # with the group's members (generated hosts may hold them on several)
                assert not p.ctx.group_hosts or p.chosen in p.ctx.group_hosts


@contextmanager
def _nothing() -> Iterator[None]:
    yield
