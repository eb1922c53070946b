"""The engine's rule for where a host stands in the quorate membership (corral.ha.membership),
from what its peers report."""

from __future__ import annotations

from corral.ha.membership import Seen, Standing, derive
from corral.ha.model import Quorum

ALL = frozenset({"h1", "h2", "h3"})


def seen(at: float, quorate: bool, *members: str) -> Seen:
    return Seen(at, quorate, frozenset(members))


def test_every_host_in_a_fresh_quorate_view_is_in() -> None:
    out = derive(10.0, 3.0, {h: seen(9.5, True, *ALL) for h in ALL}, {})
    assert {h: s.quorum for h, s in out.items()} == {h: Quorum.IN for h in ALL}


def test_a_host_left_out_of_the_majoritys_view_is_out_since_first_seen_so() -> None:
    reports = {"h1": seen(9.5, True, "h1", "h2"), "h2": seen(9.6, True, "h1", "h2"),
               "h3": seen(9.0, False, "h3")}
    first = derive(10.0, 3.0, reports, {})
    assert first["h3"] == Standing(Quorum.OUT, 10.0)
    assert first["h1"].quorum is Quorum.IN
    later = derive(12.0, 3.0, {**reports, "h1": seen(11.9, True, "h1", "h2")}, first)
    assert later["h3"] == Standing(Quorum.OUT, 10.0)  # counted from the first time


def test_a_non_quorate_view_says_nothing_about_others() -> None:
    out = derive(10.0, 3.0, {"h1": seen(9.9, False, "h1"), "h2": None, "h3": None}, {})
    assert {s.quorum for s in out.values()} == {Quorum.UNKNOWN}


def test_stale_reports_count_for_nothing() -> None:
    """A view older than ``fresh`` (its sender went silent) no longer places anyone."""
    out = derive(20.0, 3.0, {"h1": seen(16.0, True, "h1", "h2"), "h2": None, "h3": None},
                 {"h3": Standing(Quorum.OUT, 12.0)})
    assert {s.quorum for s in out.values()} == {Quorum.UNKNOWN}


def test_back_in_the_view_is_in_again_and_a_later_cut_counts_afresh() -> None:
    out = derive(30.0, 3.0, {"h1": seen(29.9, True, *ALL), "h2": None, "h3": None},
                 {"h3": Standing(Quorum.OUT, 12.0)})
    assert out["h3"].quorum is Quorum.IN
    again = derive(40.0, 3.0, {"h1": seen(39.9, True, "h1", "h2"), "h2": None, "h3": None}, out)
    assert again["h3"] == Standing(Quorum.OUT, 40.0)


def test_a_view_of_half_the_hosts_or_less_counts_for_nothing() -> None:
    """Both halves of a two-host cluster under corosync's two_node stay quorate: neither
    view places anyone, so only power fencing can free a host's VMs there."""
    out = derive(10.0, 3.0, {"h1": seen(9.9, True, "h1"), "h2": seen(9.9, True, "h2")}, {})
    assert {s.quorum for s in out.values()} == {Quorum.UNKNOWN}
    four = {h: None for h in ("h1", "h2", "h3", "h4")}
    out = derive(10.0, 3.0, {**four, "h1": seen(9.9, True, "h1", "h2")}, {})
    assert {s.quorum for s in out.values()} == {Quorum.UNKNOWN}
    out = derive(10.0, 3.0, {**four, "h1": seen(9.9, True, "h1", "h2", "h3")}, {})
    assert out["h4"].quorum is Quorum.OUT and out["h1"].quorum is Quorum.IN
