"""The web UI's VM list in pages (services/vm_pages.py, engine/ui): filters, sort and the
page cut by the database, the same VMs a user saw before paging (its projects only), the
filters and sort kept across pages, "N shown of M", and bulk actions back on their page."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from engine_seed import engine_context
from sqlalchemy.orm import Session
from web_ui_login import log_in

from corral.api import Vm as VmOut
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Image, Project, Vm
from corral.engine.services import vm_pages, vms
from corral.engine.services.vm_pages import VmQuery

NAMES = re.compile(r'href="/vms/([^"]+)" class="vm-name"')
IN_A = 130  # more than a page


def _seed(s: Session, h1: Host) -> None:
    """Project a: 130 VMs (vm000..vm128 and x_y, running/stopped, on h1, h2 or none, sizes that
    tie); project b: 5 VMs on h3 only; ``plain`` in default."""
    image = s.query(Image).filter_by(name="tiny").one()
    h2 = Host(name="h2", url="http://127.0.0.1:9", status="up", facts={})
    h3 = Host(name="h3", url="http://127.0.0.1:9", status="up", facts={})
    s.add_all([h2, h3, Project(name="a"), Project(name="b")])
    s.flush()
    rows = [(f"a.vm{i:03d}", "a", ("running", "stopped", "paused")[i % 3],
             (h1, h2, None)[i % 3], 1 + i % 4, 256 * (1 + i % 2)) for i in range(IN_A - 1)]
    rows += [("a.x_y", "a", "stopped", h2, 2, 256)]
    rows += [(f"b.web{i}", "b", "running", h3, 1, 512) for i in range(5)]
    rows += [("plain", "default", "stopped", h1, 1, 64)]
    for name, project, state, host, cpus, memory in rows:
        s.add(Vm(name=name, image_id=image.id, host_id=host.id if host else None, cpus=cpus,
                 memory_mib=memory, disk_bytes=64 << 20, state=state, desired_power=state,
                 project=project))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path, prepare=_seed)


def _all_pages(ctx: EngineContext, projects: list[str], **asked: str) -> list[str]:
    """Every page of the query, one after another: the full names, in order."""
    seen: list[str] = []
    first = vm_pages.page(ctx, projects, VmQuery(**asked))  # type: ignore[arg-type]
    for number in range(1, first.pages + 1):
        got = vm_pages.page(ctx, projects, VmQuery(page=number, **asked))  # type: ignore[arg-type]
        assert got.page == number and len(got.vms) <= vm_pages.PAGE_SIZE
        seen += [_full(v) for v in got.vms]
    return seen


def _full(vm: VmOut) -> str:
    return vm.name if vm.project == "default" else f"{vm.project}.{vm.name}"


# What the list showed before paging (sorted in Python over every VM): the reference.
KEYS: dict[str, Callable[[VmOut], tuple[object, ...]]] = {
    "name": lambda v: (v.name, v.project),
    "state": lambda v: (str(v.state), v.project, v.name),
    "project": lambda v: (v.project, v.name),
    "host": lambda v: (v.host or "", v.project, v.name),
    "size": lambda v: (v.cpus, v.memory_mib, v.project, v.name),
}


def test_pages_in_every_sort_are_the_whole_list_sorted(ctx: EngineContext) -> None:
    projects = ["a", "b", "default"]
    every = vms.list_vms(ctx, projects)
    assert len(every) == IN_A + 6
    for key, sort_key in KEYS.items():
        for reverse in (False, True):
            expected = [_full(v) for v in sorted(every, key=sort_key, reverse=reverse)]
            got = _all_pages(ctx, projects, sort=("-" if reverse else "") + key)
            assert got == expected, (key, reverse)  # no VM twice, none skipped


def test_a_page_counts_what_it_shows_what_matched_and_what_the_caller_sees(
        ctx: EngineContext) -> None:
    first = vm_pages.page(ctx, ["a", "b", "default"], VmQuery())
    assert (len(first.vms), first.matched, first.total, first.pages, first.first) == (
        100, IN_A + 6, IN_A + 6, 2, 1)
    last = vm_pages.page(ctx, ["a", "b", "default"], VmQuery(page=99))  # past the end
    assert (last.page, len(last.vms), last.first) == (2, IN_A + 6 - 100, 101)
    assert vm_pages.page(ctx, ["a"], VmQuery(page=0)).page == 1
    running = vm_pages.page(ctx, ["a", "b", "default"], VmQuery(state="running"))
    assert running.matched == 43 + 5 and running.total == IN_A + 6
    assert {str(v.state) for v in running.vms} == {"running"}


def test_filters_run_in_the_database_as_they_did_in_python(ctx: EngineContext) -> None:
    projects = ["a", "b", "default"]
    every = vms.list_vms(ctx, projects)

    def kept(name: str = "", state: str = "", host: str = "", project: str = "") -> list[str]:
        return [_full(v) for v in sorted(every, key=KEYS["project"])
                if (not name or name.lower() in v.name.lower())
                and (not state or str(v.state) == state)
                and (not host or v.host == host) and (not project or v.project == project)]

    for asked in ({"name": "VM12"}, {"name": "web"}, {"name": "_"}, {"name": "%"},
                  {"name": "a."},  # the project's prefix is not part of the name
                  {"host": "h2"}, {"host": "h3", "state": "running"},
                  {"project": "b"}, {"project": "a", "state": "paused", "host": "h1"},
                  {"state": "crashed"}, {"host": "nowhere"}):
        assert _all_pages(ctx, projects, **asked) == kept(**asked), asked
    assert _all_pages(ctx, projects, name="_") == ["a.x_y"]  # LIKE's wildcards escaped


def test_a_user_sees_its_projects_vms_only_whatever_it_asks(ctx: EngineContext) -> None:
    only_a = vm_pages.page(ctx, ["a"], VmQuery(page=2))
    assert only_a.total == IN_A and {v.project for v in only_a.vms} == {"a"}
    assert only_a.hosts == ["h1", "h2"]  # h3 has b's VMs only: not offered
    for asked in (VmQuery(project="b"), VmQuery(host="h3"), VmQuery(name="web"),
                  VmQuery(name="plain")):
        got = vm_pages.page(ctx, ["a"], asked)
        assert (got.vms, got.matched, got.total) == ([], 0, IN_A), asked
    assert vm_pages.page(ctx, [], VmQuery()).total == 0  # a role in no project


_login = log_in


def _links(html: str) -> dict[str, str]:
    """The pager's links by their text."""
    nav = html[html.index('class="pager"'):]
    nav = nav[:nav.index("</nav>")]
    return {text: href.replace("&amp;", "&")
            for href, text in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', nav)}


def test_the_list_pages_keeping_its_filters_and_sort(ctx: EngineContext) -> None:
    b, _ = _login(ctx, "root")
    first = b.get("/vms")
    assert first.status_code == 200
    assert len(NAMES.findall(first.text)) == 100
    assert f"100 shown of {IN_A + 6} in 3 projects" in first.text
    assert "Page 1 of 2" in first.text and "(VMs 1\u2013100 of 136)" in first.text
    assert set(_links(first.text)) == {"Next", "Last"}
    second = b.get(_links(first.text)["Next"])
    assert len(NAMES.findall(second.text)) == 36 and "Page 2 of 2" in second.text
    assert set(NAMES.findall(first.text)).isdisjoint(NAMES.findall(second.text))

    # filtered and sorted: each page link keeps both; a sort link goes back to page 1
    page = b.get("/vms?state=stopped&sort=-name")
    assert "45 shown of 136 (45 match)" in page.text  # 43 stopped in a, x_y, plain
    assert "pager" not in page.text  # one page
    page = b.get("/vms?project=a&sort=-size&page=2")
    shown = NAMES.findall(page.text)
    assert len(shown) == 30 and "Page 2 of 2" in page.text
    expected = sorted(vms.list_vms(ctx, ["a"]), key=KEYS["size"], reverse=True)[100:]
    assert shown == [_full(v) for v in expected]
    links = _links(page.text)
    assert links["First"] == "/vms?project=a&sort=-size"
    assert links["Previous"] == "/vms?project=a&sort=-size"  # page 1: no page=
    assert 'href="/vms?project=a&amp;sort=size"' in page.text  # re-sort: page 1 again
    assert '<input type="hidden" name="sort" value="-size">' in page.text  # filter form
    for bad in ("x", "-1", "99999999999", ""):  # the first page, never an error
        assert b.get(f"/vms?page={bad}").status_code == 200


def test_a_project_user_pages_through_its_own_vms_only(ctx: EngineContext) -> None:
    b, _ = _login(ctx, "bea", "viewer", project="b")
    page = b.get("/vms")
    assert NAMES.findall(page.text) == [f"b.web{i}" for i in range(5)]
    assert "5 shown of 5" in page.text and "pager" not in page.text
    assert ">h3</option>" in page.text
    assert ">h1</option>" not in page.text  # not a host of its VMs
    theirs = b.get("/vms?project=a&host=h1&name=vm")
    assert NAMES.findall(theirs.text) == [] and "No virtual machine matches" in theirs.text


def test_bulk_actions_go_back_to_the_page_they_came_from(ctx: EngineContext) -> None:
    b, csrf = _login(ctx, "ann", "user", project="a")
    page = b.get("/vms?state=stopped&sort=-name&page=1")
    assert '<input type="hidden" name="back" value="/vms?state=stopped&amp;sort=-name">' \
        in page.text
    resp = b.post("/vms/bulk", data={"csrf": csrf, "action": "start", "vm": ["a.vm001"],
                                     "back": "/vms?state=stopped&sort=-name"},
                  follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/vms?state=stopped&sort=-name"
    elsewhere = b.post("/vms/bulk", data={"csrf": csrf, "action": "start", "vm": ["a.vm004"],
                                          "back": "https://evil.example/vms?x"},
                       follow_redirects=False)
    assert elsewhere.headers["location"] == "/vms"  # only the list itself
