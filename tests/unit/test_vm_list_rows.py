"""The VM list reads what its VMs refer to (image, host, first NIC's network and MAC, root
pool, group) once for the whole list: each VM is shown as one VM's own read shows it, and
only the projects asked are listed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_seed import seed_node

from corral.engine.app import build_context
from corral.engine.context import EngineContext, EngineSettings
from corral.engine.db.models import Image, Network, Nic, Project, StoragePool, Vm, VmGroup
from corral.engine.services import vms


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    c = build_context(EngineSettings(data_dir=tmp_path))
    with c.db.session() as s:
        host = seed_node(s, "/s", "/c")
        image = s.query(Image).filter_by(name="tiny").one()
        default = s.query(Network).filter_by(name="default").one()
        lan = Network(name="lan", bridge="corral9", subnet="10.9.0.0/24", gateway="10.9.0.1")
        pool = StoragePool(name="fast", type="dir", path="/fast", status="ready")
        group = VmGroup(name="web", policy="anti-affinity", project="a")
        s.add_all([Project(name="a"), lan, pool])
        s.flush()
        s.add(group)
        s.flush()

        def vm(name: str, project: str, **kw: object) -> Vm:
            row = Vm(name=name, image_id=image.id, cpus=1, memory_mib=64, disk_bytes=1 << 30,
                     state="stopped", project=project, **kw)
            s.add(row)
            s.flush()
            return row

        two = vm("a.two-nics", "a", host_id=host.id, group_id=group.id)
        # idx 1 is made first (rowid order): the list must still show idx 0, as a read does
        s.add(Nic(vm_id=two.id, network_id=lan.id, mac="52:54:00:00:00:02", idx=1))
        s.add(Nic(vm_id=two.id, network_id=default.id, mac="52:54:00:00:00:01", idx=0))
        pooled = vm("a.pooled", "a", root_pool_id=pool.id)
        s.add(Nic(vm_id=pooled.id, network_id=lan.id, mac="52:54:00:00:00:03", idx=0))
        vm("a.no-nic", "a")
        other = vm("web", "default", host_id=host.id)
        s.add(Nic(vm_id=other.id, network_id=default.id, mac="52:54:00:00:00:04", idx=0))
    yield c
    c.db.engine.dispose()


def test_each_listed_vm_is_shown_as_its_own_read_shows_it(ctx: EngineContext) -> None:
    listed = vms.list_vms(ctx)
    assert [(v.project, v.name) for v in listed] == [
        ("a", "no-nic"), ("a", "pooled"), ("a", "two-nics"), ("default", "web")]
    full = {"a": "a.", "default": ""}
    assert listed == [vms.get(ctx, full[v.project] + v.name) for v in listed]
    two = listed[2]
    assert (two.network, two.mac, two.host, two.group) == \
        ("default", "52:54:00:00:00:01", "h1", "web")
    assert (listed[1].pool, listed[1].network, listed[1].host) == ("fast", "lan", None)
    assert (listed[0].network, listed[0].mac) == (None, None)


def test_only_the_projects_asked_are_listed(ctx: EngineContext) -> None:
    assert [v.name for v in vms.list_vms(ctx, ["default"])] == ["web"]
    assert [v.name for v in vms.list_vms(ctx, ["a"])] == ["no-nic", "pooled", "two-nics"]
    assert vms.list_vms(ctx, []) == []
