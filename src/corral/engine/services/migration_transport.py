"""How a live migration travels: the libvirt connection between the two hosts, the network
the guest's memory crosses, and whether it is encrypted (cluster settings ``migration.*``).

- Control: the source's libvirtd opens ``qemu+tls://ADDR/system`` to the target's (ADDR: the
  address the engine reaches the target's agent at, which its certificate names), with the
  source's own certificate (its agent adds ``pkipath``). No plain libvirt TCP port.
- Stream: QEMU sends memory and disks to ``tcp://ADDR`` where ADDR is the target's address
  in ``migration.network`` (hosts report every address of every interface); unset, the
  management address. A target without an address there is refused before anything moves.
- Encryption: ``migration.tls`` (on by default): QEMU's native TLS with the hosts'
  certificates from corral's CA, the target's checked against its host name (its
  certificate's name; the stream's URI is an address).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from corral.engine.context import EngineContext
from corral.engine.db.models import Host
from corral.engine.services import cluster_settings
from corral.errors import Conflict


@dataclass(frozen=True)
class Transport:
    """What the operation hands the source's agent (corral.agent_api.migration)."""

    destination: str  # libvirt URI of the target's libvirtd
    migrate_uri: str  # where QEMU streams to
    tls: bool
    tls_hostname: str | None
    converge_s: int
    network: str | None  # the cluster's migration network, for messages

    def params(self) -> dict[str, Any]:
        return {"destination": self.destination, "migrate_uri": self.migrate_uri,
                "tls": self.tls, "tls_hostname": self.tls_hostname,
                "converge_s": self.converge_s, "network": self.network}


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def management_address(host: Host) -> str:
    """The address (or name) the engine reaches the host's agent at."""
    return urlparse(host.url).hostname or host.name


def control_uri(host: Host) -> str:
    """The libvirt URI a source's libvirtd reaches ``host``'s by: the one its agent reports
    (fact ``migration_uri``), else ``qemu+tls`` to its management address."""
    reported = (host.facts or {}).get("migration_uri")
    if isinstance(reported, str) and reported:
        return reported
    return f"qemu+tls://{_bracket(management_address(host))}/system"


def address_in(host: Host, network: str) -> str | None:
    """``host``'s first reported address inside ``network``; None when it has none (or its
    agent reports no addresses)."""
    net = ipaddress.ip_network(network, strict=False)
    reported = (host.facts or {}).get("addresses")
    for entry in reported if isinstance(reported, list) else []:
        try:
            ip = ipaddress.ip_address(str(entry.get("address")))
        except (ValueError, AttributeError):
            continue
        if ip.version == net.version and ip in net:
            return str(ip)
    return None


def stream_address(host: Host, network: str | None) -> str:
    """Where QEMU sends the guest to: ``host``'s address in ``network``; 409 naming both when
    it has none there."""
    if network is None:
        return management_address(host)
    found = address_in(host, network)
    if found is None:
        raise Conflict(f"host {host.name} has no address in the migration network {network} "
                       "(cluster setting migration.network): give it one there, or "
                       "`corral cluster unset migration.network`", field="to",
                       host=host.name, network=network)
    return found


@dataclass(frozen=True)
class Settings:
    """The cluster's ``migration.*`` settings a migration reads (read before a DB session:
    each read is a session of its own)."""

    network: str | None
    tls: bool
    converge_s: int


def settings(ctx: EngineContext) -> Settings:
    net = cluster_settings.get(ctx, "migration.network")
    converge = cluster_settings.get(ctx, "migration.converge_s")
    return Settings(network=str(net) if net else None,
                    tls=bool(cluster_settings.get(ctx, "migration.tls")),
                    converge_s=converge if isinstance(converge, int) else 600)


def transport(target: Host, cfg: Settings) -> Transport:
    """How a migration to ``target`` travels with the settings ``cfg``; 409 when the target
    has no address in the migration network."""
    return Transport(destination=control_uri(target),
                     migrate_uri=f"tcp://{_bracket(stream_address(target, cfg.network))}",
                     tls=cfg.tls, tls_hostname=target.name if cfg.tls else None,
                     converge_s=cfg.converge_s, network=cfg.network)
