"""The corosync.conf of the cluster's hosts (`corral ha corosync-conf`): what an admin puts
on every host so that their agents report one membership (docs/ha.md "Quorum (corosync)")."""

from __future__ import annotations

from urllib.parse import urlsplit

from corral.api.ha import CorosyncConf, CorosyncNode
from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.errors import Conflict, NotFound
from corral.ha import corosync_conf

LOGFILE = "/var/log/corosync/corosync.log"  # Debian's


def render(ctx: EngineContext, cluster_name: str = "corral") -> CorosyncConf:
    """Every host of the engine, by name, at the address the engine reaches its agent."""
    with ctx.db.session() as s:
        rows = [(h.name, urlsplit(h.url).hostname or "") for h in s.query(Host).all()]
    if not rows:
        raise NotFound("the cluster has no hosts yet (`corral host token`, then `corral agent "
                       "join` on each)")
    nodes = sorted((corosync_conf.Node(corosync_conf.stable_nodeid(name), name, address)
                    for name, address in rows), key=lambda n: n.name)
    by_id: dict[int, str] = {}
    for node in nodes:
        if node.nodeid in by_id:
            raise Conflict(f"hosts {by_id[node.nodeid]} and {node.name} get the same corosync "
                           f"nodeid {node.nodeid}: rename one of them")
        by_id[node.nodeid] = node.name
    text = corosync_conf.render(cluster_name, nodes, LOGFILE, crypto=True)
    return CorosyncConf(nodes=[CorosyncNode(nodeid=n.nodeid, name=n.name, address=n.address)
                               for n in nodes], text=text)
