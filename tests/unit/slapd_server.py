"""A real OpenLDAP slapd (Debian's package) for the LDAP login tests: started in a private
directory on 127.0.0.1 and a free port, with an mdb database seeded by ``ldapadd``, stopped
and removed on exit even when the test fails.

The directory (``dc=example,dc=org``):
- ``cn=corral,dc=example,dc=org``: the engine's service account (reads everything but
  passwords, as an AD service account would);
- ``ou=people``: alice, bob and carol (``uid`` + ``userPassword``, stored as {SSHA});
- ``ou=groups``: groupOfNames ``vmadmins`` (alice), ``webops`` (bob) and ``staff``
  (alice, bob, carol; mapped to nothing by the tests). The memberof overlay gives users
  ``memberOf``, as Active Directory does.
Anonymous clients may only bind (the search must go through the service account).
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SLAPD = "/usr/sbin/slapd"
SLAPPASSWD = "/usr/sbin/slappasswd"
BASE = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{BASE}"
SERVICE_DN = f"cn=corral,{BASE}"
START_TIMEOUT_S = 15.0
# uid -> password; every user is in ou=people
USERS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "carol": "carol-secret-333"}
GROUPS = {"vmadmins": ["alice"], "webops": ["bob"], "staff": ["alice", "bob", "carol"]}


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{BASE}"


def group_dn(cn: str) -> str:
    return f"cn={cn},ou=groups,{BASE}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: a test run that is killed does not leave slapd behind."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _hash(password: str) -> str:
    done = subprocess.run([SLAPPASSWD, "-s", password], capture_output=True, text=True,
                          check=True, timeout=10)
    return done.stdout.strip()


_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
database mdb
maxsize 16777216
suffix "{base}"
rootdn "{admin}"
rootpw {admin_hash}
directory {root}/db
overlay memberof
access to attrs=userPassword by anonymous auth by self write by * none
access to * by users read by * none
"""


def _seed_ldif(service_password: str) -> str:
    entries = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: corral\nuserPassword: {_hash(service_password)}",
        f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups",
    ]
    for uid, password in USERS.items():
        entries.append(f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                       f"cn: {uid.title()}\nsn: {uid.title()}\nuserPassword: {_hash(password)}")
    for cn, members in GROUPS.items():
        lines = "\n".join(f"member: {user_dn(m)}" for m in members)
        entries.append(f"dn: {group_dn(cn)}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}")
    return "\n\n".join(entries) + "\n"


@dataclass
class Slapd:
    root: Path
    port: int
    admin_password: str
    service_password: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def _client(self, tool: str, ldif: str) -> None:
        """ldapadd/ldapmodify as the directory's admin, the LDIF on stdin."""
        done = subprocess.run([tool, "-x", "-H", self.url, "-D", ADMIN_DN, "-w",
                               self.admin_password], input=ldif, capture_output=True,
                              text=True, timeout=15)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}")

    def modify(self, ldif: str) -> None:
        self._client("ldapmodify", ldif)

    def set_members(self, group: str, members: list[str]) -> None:
        """The group's members become exactly these users (a groupOfNames needs one)."""
        lines = "".join(f"member: {user_dn(m)}\n" for m in members)
        self.modify(f"dn: {group_dn(group)}\nchangetype: modify\nreplace: member\n{lines}")

    def start(self) -> None:
        (self.root / "db").mkdir(parents=True, exist_ok=True)
        log = (self.root / "slapd.log").open("wb")
        self.proc = subprocess.Popen(  # -d: stays in the foreground, ours to stop
            [SLAPD, "-h", f"{self.url}/", "-f", str(self.root / "slapd.conf"), "-d", "0"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("slapd exited at start: "
                                   + (self.root / "slapd.log").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"slapd did not listen on {self.url} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@contextmanager
def running_slapd() -> Iterator[Slapd]:
    """A seeded slapd of its own; gone, with its directory, on exit."""
    root = Path(tempfile.mkdtemp(prefix="corral-slapd-"))
    server = Slapd(root=root, port=free_port(), admin_password="admin-secret",
                   service_password="service-secret")
    try:
        (root / "slapd.conf").write_text(_CONF.format(
            root=root, base=BASE, admin=ADMIN_DN, admin_hash=_hash(server.admin_password)))
        server.start()
        server._client("ldapadd", _seed_ldif(server.service_password))
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
