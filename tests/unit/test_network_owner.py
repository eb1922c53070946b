"""Which corral node a bridge belongs to (interface alias, else the dnsmasq serving it), and
what the agent does about it: refuse another node's bridge, stamp an unowned one, name the
owner in an overlap, keep another node's bridge on delete. Fed ``ip -j link`` shaped dicts;
nothing here touches the host."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

import pytest

from corral.agent.network import NetworkSpec, bridge, check_network, dnsmasq, manager, routes
from corral.agent.network import owner as ownership
from corral.errors import Conflict

A = "/var/lib/corral/agent"  # the other node's agent dir
B_NETS = Path("/srv/other/agent/networks")  # this node's networks dir
B = "/srv/other/agent"
SPEC = NetworkSpec(name="default", bridge="corral0", subnet="10.210.0.0/24",
                   gateway="10.210.0.1", dhcp_start="10.210.0.128", dhcp_end="10.210.0.254")


def link(name: str = "corral0", alias: str | None = None, kind: str = "bridge") -> dict[str, Any]:
    info: dict[str, Any] = {"ifname": name, "flags": ["UP"], "linkinfo": {"info_kind": kind}}
    if alias is not None:
        info["ifalias"] = alias
    return info


def test_owner_ids_and_aliases() -> None:
    assert ownership.owner_of(B_NETS) == B
    assert ownership.alias_of(B) == "corral:/srv/other/agent"
    assert ownership.node_dir(A) == "/var/lib/corral"
    assert ownership.node_dir("/opt/agent-state") == "/opt/agent-state"
    assert ownership.owner_of_conf(PurePath(f"{A}/networks/default/dnsmasq.conf")) == A
    long = "/" + "d" * 400
    assert len(ownership.alias_of(long)) == ownership.ALIAS_MAX
    assert ownership.same(long, long + "/more")  # as far as an alias can tell


@pytest.mark.parametrize(
    ("info", "served", "other"),
    [
        (link(alias=f"corral:{A}"), {}, A),  # another node's alias
        (link(alias=f"corral:{B}"), {}, None),  # ours
        (link(), {}, None),  # no alias, nobody serves it: adopted
        (link(), {"corral0": PurePath(f"{A}/networks/default/dnsmasq.conf")}, A),  # older node
        (link(), {"corral0": PurePath(f"{B}/networks/default/dnsmasq.conf")}, None),
        (link(alias="uplink to rack 3"), {}, None),  # a person's alias: not a corral owner
        (link(alias="corral:"), {}, None),
        (None, {}, None),  # no such bridge
    ],
)
def test_foreign(info: dict[str, Any] | None, served: dict[str, PurePath],
                 other: str | None) -> None:
    assert ownership.foreign(info, B, served) == other


def test_needs_stamp_keeps_any_alias() -> None:
    assert ownership.needs_stamp(link())
    assert ownership.needs_stamp(link(alias=""))
    assert not ownership.needs_stamp(link(alias=f"corral:{B}"))
    assert not ownership.needs_stamp(link(alias="a person's note"))
    assert not ownership.needs_stamp(None)


def test_foreign_devices() -> None:
    links = [link("lo", kind="loopback"), link("eth0", alias="uplink"),
             link("corral0", alias=f"corral:{A}"), link("corral1", alias=f"corral:{B}"),
             link("virbr0")]
    served = {"virbr0": PurePath("/x/agent/networks/n/dnsmasq.conf")}
    assert ownership.foreign_devices(links, B, served) == {
        "corral0": "/var/lib/corral", "virbr0": "/x"}
    assert ownership.foreign_devices(links, None) == {
        "corral0": "/var/lib/corral", "corral1": "/srv/other"}


def test_refusal_names_the_node() -> None:
    exc = ownership.refusal("corral0", A)
    assert exc.field == "bridge"
    assert exc.details == {"bridge": "corral0", "owner": "/var/lib/corral"}
    assert "belongs to the corral node in /var/lib/corral" in exc.message
    assert "choose another bridge name and subnet" in exc.message


class FakeIp:
    """``bridge.link`` and ``_cmd.run`` of the bridge module, recording commands."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, info: dict[str, Any] | None) -> None:
        self.info = info
        self.commands: list[list[str]] = []
        monkeypatch.setattr(bridge, "link", lambda name: self.info)
        monkeypatch.setattr(bridge._cmd, "run", self.run)
        monkeypatch.setattr(dnsmasq, "served_devices", dict)

    def run(self, argv: list[str], **_kw: Any) -> Any:
        self.commands.append(argv)
        return type("Done", (), {"returncode": 0, "stderr": "", "stdout": ""})()


def test_ensure_bridge_refuses_another_nodes_bridge(monkeypatch: pytest.MonkeyPatch) -> None:
    ip = FakeIp(monkeypatch, link(alias=f"corral:{A}"))
    with pytest.raises(Conflict, match="belongs to the corral node in /var/lib/corral"):
        bridge.ensure_bridge("corral0", None, owner=B)
    assert ip.commands == []  # nothing changed


def test_ensure_bridge_stamps_new_and_unowned(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = ["ip", "link", "set", "dev", "corral0", "alias", f"corral:{B}"]
    ip = FakeIp(monkeypatch, None)
    assert bridge.ensure_bridge("corral0", None, owner=B)
    assert stamp in ip.commands
    ip = FakeIp(monkeypatch, link())  # made by an older corral: adopted
    assert not bridge.ensure_bridge("corral0", None, owner=B)
    assert stamp in ip.commands
    ip = FakeIp(monkeypatch, link(alias=f"corral:{B}"))  # ours already
    bridge.ensure_bridge("corral0", None, owner=B)
    assert stamp not in ip.commands
    ip = FakeIp(monkeypatch, link(alias="note"))
    bridge.ensure_bridge("corral0", None, owner=B)
    assert stamp not in ip.commands


def test_check_network_refuses_before_any_change(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeIp(monkeypatch, link(alias=f"corral:{A}"))
    monkeypatch.setattr(manager, "check_route_overlap", lambda *a: pytest.fail("too far"))
    with pytest.raises(Conflict) as caught:
        check_network(SPEC, B_NETS)
    assert caught.value.field == "bridge"
    assert caught.value.details["owner"] == "/var/lib/corral"


def test_check_network_joins_a_bridge_in_bridge_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bridge mode joins a host bridge: whose it is does not matter."""
    FakeIp(monkeypatch, link(alias=f"corral:{A}"))
    check_network(NetworkSpec(name="lan", bridge="corral0", mode="bridge"), B_NETS)


def test_delete_keeps_another_nodes_bridge(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeIp(monkeypatch, link(alias=f"corral:{A}"))
    assert manager._others_devices(SPEC, B) == {"corral0": "/var/lib/corral"}
    FakeIp(monkeypatch, link(alias=f"corral:{B}"))
    assert manager._others_devices(SPEC, B) == {}
    vlan = SPEC.model_copy(update={"bridge": "cr-trunk", "vlan": 5})
    FakeIp(monkeypatch, link(alias=f"corral:{A}"))
    assert set(manager._others_devices(vlan, B)) == {"cr-trunk", vlan.access_bridge}


ROUTES = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "10.210.0.0/24", "dev": "corral0", "protocol": "kernel"},
]
ADDRS = [{"ifname": "corral0", "addr_info": [
    {"family": "inet", "local": "10.210.0.1", "prefixlen": 24}]}]


def test_overlap_names_the_owner() -> None:
    owners = {"corral0": "/var/lib/corral"}
    found = routes.find_overlaps("10.210.0.0/24", "corral1", ROUTES, ADDRS, owners)
    assert found == [
        "route 10.210.0.0/24 dev corral0 (bridge of the corral node in /var/lib/corral)",
        "address 10.210.0.1/24 on corral0 (bridge of the corral node in /var/lib/corral)",
    ]
    assert routes.find_overlaps("10.210.0.0/24", "corral1", ROUTES, ADDRS) == [
        "route 10.210.0.0/24 dev corral0", "address 10.210.0.1/24 on corral0"]
    assert routes.overlap_owners("10.210.0.0/24", "corral1", ROUTES, ADDRS, owners) == [
        "/var/lib/corral"]
    assert routes.overlap_owners("10.211.0.0/24", "corral1", ROUTES, ADDRS, owners) == []


def test_check_route_overlap_error(monkeypatch: pytest.MonkeyPatch) -> None:
    tables = {"route": ROUTES, "addr": ADDRS}
    monkeypatch.setattr(routes._cmd, "run_json", lambda argv, **_: tables[argv[3]])
    asked: list[str | None] = []
    monkeypatch.setattr(ownership, "host_foreign_devices",
                        lambda owner: asked.append(owner) or {"corral0": "/var/lib/corral"})
    with pytest.raises(Conflict) as caught:
        routes.check_route_overlap("10.210.0.0/24", "corral1", B)
    assert asked == [B]
    assert caught.value.field == "subnet"
    assert caught.value.details["owner"] == "/var/lib/corral"
    assert "(bridge of the corral node in /var/lib/corral)" in caught.value.message
    routes.check_route_overlap("10.211.0.0/24", "corral1", B)  # free: owners never read
    assert asked == [B]


def test_config_device(tmp_path: Path) -> None:
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("# corral network default: generated, do not edit\nbind-interfaces\n"
                    "interface=corral0\n")
    assert dnsmasq.config_device(conf) == "corral0"
    conf.write_text("interface=eth0\n")  # not one of ours
    assert dnsmasq.config_device(conf) is None
    assert dnsmasq.config_device(tmp_path / "missing") is None
