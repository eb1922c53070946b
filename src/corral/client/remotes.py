"""Named remotes, as in Incus: the engines a user talks to, each pinned to its CA.

``~/.config/corral/remotes.json`` (mode 0600) keeps the current remote, the one current
before it (``lab down`` goes back to it) and, per remote, its URL, token, CA certificate
(PEM) and the CA's SHA-256 fingerprint. The CA is pinned on first contact: every later
connection verifies the server with that CA alone, so a server whose CA changed is refused.
An engine that serves a certificate its admin brought (`corral up --tls-cert`) is added
with the CA that signed it instead (``--ca FILE``: pinned the same way) or verified with
the system's CAs (``--system-ca``: no CA kept, ``ca_pem`` None).

``local`` is implicit: the machine's own node (`corral up`), found through its client.json
files (corral.node.paths); it is the default while no other remote was switched to.

Which engine a client talks to (:func:`resolve`), first that applies: the ``remote``
argument (``--remote``), ``CORRAL_REMOTE``, ``CORRAL_URL``/``CORRAL_TOKEN``/
``CORRAL_DATA_DIR`` (the node's client.json, as before remotes), the current remote, local.

For code (``corral lab up`` / ``lab down``)::

    remotes.add_remote("lab", url, token, ca_pem)        # and switch to it
    remotes.remove_remote("lab", switch_to=None)         # back to the remote current before
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from pydantic import BaseModel, Field, ValidationError

from corral import errors, pki
from corral.node import paths

LOCAL = "local"
DEFAULT_PORT = 8443
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FETCH_TIMEOUT = 15.0


class RemoteEntry(BaseModel):
    url: str
    token: str = Field(repr=False)
    # `corral login`'s session token: used instead of ``token`` until `corral logout`
    session_token: str | None = Field(None, repr=False)
    # `corral project switch`: the project its requests act in (None: the engine's default)
    project: str | None = None
    ca_pem: str | None = None  # None: verified with the system's CAs (--system-ca)
    fingerprint: str | None = None


class RemotesFile(BaseModel):
    current: str = LOCAL
    previous: str = LOCAL
    remotes: dict[str, RemoteEntry] = {}


class RemoteInfo(BaseModel):
    """A remote as `corral remote list` shows it (never its token)."""

    name: str
    url: str | None
    fingerprint: str | None
    current: bool


@dataclass(frozen=True)
class Target:
    """Where a client goes and how it verifies the server: ``ca_pem`` (a pinned remote) or
    ``ca`` (the CA file of a local node), else the system's CAs."""

    url: str
    token: str
    ca: str | None = None
    ca_pem: str | None = None
    remote: str | None = None
    fingerprint: str | None = None
    project: str | None = None  # the project to act in (`corral project switch`)


def config_path() -> Path:
    return Path.home() / ".config" / "corral" / "remotes.json"


# -- certificates and names -----------------------------------------------------------------

def fingerprint(ca_pem: str) -> str:
    """SHA-256 of the certificate (DER), lowercase hex: what `remote add` shows and pins."""
    _load_cert(ca_pem)  # a clear 422 for what is not a certificate
    return pki.fingerprint(ca_pem)


def normalize_fingerprint(value: str, field: str = "fingerprint") -> str:
    """``AB:CD:…``, ``sha256:abcd…`` or ``abcd…`` as 64 lowercase hex digits."""
    fp = value.strip().lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    if not _HEX64.match(fp):
        raise errors.InvalidInput(
            "a SHA-256 fingerprint is 64 hex digits (colons allowed), e.g. as "
            "`corral remote list -o json` prints it on the engine's machine", field=field)
    return fp


def short(fp: str | None) -> str:
    return fp[:16] if fp else "-"


def _load_cert(ca_pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(ca_pem.encode())
    except ValueError as exc:
        raise errors.InvalidInput(f"not a PEM certificate: {exc}", field="ca_pem") from exc


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise errors.InvalidInput(
            f"remote name {name!r}: lowercase letters, digits, '.', '_', '-' (at most 63), "
            "starting with a letter or digit", field="name")


def check_new_name(name: str, *, replace: bool = False) -> None:
    """A name a remote may be added under (early: before anything is fetched)."""
    check_name(name)
    if name == LOCAL:
        raise errors.InvalidInput("`local` is this machine's own node; pick another name",
                                  field="name")
    known = load().remotes
    if name in known and not replace:
        raise errors.Conflict(f"remote {name!r} exists ({known[name].url}); "
                              f"`corral remote remove {name}` first", field="name")


def normalize_url(url: str) -> str:
    """``host``, ``host:port`` or ``https://host[:port]``: engines serve HTTPS, on port 8443
    unless told."""
    raw = url.strip()
    if "://" not in raw:
        raw = "https://" + raw
        parsed = httpx.URL(raw)
        if parsed.port is None:
            raw = str(parsed.copy_with(port=DEFAULT_PORT))
    try:
        parsed = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise errors.InvalidInput(f"not a URL: {url!r} ({exc})", field="url") from exc
    if parsed.scheme != "https" or not parsed.host:
        raise errors.InvalidInput(
            f"{url!r}: a corral engine is reached over HTTPS, e.g. https://HOST:8443",
            field="url")
    return str(parsed).rstrip("/")


# -- the file -------------------------------------------------------------------------------

def load() -> RemotesFile:
    path = config_path()
    if not path.exists():
        return RemotesFile()
    try:
        return RemotesFile.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        raise errors.Unavailable(f"{path} is not a valid remotes file ({exc}); fix or remove "
                                 "it (the remotes in it are then forgotten)") from exc


def _save(cfg: RemotesFile) -> None:
    path = config_path()
    tmp = path.with_name(path.name + ".tmp")
    paths.write_private(tmp, cfg.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


@contextmanager
def _editing() -> Iterator[RemotesFile]:
    """The file, locked against other writers (`lab up` while a user switches), saved when
    the block ends without an error."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cfg = load()
        yield cfg
        _save(cfg)
    finally:
        os.close(fd)  # closing releases the lock


def _unknown(name: str, cfg: RemotesFile) -> errors.NotFound:
    known = ", ".join([LOCAL, *sorted(cfg.remotes)])
    return errors.NotFound(f"no remote named {name!r}; known remotes: {known} "
                           "(`corral remote add` adds one)", field="remote")


def local_config() -> dict[str, Any]:
    """{url, ca, token} of this machine's own node, whatever the environment says."""
    f = local_config_file()
    return paths.with_session(dict(json.loads(f.read_text()))) if f is not None else {}


def local_config_file() -> Path | None:
    """The client.json of this machine's own node, if there is one."""
    for f in (paths.USER_CONFIG, paths.machine_data_dir() / "client.json"):
        if f.exists():
            return f
    return None


# -- the API --------------------------------------------------------------------------------

def current() -> str:
    return load().current


def previous() -> str:
    return load().previous


def get(name: str) -> RemoteEntry:
    cfg = load()
    if name not in cfg.remotes:
        raise _unknown(name, cfg)
    return cfg.remotes[name]


def list_remotes() -> list[RemoteInfo]:
    """``local`` first, then the others by name."""
    cfg = load()
    local = local_config()
    local_fp = None
    if local.get("ca") and Path(local["ca"]).is_file():
        try:
            local_fp = fingerprint(Path(local["ca"]).read_text())
        except (OSError, errors.InvalidInput):
            local_fp = None
    rows = [RemoteInfo(name=LOCAL, url=local.get("url"), fingerprint=local_fp,
                       current=cfg.current == LOCAL)]
    rows += [RemoteInfo(name=n, url=r.url, fingerprint=r.fingerprint, current=cfg.current == n)
             for n, r in sorted(cfg.remotes.items())]
    return rows


def add_remote(name: str, url: str, token: str, ca_pem: str | None, *, switch: bool = True,
               replace: bool = False) -> RemoteEntry:
    """Save a remote pinned to ``ca_pem`` (None: verified with the system's CAs; checks
    nothing over the network: see :func:`fetch_ca` and :func:`check`); ``switch``: make it
    current, remembering the one current before. A name already known is a Conflict unless
    ``replace``."""
    check_new_name(name, replace=replace)
    if not token:
        raise errors.InvalidInput("a token is needed", field="token")
    entry = RemoteEntry(url=normalize_url(url), token=token, ca_pem=ca_pem,
                        fingerprint=fingerprint(ca_pem) if ca_pem is not None else None)
    with _editing() as cfg:
        if name in cfg.remotes and not replace:
            raise errors.Conflict(f"remote {name!r} exists ({cfg.remotes[name].url}); "
                                  f"`corral remote remove {name}` first", field="name")
        cfg.remotes[name] = entry
        if switch and cfg.current != name:
            cfg.previous, cfg.current = cfg.current, name
    return entry


def remove_remote(name: str, switch_to: str | None = LOCAL) -> str:
    """Forget a remote; if it was current, switch to ``switch_to`` (None: the remote
    current before it, when still known, else local). The current remote afterwards."""
    if name == LOCAL:
        raise errors.InvalidInput("`local` is this machine's own node and cannot be removed",
                                  field="name")
    with _editing() as cfg:
        if name not in cfg.remotes:
            raise _unknown(name, cfg)
        del cfg.remotes[name]
        if cfg.current == name:
            target = cfg.previous if switch_to is None else switch_to
            if target not in cfg.remotes:
                target = LOCAL
            cfg.current = target
            cfg.previous = LOCAL
        if cfg.previous == name:
            cfg.previous = LOCAL
        return cfg.current


def switch_remote(name: str) -> None:
    with _editing() as cfg:
        if name != LOCAL and name not in cfg.remotes:
            raise _unknown(name, cfg)
        if cfg.current != name:
            cfg.previous, cfg.current = cfg.current, name


def set_session(name: str, token: str | None) -> None:
    """Keep (or, None, forget) a `corral login` session token for a named remote."""
    with _editing() as cfg:
        if name not in cfg.remotes:
            raise _unknown(name, cfg)
        cfg.remotes[name].session_token = token


def set_project(name: str, project: str | None) -> None:
    """Keep (or, None, forget) the project a named remote's requests act in."""
    with _editing() as cfg:
        if name not in cfg.remotes:
            raise _unknown(name, cfg)
        cfg.remotes[name].project = project


def read_ca_file(path: Path) -> str:
    """A CA certificate (PEM; a bundle of them too) from a file, for ``remote add --ca``."""
    try:
        pem = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.InvalidInput(f"cannot read {path}: {exc}", field="ca") from exc
    try:
        x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise errors.InvalidInput(f"{path} holds no PEM certificate ({exc})", field="ca") from exc
    return pem


def fetch_ca(url: str) -> str:
    """The engine's CA (GET /api/v1/ca.pem), over TLS that is NOT verified yet: the caller
    trusts it only once its fingerprint is confirmed."""
    base = normalize_url(url)
    try:
        resp = httpx.get(f"{base}/api/v1/ca.pem", verify=False, timeout=_FETCH_TIMEOUT)
    except httpx.HTTPError as exc:
        raise errors.Unavailable(f"cannot reach {base}: {exc}") from exc
    if resp.status_code != 200:
        raise errors.Unavailable(f"{base} gave no CA certificate (HTTP {resp.status_code}); "
                                 "is it a corral engine?")
    pem = resp.text
    try:
        cert = _load_cert(pem)
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (errors.InvalidInput, x509.ExtensionNotFound):
        is_ca = False
    if not is_ca:
        raise errors.Unavailable(f"{base}/api/v1/ca.pem is not a CA certificate; "
                                 "is it a corral engine?")
    return pem


def check(url: str, token: str, ca_pem: str | None) -> None:
    """The engine at ``url`` presents a certificate of ``ca_pem`` (None: of a CA the system
    trusts) and accepts ``token`` (GET /api/v1/status); raises otherwise."""
    from corral.client import Client  # the client imports this module

    with Client(normalize_url(url), token, ca_pem=ca_pem) as c:
        try:
            c.status()
        except errors.Unauthorized as exc:
            raise errors.Unauthorized(f"{c.url} refused the token: {exc.message}",
                                      field="token") from exc


def resolve(remote: str | None = None) -> Target:
    """Where a client goes when no data dir is named: see the module's docstring."""
    name = remote or os.environ.get("CORRAL_REMOTE") or None
    if name is None:
        if any(os.environ.get(v) for v in ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_DATA_DIR")):
            return _local_target(paths.load_client_config())
        name = load().current
        if name == LOCAL:
            return _local_target(paths.load_client_config())
    if name == LOCAL:
        return _local_target(local_config())
    entry = get(name)
    return Target(url=entry.url, token=entry.session_token or entry.token,
                  ca_pem=entry.ca_pem, remote=name, fingerprint=entry.fingerprint,
                  project=entry.project)


def _local_target(cfg: dict[str, Any]) -> Target:
    if not cfg.get("url") or not cfg.get("token"):
        raise errors.Unavailable(
            "no corral node found: run `corral up` (or set CORRAL_DATA_DIR, "
            "or CORRAL_URL and CORRAL_TOKEN, or add a remote: `corral remote add`)")
    return Target(url=cfg["url"], token=cfg["token"], ca=cfg.get("ca"),
                  project=cfg.get("project"))
