"""What every engine service needs, built once at start: DB, events, operations, agents."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from corral.engine.agent_client import RECONNECT_S, AgentClient
from corral.engine.db.models import Host
from corral.engine.db.session import Database
from corral.engine.events import EventBus
from corral.engine.load_history import LoadHistory
from corral.engine.operations import OperationRunner
from corral.engine.tls import agent_ssl_context
from corral.errors import NotFound


@dataclass
class EngineSettings:
    data_dir: Path
    db_url: str = ""
    agent_reconnect_s: float = RECONNECT_S  # how long a call waits for a restarting agent
    # A host whose agent has not reported for this long is unresponsive (HA fences on it):
    # a few missed heartbeats (1 s apart) of a loaded machine must not do it.
    heartbeat_timeout_s: float = 5.0
    # Thin provisioning: a new disk's virtual size may be this many times the free space of
    # its pool (1.0: it must fit, as if fully written; `corral up --storage-overcommit`).
    storage_overcommit: float = 1.0
    # Local files image and OVA imports may read (corral.safepaths): DATA_DIR/import, then
    # these (`corral up --import-dir`); the agent checks them again with its own.
    import_dirs: tuple[Path, ...] = ()
    # Ranges an import URL may reach although they are loopback, link-local or this host's
    # (corral.safeurls; `corral up --import-allow-cidr`): none by default.
    import_allow_cidrs: tuple[str, ...] = ()
    # The scheduler (corral.engine.scheduler): how many vCPUs and how much memory a host
    # may be given per CPU and per MiB it has (Nova's defaults), and whether new VMs spread
    # over the hosts (most free first) or pack them (`corral up --cpu-overcommit ...`).
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    placement: str = "spread"  # spread | pack
    # The audit log keeps records this many days (`corral up --audit-retention`; 0: forever).
    audit_retention_days: int = 365

    def __post_init__(self) -> None:
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / 'corral.db'}"

    @property
    def tls_dir(self) -> Path:
        """The engine's CA and certificates (corral.engine.tls)."""
        return self.data_dir / "tls"

    @property
    def all_import_dirs(self) -> tuple[Path, ...]:
        return (self.data_dir / "import", *self.import_dirs)


@dataclass
class EngineContext:
    settings: EngineSettings
    db: Database
    bus: EventBus
    ops: OperationRunner
    # What carries requests to agents; None is the network (tests put a fake agent here).
    agent_transport: httpx.BaseTransport | None = None
    # Hosts' recent loads from their reports (the balancer's input).
    loads: LoadHistory = field(default_factory=LoadHistory)
    _agents: dict[str, AgentClient] = field(default_factory=dict)
    _agents_lock: threading.Lock = field(default_factory=threading.Lock)
    _agent_tls: ssl.SSLContext | None = None

    @classmethod
    def build(cls, settings: EngineSettings) -> EngineContext:
        db = Database(settings.db_url)
        bus = EventBus()
        return cls(settings=settings, db=db, bus=bus, ops=OperationRunner(db, bus))

    def agent(self, host_id: str) -> AgentClient:
        with self._agents_lock:
            client = self._agents.get(host_id)
            if client is None:
                with self.db.session() as s:
                    host = s.get(Host, host_id)
                    if host is None:
                        raise NotFound(f"host {host_id} not found")
                    client = AgentClient(host.url, self.agent_tls(),
                                         reconnect_s=self.settings.agent_reconnect_s,
                                         transport=self.agent_transport)
                self._agents[host_id] = client
            return client

    def agent_tls(self) -> ssl.SSLContext | None:
        """The engine's CA and client certificate for calls to agents (mutual TLS); None when
        a stand-in carries the calls (tests)."""
        if self.agent_transport is not None:
            return None
        if self._agent_tls is None:
            self._agent_tls = agent_ssl_context(self.settings.tls_dir)
        return self._agent_tls

    def forget_agent(self, host_id: str) -> None:
        with self._agents_lock:
            client = self._agents.pop(host_id, None)
        if client is not None:
            client.close()
