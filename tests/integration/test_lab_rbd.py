"""`corral lab up --storage rbd`: the one-machine Ceph cluster in the lab, registered as pool
`rbd` on every lab host; `lab down` stops its daemons with the rest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labutil import LabCli, assert_nothing_left, lab_session, pids_mentioning

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab() -> Iterator[LabCli]:
    with lab_session(hosts=2, storage="rbd") as cli:
        yield cli


def test_rbd_pool_is_ready_and_holds_volumes(lab: LabCli) -> None:
    pools = {p["name"]: p for p in lab.json("storage", "pool", "list")}
    assert pools["rbd"]["status"] == "ready" and pools["rbd"]["type"] == "rbd"
    assert pools["rbd"]["capacity"] > 0
    lab.run("volume", "create", "rbd/v1", "--size", "64M")
    volumes = {v["name"]: v for v in lab.json("volume", "list")}
    assert volumes["v1"]["size"] == 64 << 20
    # The Ceph daemons run in the engine's namespace, reachable by every lab host.
    ceph = [p for p in pids_mentioning(str(lab.root / "ceph")) if p]
    assert len(ceph) >= 5  # mon, mgr, 3 OSDs


def test_lab_down_stops_ceph_and_leaves_nothing(lab: LabCli) -> None:
    lab.run("lab", "down", timeout=120)
    assert_nothing_left(lab)
