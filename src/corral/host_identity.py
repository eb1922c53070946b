"""What an agent keeps from joining: its key and certificate, the engine's CA, the engine's
client certificate (the only one it accepts), and where the engine is.

Files in STATE_DIR/identity (keys 0600): key.pem, cert.pem, ca.pem, engine.pem, engine.json.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path

from corral.errors import Unavailable
from corral.node.paths import write_private
from corral.pki import engine_client_context


@dataclass(frozen=True)
class Identity:
    dir: Path

    @classmethod
    def of(cls, state_dir: Path) -> Identity:
        return cls(state_dir / "identity")

    @property
    def key(self) -> Path:
        return self.dir / "key.pem"

    @property
    def cert(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def engine_cert(self) -> Path:
        return self.dir / "engine.pem"

    @property
    def _engine_json(self) -> Path:
        return self.dir / "engine.json"

    def exists(self) -> bool:
        return all(p.exists() for p in (self.key, self.cert, self.ca, self.engine_cert,
                                        self._engine_json))

    def require(self) -> Identity:
        if not self.exists():
            raise Unavailable(f"this agent has not joined a cluster ({self.dir} is incomplete): "
                              "run `corral agent join ENGINE_URL --token TOKEN` "
                              "(a token comes from `corral host token` on the engine)")
        return self

    def save(self, key_pem: bytes, cert_pem: str, ca_pem: str, engine_pem: str,
             engine_url: str, name: str, url: str) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.key, key_pem)
        self.cert.write_text(cert_pem)
        self.ca.write_text(ca_pem)
        self.engine_cert.write_text(engine_pem)
        self._engine_json.write_text(json.dumps(
            {"engine_url": engine_url, "name": name, "url": url}, indent=2) + "\n")

    def _info(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self._engine_json.read_text())
        return data

    @property
    def engine_url(self) -> str:
        return self._info()["engine_url"]

    @property
    def name(self) -> str:
        return self._info()["name"]

    @property
    def url(self) -> str:
        """Where the engine reaches this agent, as it was told at join."""
        return self._info()["url"]

    def server_context(self) -> ssl.SSLContext:
        """The agent's TLS server: it shows its certificate and accepts one client
        certificate only, the engine's, pinned as a trust anchor of its own (a partial
        chain): another host's certificate from the same CA does not pass."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(self.engine_cert))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    def engine_context(self) -> ssl.SSLContext:
        """The agent calling the engine: trusts the CA only, shows its host certificate."""
        ctx = engine_client_context(cafile=str(self.ca))  # whatever certificate the
        ctx.load_cert_chain(str(self.cert), str(self.key))  # engine shows browsers
        return ctx
