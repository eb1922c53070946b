"""The admin pages' network and security-group forms without a browser
(engine/ui/admin_network_forms.py): create a network (the new network's page follows its
operation), create and delete a security group, add and remove its rules. For each: what
a user sees after it, the refusals by role (403) and for another project's object (404),
and bad input shown next to its field with what was typed kept."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from engine_seed import engine_context
from sqlalchemy.orm import Session
from starlette.testclient import TestClient
from web_ui_login import log_in

from corral.api.security_groups import SecurityGroupCreate, SgRuleCreate
from corral.engine.context import EngineContext
from corral.engine.db.models import Host, Network, Project, RoleAssignment
from corral.engine.services import networks
from corral.engine.services import security_groups as sgs


def _agent(request: httpx.Request) -> httpx.Response:
    """A stand-in agent that builds networks: their dry run passes, their build reports a
    bridge; anything else is refused."""
    path = request.url.path
    if request.method == "POST" and re.fullmatch(r"/v1/networks/[^/]+/check", path):
        return httpx.Response(200, json={"ok": True})
    if request.method == "PUT" and re.fullmatch(r"/v1/networks/[^/]+", path):
        return httpx.Response(200, json={"bridge": True})
    return httpx.Response(503, json={"code": "unavailable", "message": "stand-in"})


def _projects(s: Session, host: Host) -> None:
    """Projects a and b; b has a network of its own."""
    s.add_all([Project(name="a"), Project(name="b")])
    s.flush()
    s.add(Network(name="bnet", project="b", bridge="corralb", subnet="10.211.0.0/24",
                  gateway="10.211.0.1", dhcp_start="10.211.0.128", dhcp_end="10.211.0.254"))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    for ctx in engine_context(tmp_path, agent=_agent, prepare=_projects):
        sgs.create(ctx, SecurityGroupCreate(name="aweb", description="a's web"), "a")
        sgs.create(ctx, SecurityGroupCreate(name="bweb"), "b")
        yield ctx


def _operator(ctx: EngineContext) -> tuple[TestClient, str]:
    """otto: operator in project a only (networks and groups may be made and changed there)."""
    return log_in(ctx, "otto", "operator", project="a")


def _field_error(page: str, field: str) -> str:
    """The error shown next to a form field (its ``err-ID`` paragraph)."""
    found = re.search(rf'id="err-{field}" role="alert">([^<]*)<', page)
    assert found, f"no error next to {field}: " + page[page.find('class="card admin-form"'):][:2000]
    return html.unescape(found.group(1))


def _refused(b: TestClient, url: str, form: dict[str, str], field: str) -> tuple[str, str]:
    """The page a bad form post answers (a 4xx) and the error next to ``field``."""
    resp = b.post(url, data=form)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:500])
    return resp.text, _field_error(resp.text, field)


def _options(page: str, select_id: str) -> list[str]:
    found = re.search(rf'<select id="{select_id}"[^>]*>(.*?)</select>', page, re.S)
    assert found, select_id
    return re.findall(r'<option value="([^"]*)"', found.group(1))


# -- networks -------------------------------------------------------------------------------

def test_the_create_form_offers_the_projects_where_the_caller_may_create(
        ctx: EngineContext) -> None:
    admin, _ = log_in(ctx, "root")
    page = admin.get("/networks").text
    assert "Create network" in page
    assert _options(page, "net-project") == ["a", "b", "default"]
    assert _options(page, "net-mode") == ["nat", "routed", "isolated", "bridge"]
    more = page[page.find('<details class="more"'):page.find("</details>")]
    assert "<summary>More options</summary>" in more and not more.startswith(
        '<details class="more" open')  # closed until needed
    for field in ("gateway", "dhcp_start", "dhcp_end", "dns_domain", "vlan", "backend",
                  "bridge", "overlay", "vni"):
        assert f'id="net-{field}"' in more and f'for="net-{field}"' in more, field
    otto, _ = _operator(ctx)
    assert _options(otto.get("/networks").text, "net-project") == ["a"]
    ann, _ = log_in(ctx, "ann", "user", project="a")  # may attach, not create
    listed = ann.get("/networks")
    assert listed.status_code == 200 and "Create network" not in listed.text


def test_a_network_create_opens_its_page_which_follows_the_operation(
        ctx: EngineContext) -> None:
    b, csrf = _operator(ctx)
    resp = b.post("/networks", data={
        "csrf": csrf, "name": "anet", "project": "a", "mode": "routed",
        "subnet": "10.212.0.0/24", "gateway": "", "dhcp_start": "10.212.0.10",
        "dhcp_end": "10.212.0.20", "dns_domain": "a.lan", "vlan": "", "backend": "linuxbridge",
        "bridge": "", "overlay": "", "vni": ""}, follow_redirects=False)
    assert resp.status_code == 303, resp.text[:500]
    assert resp.headers["location"] == "/networks/anet"
    [op] = [op for op in ctx.ops.listing(limit=10, projects=["a"], engine_wide=False)
            if op.type == "network.create"]
    assert op.resources["networks"] == ["anet"]
    page = b.get("/networks/anet").text
    assert f'id="op-{op.id}"' in page and "network.create" in page  # its progress panel
    assert ctx.ops.wait(op.id, 10).status.value == "success"
    net = networks.get(ctx, "anet")
    assert (net.project, net.mode.value, net.subnet, net.gateway, net.dhcp_start, net.dhcp_end,
            net.dns_domain, net.status) == ("a", "routed", "10.212.0.0/24", "10.212.0.1",
                                            "10.212.0.10", "10.212.0.20", "a.lan", "ready")
    listed = b.get("/networks").text
    assert 'href="/networks/anet"' in listed
    assert "Delete network anet?" in b.get("/networks/anet").text


def test_vlan_and_vxlan_options_reach_the_network(ctx: EngineContext) -> None:
    b, csrf = log_in(ctx, "root")
    resp = b.post("/networks", data={"csrf": csrf, "name": "v20", "project": "b",
                                     "mode": "isolated", "vlan": "20", "backend": "ovs"},
                  follow_redirects=False)
    assert resp.status_code == 303, resp.text[:500]
    resp = b.post("/networks", data={"csrf": csrf, "name": "ov", "project": "default",
                                     "mode": "nat", "overlay": "vxlan", "vni": "5001"},
                  follow_redirects=False)
    assert resp.status_code == 303, resp.text[:500]
    v20, ov = networks.get(ctx, "v20"), networks.get(ctx, "ov")
    assert (v20.project, v20.vlan, v20.backend.value, v20.bridge) == ("b", 20, "ovs", "cr-ovs")
    assert (ov.overlay and ov.overlay.value, ov.vni) == ("vxlan", 5001)


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"name": ""}, "name", "name"),
    ({"name": "Bad Name!"}, "name", ""),
    ({"name": "bnet"}, "name", "already exists"),  # b's: names are engine-wide
    ({"subnet": "nonsense"}, "subnet", ""),
    ({"subnet": "10.211.0.0/25"}, "subnet", "overlaps network bnet"),
    ({"gateway": "10.99.0.1"}, "gateway", ""),
    ({"dhcp_start": "10.212.0.9"}, "dhcp_end", "both ends"),
    ({"vlan": "ten"}, "vlan", "not a number"),
    ({"vlan": "5000"}, "vlan", "4094"),
    ({"overlay": "vxlan"}, "vni", "vni"),
    ({"mode": "bridge"}, "bridge", "bridge"),
    ({"mode": "mesh"}, "mode", ""),
    ({"project": "b"}, "project", "may not create networks in project b"),
    ({"project": ""}, "project", "Choose a project"),
])
def test_bad_network_input_is_shown_next_to_its_field(
        ctx: EngineContext, change: dict[str, str], field: str, says: str) -> None:
    b, csrf = _operator(ctx)
    form = {"csrf": csrf, "name": "anet", "project": "a", "mode": "nat",
            "subnet": "10.212.0.0/24", **change}
    page, error = _refused(b, "/networks", form, f"net-{field}")
    assert says in error
    assert 'aria-invalid="true"' in page
    for key, value in form.items():  # what was typed stays
        if key not in ("csrf", "mode", "project", "overlay") and value:
            assert f'value="{html.escape(value)}"' in page, key
    more = field in ("gateway", "dhcp_end", "vlan", "vni", "bridge") or set(change) & {
        "gateway", "dhcp_start", "vlan", "overlay"}
    assert ('<details class="more" open' in page) == bool(more)
    assert [n.name for n in networks.list_networks(ctx)] == ["bnet", "default"]


def test_every_bad_network_field_is_said_at_once(ctx: EngineContext) -> None:
    """What the form and the request's types refuse, together (the engine's checks of
    addresses and conflicts come once those pass)."""
    b, csrf = _operator(ctx)
    resp = b.post("/networks", data={"csrf": csrf, "name": "", "project": "b",
                                     "mode": "mesh", "vlan": "ten", "vni": "0"})
    assert resp.status_code == 422
    for field in ("name", "project", "mode", "vlan", "vni"):
        assert _field_error(resp.text, f"net-{field}")


def test_network_create_is_refused_to_a_role_without_it(ctx: EngineContext) -> None:
    ann, csrf = log_in(ctx, "ann", "user", project="a")
    resp = ann.post("/networks", data={"csrf": csrf, "name": "x", "project": "a"})
    assert resp.status_code == 403
    otto, _ = _operator(ctx)
    assert otto.post("/networks", data={"name": "x", "project": "a"}).status_code == 403  # no CSRF
    assert [n.name for n in networks.list_networks(ctx)] == ["bnet", "default"]


# -- security groups ------------------------------------------------------------------------

def test_a_group_create_opens_its_page_and_shows_in_the_list(ctx: EngineContext) -> None:
    b, csrf = _operator(ctx)
    listed = b.get("/security-groups").text
    assert "Create security group" in listed and _options(listed, "sg-project") == ["a"]
    resp = b.post("/security-groups", data={"csrf": csrf, "name": "api", "project": "a",
                                            "description": "the API servers"},
                  follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/security-groups/api"
    page = b.get("/security-groups/api").text
    assert "the API servers" in page and "egress" in page  # the default rule: out, anywhere
    assert 'href="/security-groups/api"' in b.get("/security-groups").text
    assert sgs.get(ctx, "api").project == "a"


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"name": ""}, "name", "name"),
    ({"name": "no good"}, "name", ""),
    ({"name": "aweb"}, "name", "already exists"),
    ({"description": "x" * 300}, "description", "255"),
    ({"project": "b"}, "project", "may not create security groups in project b"),
])
def test_bad_group_input_is_shown_next_to_its_field(
        ctx: EngineContext, change: dict[str, str], field: str, says: str) -> None:
    b, csrf = _operator(ctx)
    form = {"csrf": csrf, "name": "api", "project": "a", "description": "", **change}
    page, error = _refused(b, "/security-groups", form, f"sg-{field}")
    assert says in error
    if form["name"]:
        assert f'value="{html.escape(form["name"])}"' in page
    assert sorted(g.name for g in sgs.list_groups(ctx)) == ["aweb", "bweb"]


def test_group_delete_asks_naming_it_and_follows_role_and_project(ctx: EngineContext) -> None:
    otto, csrf = _operator(ctx)
    page = otto.get("/security-groups/aweb").text
    assert 'data-confirm="Delete security group aweb?' in page
    assert otto.get("/security-groups/bweb").status_code == 404
    assert otto.post("/security-groups/bweb/delete", data={"csrf": csrf}).status_code == 404
    ann, acsrf = log_in(ctx, "ann", "user", project="a")
    assert "Delete security group" not in ann.get("/security-groups/aweb").text
    assert ann.post("/security-groups/aweb/delete", data={"csrf": acsrf}).status_code == 403
    # olga: operator in a, viewer in b: reads bweb, may not delete it
    olga, ocsrf = log_in(ctx, "olga", "operator", project="a")
    with ctx.db.session() as s:
        s.add(RoleAssignment(subject_kind="user", subject="olga", role="viewer", project="b"))
    assert olga.get("/security-groups/bweb").status_code == 200
    assert olga.post("/security-groups/bweb/delete", data={"csrf": ocsrf}).status_code == 403
    resp = otto.post("/security-groups/aweb/delete", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/security-groups"
    assert 'href="/security-groups/aweb"' not in otto.get("/security-groups").text
    assert sorted(g.name for g in sgs.list_groups(ctx)) == ["bweb"]


def test_a_group_named_by_a_rule_is_not_deleted(ctx: EngineContext) -> None:
    sgs.create(ctx, SecurityGroupCreate(name="db"), "a")
    sgs.add_rule(ctx, "db", SgRuleCreate(direction="ingress", remote_group="aweb"))
    otto, csrf = _operator(ctx)
    resp = otto.post("/security-groups/aweb/delete", data={"csrf": csrf})
    assert resp.status_code == 409 and "remove those rules first" in resp.text
    assert sgs.get(ctx, "aweb").name == "aweb"


# -- rules ----------------------------------------------------------------------------------

def test_a_rule_is_added_then_removed_with_a_confirmation_naming_it(ctx: EngineContext) -> None:
    b, csrf = _operator(ctx)
    page = b.get("/security-groups/aweb").text
    assert "Add rule" in page and _options(page, "rule-remote_group") == ["", "aweb"]
    resp = b.post("/security-groups/aweb/rules", data={
        "csrf": csrf, "direction": "ingress", "protocol": "tcp", "port": "8000-8100",
        "cidr": "10.0.0.0/8", "remote_group": ""}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/security-groups/aweb"
    [rule] = [r for r in sgs.get(ctx, "aweb").rules if r.direction.value == "ingress"]
    assert (rule.protocol.value, rule.port_min, rule.port_max, rule.cidr) == (
        "tcp", 8000, 8100, "10.0.0.0/8")
    page = b.get("/security-groups/aweb").text
    assert ("Remove rule ingress tcp 8000-8100 from 10.0.0.0/8 from security group aweb?"
            in page)
    assert 'aria-label="Remove rule ingress tcp 8000-8100 from 10.0.0.0/8"' in page
    resp = b.post(f"/security-groups/aweb/rules/{rule.id}/delete", data={"csrf": csrf},
                  follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/security-groups/aweb"
    assert [r.direction.value for r in sgs.get(ctx, "aweb").rules] == ["egress"]
    assert b.post(f"/security-groups/aweb/rules/{rule.id}/delete",
                  data={"csrf": csrf}).status_code == 404  # gone


def test_a_rule_may_name_a_group_as_its_other_side(ctx: EngineContext) -> None:
    b, csrf = _operator(ctx)
    resp = b.post("/security-groups/aweb/rules", data={
        "csrf": csrf, "direction": "ingress", "protocol": "icmp", "remote_group": "aweb"},
        follow_redirects=False)
    assert resp.status_code == 303, resp.text[:500]
    assert "ingress icmp from group aweb" in b.get("/security-groups/aweb").text


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"port": "ssh"}, "port", "not a port"),
    ({"port": "22", "protocol": "icmp"}, "port", "tcp and udp only"),
    ({"port": "99999"}, "port", "65535"),
    ({"port": "100-10"}, "port", "reversed"),
    ({"cidr": "10.0.0.1/8"}, "cidr", "host bits"),
    ({"cidr": "10.0.0.0/8", "remote_group": "aweb"}, "cidr", "not both"),
    ({"remote_group": "bweb"}, "remote_group", "not found"),  # another project's
    ({"remote_group": "nothere"}, "remote_group", "not found"),
    ({"direction": "sideways"}, "direction", ""),
    ({"protocol": "sctp"}, "protocol", ""),
])
def test_bad_rule_input_is_shown_next_to_its_field(
        ctx: EngineContext, change: dict[str, str], field: str, says: str) -> None:
    b, csrf = _operator(ctx)
    form = {"csrf": csrf, "direction": "ingress", "protocol": "tcp", "port": "22",
            "cidr": "", "remote_group": "", **change}
    page, error = _refused(b, "/security-groups/aweb/rules", form, f"rule-{field}")
    assert says in error
    for key in ("port", "cidr"):
        if form[key]:
            assert f'value="{html.escape(form[key])}"' in page, key
    assert len(sgs.get(ctx, "aweb").rules) == 1  # the default egress rule only


def test_a_rule_twice_is_refused_on_the_form(ctx: EngineContext) -> None:
    b, csrf = _operator(ctx)
    form = {"csrf": csrf, "direction": "egress", "protocol": "any", "cidr": "0.0.0.0/0"}
    resp = b.post("/security-groups/aweb/rules", data=form)
    assert resp.status_code == 409
    assert "already has this rule" in resp.text and "The rule was not added" in resp.text


def test_rules_follow_role_and_project(ctx: EngineContext) -> None:
    [brule] = sgs.get(ctx, "bweb").rules
    otto, csrf = _operator(ctx)
    rule = {"csrf": csrf, "direction": "ingress", "protocol": "tcp", "port": "22"}
    assert otto.post("/security-groups/bweb/rules", data=rule).status_code == 404
    assert otto.post(f"/security-groups/bweb/rules/{brule.id}/delete",
                     data={"csrf": csrf}).status_code == 404
    ann, acsrf = log_in(ctx, "ann", "user", project="a")
    page = ann.get("/security-groups/aweb").text
    assert "Add rule" not in page and "/rules/" not in page  # no form, no Remove buttons
    assert ann.post("/security-groups/aweb/rules",
                    data={**rule, "csrf": acsrf}).status_code == 403
    [arule] = sgs.get(ctx, "aweb").rules
    assert ann.post(f"/security-groups/aweb/rules/{arule.id}/delete",
                    data={"csrf": acsrf}).status_code == 403
    assert len(sgs.get(ctx, "bweb").rules) == 1 and len(sgs.get(ctx, "aweb").rules) == 1
