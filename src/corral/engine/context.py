"""What every engine service needs, built once at start: DB, events, operations, agents."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from corral.engine.agent_client import RECONNECT_S, AgentClient
from corral.engine.db.models import Host
from corral.engine.db.session import Database
from corral.engine.events import EventBus
from corral.engine.operations import OperationRunner
from corral.errors import NotFound


@dataclass
class EngineSettings:
    data_dir: Path
    db_url: str = ""
    reconcile_interval: float = 2.0
    agent_reconnect_s: float = RECONNECT_S  # how long a call waits for a restarting agent
    # How long a host's agent must stay unreachable (over at least two polls) before the
    # host is taken as unresponsive: one slow answer or a restart must not fence it.
    host_grace_s: float = 30.0
    # Thin provisioning: a new disk's virtual size may be this many times the free space of
    # its pool (1.0: it must fit, as if fully written; `corral up --storage-overcommit`).
    storage_overcommit: float = 1.0
    # Local files image and OVA imports may read (corral.safepaths): DATA_DIR/import, then
    # these (`corral up --import-dir`); the agent checks them again with its own.
    import_dirs: tuple[Path, ...] = ()
    # Ranges an import URL may reach although they are loopback, link-local or this host's
    # (corral.safeurls; `corral up --import-allow-cidr`): none by default.
    import_allow_cidrs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / 'corral.db'}"

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
    _agents: dict[str, AgentClient] = field(default_factory=dict)
    _agents_lock: threading.Lock = field(default_factory=threading.Lock)

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
                    client = AgentClient(host.url, host.token,
                                         reconnect_s=self.settings.agent_reconnect_s,
                                         transport=self.agent_transport)
                self._agents[host_id] = client
            return client

    def forget_agent(self, host_id: str) -> None:
        with self._agents_lock:
            client = self._agents.pop(host_id, None)
        if client is not None:
            client.close()
