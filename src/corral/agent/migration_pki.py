"""The certificates a live migration is encrypted with: the host's own (from its join, signed
by the engine's CA: server and client use, its name and address in it) laid out as libvirt
and QEMU read them, in ``STATE_DIR/migration-pki``.

One directory serves three readers:

- this host's libvirtd as the CLIENT of a peer-to-peer migration (``qemu+tls://PEER/system
  ?pkipath=DIR``: cacert.pem, clientcert.pem, clientkey.pem);
- this host's libvirtd as the SERVER of one (libvirtd.conf ``ca_file``, ``cert_file``,
  ``key_file``: cacert.pem, servercert.pem, serverkey.pem; ``listen_tls``);
- QEMU for the migration stream itself (qemu.conf ``migrate_tls_x509_cert_dir = DIR``,
  ``migrate_tls_x509_verify = 1``: ca-cert.pem, server-cert.pem, server-key.pem,
  client-cert.pem, client-key.pem). QEMU runs as its own user and reads the key itself:
  the keys belong to QEMU's group (0640), the directory is closed to everyone else.

Written at every agent start (a re-joined host gets its new certificate in place).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from pathlib import Path

from corral.host_identity import Identity

DIRNAME = "migration-pki"
# file name -> what it holds ("ca", "cert" or "key"), in libvirt's and QEMU's layouts
LAYOUT: dict[str, str] = {
    "cacert.pem": "ca", "clientcert.pem": "cert", "clientkey.pem": "key",
    "servercert.pem": "cert", "serverkey.pem": "key",
    "ca-cert.pem": "ca", "server-cert.pem": "cert", "server-key.pem": "key",
    "client-cert.pem": "cert", "client-key.pem": "key",
}
# Users QEMU runs as under the system libvirtd (Debian's, then Fedora's build default).
QEMU_USERS = ("libvirt-qemu", "qemu")


def pki_dir(state_dir: Path) -> Path:
    return state_dir / DIRNAME


def ready(directory: Path) -> bool:
    """Every file libvirt and QEMU need is there."""
    return all((directory / name).is_file() for name in LAYOUT)


def _qemu_gid() -> int | None:
    if os.geteuid() != 0:  # an agent not run as root cannot hand files to QEMU's group
        return None
    for user in QEMU_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(user).pw_gid
    with contextlib.suppress(KeyError):
        return grp.getgrnam("kvm").gr_gid
    return None  # QEMU runs as root here: root's files are enough


def install(identity: Identity, state_dir: Path) -> Path:
    """Lay the host's identity out in :func:`pki_dir` (replacing what was there)."""
    directory = pki_dir(state_dir)
    directory.mkdir(mode=0o750, exist_ok=True)
    gid = _qemu_gid()
    if gid is not None:
        os.chown(directory, 0, gid)
    os.chmod(directory, 0o750)
    sources = {"ca": identity.ca.read_bytes(), "cert": identity.cert.read_bytes(),
               "key": identity.key.read_bytes()}
    for name, what in LAYOUT.items():
        path = directory / name
        tmp = path.with_name(f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(sources[what])
        if gid is not None:
            os.chown(tmp, 0, gid)
        os.chmod(tmp, 0o640 if what == "key" else 0o644)
        tmp.replace(path)
    return directory
