"""GET /api/v1/ha/corosync-conf (`corral ha corosync-conf`): the corosync.conf of the
engine's hosts, for an admin to put on every host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_node import cli, ok, serving_node
from engine_seed import admin_client, client_as, engine_context
from sqlalchemy.orm import Session

from corral.api.ha import CorosyncConf
from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.ha.corosync_conf import stable_nodeid

PATH = "/api/v1/ha/corosync-conf"


def _more_hosts(s: Session, _h1: Host) -> None:
    s.add(Host(name="h3", url="https://10.0.0.3:8444", status="up"))
    s.add(Host(name="h2", url="https://node2.example.org:8444", status="unresponsive"))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[EngineContext]:
    yield from engine_context(tmp_path, prepare=_more_hosts)


def test_every_host_by_name_at_its_agents_address(ctx: EngineContext) -> None:
    resp = admin_client(ctx).get(PATH)
    assert resp.status_code == 200, resp.text
    conf = CorosyncConf.model_validate(resp.json())
    assert [(n.name, n.address, n.nodeid) for n in conf.nodes] == [
        ("h1", "127.0.0.1", stable_nodeid("h1")),
        ("h2", "node2.example.org", stable_nodeid("h2")),
        ("h3", "10.0.0.3", stable_nodeid("h3"))]
    text = conf.text
    assert "    cluster_name: corral\n" in text and "    crypto_cipher: aes256\n" in text
    assert f"        nodeid: {stable_nodeid('h2')}\n        name: h2\n" \
           "        ring0_addr: node2.example.org\n" in text
    assert "two_node" not in text  # three hosts: a majority decides
    assert "    logfile: /var/log/corosync/corosync.log\n" in text


def test_cluster_name_is_checked(ctx: EngineContext) -> None:
    c = admin_client(ctx)
    assert "cluster_name: lab-a\n" in c.get(PATH, params={"cluster_name": "lab-a"}).json()["text"]
    resp = c.get(PATH, params={"cluster_name": "no spaces"})
    assert resp.status_code == 422
    assert "cluster name" in resp.text


def test_readers_of_the_cluster_may_read_it_others_not(ctx: EngineContext) -> None:
    assert client_as(ctx, "viewer").get(PATH).status_code == 200
    assert client_as(ctx, "none", token="t2").get(PATH).status_code == 403


def test_cli_prints_the_file_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving_node(tmp_path, monkeypatch, prepare=_more_hosts) as node:
        text = ok("ha", "corosync-conf", "--cluster-name", "prod").output
        bad = cli("ha", "corosync-conf", "--cluster-name", "no spaces")
        assert bad.exit_code != 0 and "cluster name" in bad.output
        assert text == admin_client(node.ctx).get(
            PATH, params={"cluster_name": "prod"}).json()["text"]
        assert text.startswith("# Written by corral") and "name: h3\n" in text
