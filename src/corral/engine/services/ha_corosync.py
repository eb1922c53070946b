"""The corosync.conf of the cluster's hosts (`corral ha corosync-conf`): what an admin puts
on every host so that their agents report one membership (docs/ha.md "Quorum (corosync)")."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

from corral.agent_api.reports import CorosyncFiles
from corral.api.ha import CorosyncConf, CorosyncNode
from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.errors import Conflict, CorralError, NotFound
from corral.ha import corosync_conf

LOGFILE = "/var/log/corosync/corosync.log"  # Debian's


def _hosts(ctx: EngineContext) -> tuple[tuple[str, str], ...]:
    """(name, address) of every host: all the config depends on, besides the key."""
    with ctx.db.session() as s:
        return tuple(sorted((name, urlsplit(url).hostname or "")
                            for name, url in s.query(Host.name, Host.url)))


def render(ctx: EngineContext, cluster_name: str = "corral",
           rows: tuple[tuple[str, str], ...] | None = None) -> CorosyncConf:
    """Every host of the engine, by name, at the address the engine reaches its agent."""
    rows = _hosts(ctx) if rows is None else rows
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


AUTHKEY_BYTES = 256  # what corosync-keygen makes


def authkey(ctx: EngineContext) -> bytes:
    """The cluster's knet key (DATA_DIR/corosync-authkey, 0600), made at its first use."""
    path = ctx.settings.data_dir / "corosync-authkey"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(AUTHKEY_BYTES))
    return path.read_bytes()


def files(ctx: EngineContext,
          rows: tuple[tuple[str, str], ...] | None = None) -> CorosyncFiles:
    """corosync.conf and the authkey, for the agents that keep them (`--corosync-conf`)."""
    conf, key = render(ctx, rows=rows).text, authkey(ctx)
    digest = hashlib.sha256(conf.encode() + b"\0" + key).hexdigest()
    return CorosyncFiles(conf=conf, authkey=base64.b64encode(key).decode(), digest=digest)


# data dir → (hosts, digest) last computed: every report's answer carries the digest, and
# it changes only with the hosts (the key, the engine's own file, is made once).
_last: dict[Path, tuple[tuple[tuple[str, str], ...], str | None]] = {}


def digest(ctx: EngineContext) -> str | None:
    """``files(ctx).digest``; None when the hosts give no config (a nodeid clash). Rendered
    again only when the hosts changed."""
    rows = _hosts(ctx)
    seen = _last.get(ctx.settings.data_dir)
    if seen is not None and seen[0] == rows:
        return seen[1]
    try:
        got: str | None = files(ctx, rows).digest
    except CorralError:
        got = None
    _last[ctx.settings.data_dir] = (rows, got)
    return got
