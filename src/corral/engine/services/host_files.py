"""What a request may name on a host's filesystem or network, checked at the API edge.

Image import sources (a path or a URL), OVA files (read or written) and pool directories are
judged by corral.safepaths and corral.safeurls before any operation exists (422/409 naming
the field); the agent, which has the filesystem, checks them again with its own settings
(`corral up` gives both the same). The engine's view of corral's own directories: its data
dir, and each host's state and storage dirs (from the host's facts).
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

from corral.engine.context import EngineContext
from corral.engine.db.models import Host, StoragePool
from corral.errors import InvalidInput
from corral.safepaths import PathPolicy
from corral.safeurls import UrlPolicy


def _host_dirs(facts: dict[str, object]) -> list[Path]:
    return [Path(str(facts[key])) for key in ("state_dir", "storage_dir") if facts.get(key)]


def path_policy(ctx: EngineContext, pools_of_host: str | None = None,
                every_pool: bool = True) -> PathPolicy:
    """The policy now. ``every_pool=False``: only the pools a new pool on ``pools_of_host``
    could clash with (that host's dir pools and the shared ones)."""
    protected: list[Path] = [ctx.settings.data_dir]
    homes: list[Path] = []
    with ctx.db.session() as s:
        for host in s.query(Host):
            protected += _host_dirs(host.facts or {})
            if (host.facts or {}).get("storage_dir"):
                homes.append(Path(str(host.facts["storage_dir"])) / "pools")
        pools = [Path(p.path) for p in s.query(StoragePool)
                 if p.path and (every_pool or p.host_id is None or pools_of_host is None
                                or p.host_id == pools_of_host)]
    return PathPolicy(import_dirs=ctx.settings.all_import_dirs, protected=tuple(protected),
                      pools=tuple(pools), pool_homes=tuple(homes))


def url_policy(ctx: EngineContext) -> UrlPolicy:
    """Loopback, link-local and this machine's addresses, and the agents' (the management
    network) are refused unless ``import_allow_cidrs`` permits them."""
    deny: list[str] = []
    with ctx.db.session() as s:
        urls = [h.url for h in s.query(Host)]
    for url in urls:
        name = urlsplit(url).hostname
        if not name:
            continue
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            continue
        deny += [str(info[4][0]).split("%", 1)[0] for info in infos]
    return UrlPolicy.build(ctx.settings.import_allow_cidrs, deny)


def check_image_source(ctx: EngineContext, source: str) -> None:
    """An image import's ``source``: a URL whose host may be reached, or a file that may
    be read (InvalidInput naming ``source``)."""
    if urlsplit(source).scheme:
        url_policy(ctx).check_url(source)
        return
    if not Path(source).is_absolute():
        raise InvalidInput("source must be an http(s) URL or an absolute path", field="source")
    if not path_policy(ctx).check_read(source, "source").is_file():
        raise InvalidInput(f"source {source} is not a readable file", field="source")


def check_read(ctx: EngineContext, path: str, field: str) -> PathPolicy:
    """A file a request names for reading (an OVA); the policy, to open it with."""
    policy = path_policy(ctx)
    policy.check_read(path, field)
    return policy


def check_write(ctx: EngineContext, path: str, field: str) -> Path:
    """A file a request names for the host to write (an OVA export)."""
    return path_policy(ctx).check_write(path, field)


def check_pool_path(ctx: EngineContext, path: str, host_id: str | None) -> None:
    """A new pool's directory (``host_id``: its one host; None: a shared pool)."""
    path_policy(ctx, host_id, every_pool=False).check_pool(path, "path")


def check_ceph_conf(ctx: EngineContext, path: str) -> None:
    """An rbd pool's ceph.conf: what the hosts' ceph tools read."""
    path_policy(ctx).check_config(path, "ceph_conf")
