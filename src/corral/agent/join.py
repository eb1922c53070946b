"""`corral agent join URL --token T`: the host's side of joining a cluster.

1. Fetch the engine's CA (GET /api/v1/ca.pem, before any trust) and compare its SHA-256
   with the fingerprint the token carries: a man in the middle fails here.
2. Make a key and a CSR (the host's name and the address the engine will reach it at) and
   send them with the token, now verifying the engine with that CA.
3. Keep what comes back (corral.host_identity): from then on engine and agent speak
   mutual TLS only, and the token is spent.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx

from corral.api.cluster import JoinAnswer, JoinRequest
from corral.errors import CorralError, HostError, InvalidInput, Unauthorized, Unavailable
from corral.errors import from_dict as error_from_dict
from corral.host_identity import Identity
from corral.pki import engine_client_context, fingerprint, make_csr, split_join_token

TIMEOUT_S = 30.0


def _engine_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidInput("the engine URL must be https://HOST:PORT", field="url")
    return f"https://{parts.netloc}"


def source_address(engine_url: str) -> str:
    """The address this host reaches the engine from: where the engine can reach it back."""
    parts = urlsplit(engine_url)
    family = socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((parts.hostname or "", parts.port or 443))  # UDP: nothing is sent
        except OSError as exc:
            raise Unavailable(f"no route to the engine at {engine_url}: {exc}; pass --address") from exc
        addr: str = s.getsockname()[0]
    return addr


def fetch_ca(engine_url: str, expected_fp: str) -> str:
    """The engine's CA, once its fingerprint matched ``expected_fp``."""
    from corral.client.remotes import fetch_ca as unverified_ca  # as `corral remote add`

    pem = unverified_ca(engine_url)
    got = fingerprint(pem)
    if got != expected_fp.lower():
        raise Unauthorized(f"the engine at {engine_url} shows CA {got}, not the {expected_fp} "
                           "the token names: wrong URL, or someone in between")
    return pem


def join(engine_url: str, token: str, name: str, url: str, addresses: list[str],
         identity: Identity) -> None:
    """Join and keep the identity; refused (and nothing kept) for a bad token."""
    engine_url = _engine_url(engine_url)
    fp, _ = split_join_token(token)
    ca_pem = fetch_ca(engine_url, fp)
    key_pem, csr_pem = make_csr(name, addresses)
    body = JoinRequest(token=token.strip(), name=name, url=url, csr=csr_pem.decode())
    verify = engine_client_context(cadata=ca_pem)  # its own certificate, not a brought one
    try:
        resp = httpx.post(f"{engine_url}/api/v1/hosts/join", json=body.model_dump(),
                          verify=verify, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise Unavailable(f"engine at {engine_url} unreachable: {exc}") from exc
    if resp.status_code != 200:
        raise _refusal(resp)
    answer = JoinAnswer.model_validate(resp.json())
    identity.save(key_pem, answer.certificate, answer.ca, answer.engine_certificate,
                  engine_url, name, url)


def _refusal(resp: httpx.Response) -> CorralError:
    try:
        body = resp.json().get("error")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return HostError(f"join refused: HTTP {resp.status_code}: {resp.text[:300]}")
    body.setdefault("code", "host_error")
    err = error_from_dict(body)
    err.message = f"join refused: {err.message}"
    return err
