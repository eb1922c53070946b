"""API types of a host joining the cluster (``/api/v1/hosts/tokens``, ``/api/v1/hosts/join``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from corral.api.models import _Request


class JoinTokenRequest(_Request):
    ttl_s: int = Field(3600, ge=60, le=7 * 86400,
                       description="Seconds until the token expires (1 min to 7 days)")


class JoinToken(BaseModel):
    token: str = Field(description="Shown once: give it to `corral agent join`. It names the "
                       "engine's CA fingerprint, which the joining host checks")
    expires_at: datetime
    ca_fingerprint: str


class JoinRequest(_Request):
    token: str = Field(max_length=256)
    name: str = Field(max_length=63, description="The host's name (its certificate's CN)")
    url: str = Field(max_length=255, description="Where the engine reaches this host's agent "
                     "(https://ADDRESS:PORT)")
    csr: str = Field(max_length=16384, description="PEM certificate signing request (EC P-256)")


class JoinAnswer(BaseModel):
    certificate: str = Field(description="The host's certificate (PEM), client and server")
    ca: str = Field(description="The engine's CA (PEM)")
    engine_certificate: str = Field(description="The one client certificate the agent may "
                                    "accept (PEM): the engine's")
