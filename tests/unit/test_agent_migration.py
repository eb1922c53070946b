"""The agent's side of a live migration (corral.agent.hypervisor.migration) against a
stand-in libvirt domain: the flags and parameters libvirt gets, progress read from the job
statistics, the downtime from the destination's completed job, and a cancel that aborts
the job and leaves the guest where it was."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient

from corral.agent import host_facts, migration_pki
from corral.agent.app import AgentSettings, create_app
from corral.agent.hypervisor import migration
from corral.agent.jobs import JobCancelled
from corral.agent_api.migration import MigrateBody
from corral.errors import HypervisorError, Unavailable
from corral.host_identity import Identity

URI = "qemu+tcp://10.209.0.12/system"


class FakeDomain:  # libvirt's method names
    """migrateToURI3 runs until ``finish`` (or abortJob) is called."""

    def __init__(self) -> None:
        self.called: dict[str, Any] = {}
        self.done = threading.Event()
        self.aborted = False
        self.downtime: int | None = None

    def isActive(self) -> bool:
        return True

    def migrateToURI3(self, uri: str, params: dict[str, Any], flags: int) -> None:
        self.called = {"uri": uri, "params": params, "flags": flags}
        self.done.wait(10)
        if self.aborted:
            raise libvirt.libvirtError("operation aborted: migration out job: canceled by client")

    def jobStats(self, flags: int = 0) -> dict[str, Any]:
        return {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 128 << 20,
                "memory_remaining": 32 << 20, "memory_bps": 50 << 20,
                "memory_dirty_rate": 256, "memory_page_size": 4096, "memory_iteration": 2}

    def migrateSetMaxDowntime(self, ms: int, flags: int) -> None:
        self.downtime = ms

    def abortJob(self) -> None:
        self.aborted = True
        self.done.set()


class FakeConn:
    def __init__(self, dom: Any) -> None:
        self.dom = dom

    def lookupByName(self, name: str) -> Any:
        return self.dom

    def close(self) -> None:
        pass


class Completed:
    def jobStats(self, flags: int = 0) -> dict[str, Any]:
        assert flags == libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
        return {"downtime": 87, "memory_processed": 140 << 20, "memory_iteration": 3}


class FakeHv:
    def __init__(self, dom: FakeDomain) -> None:
        self.dom = dom

    def _open(self) -> FakeConn:
        return FakeConn(self.dom)


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migration, "POLL_S", 0.02)
    monkeypatch.setattr(migration.libvirt, "open", lambda uri: FakeConn(Completed()))


def test_flags_and_parameters_of_a_live_migration() -> None:
    body = MigrateBody(destination=URI, dest_xml="<domain/>", persist_xml="<domain/>",
                       bandwidth_mib_s=100)
    flags = migration.flags_of(body)
    for f in (libvirt.VIR_MIGRATE_PEER2PEER, libvirt.VIR_MIGRATE_LIVE,
              libvirt.VIR_MIGRATE_PERSIST_DEST, libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
              libvirt.VIR_MIGRATE_AUTO_CONVERGE):
        assert flags & f
    assert not flags & libvirt.VIR_MIGRATE_POSTCOPY
    assert not flags & libvirt.VIR_MIGRATE_NON_SHARED_INC
    assert not flags & libvirt.VIR_MIGRATE_UNSAFE  # only when the engine vouches for the disks
    shared = MigrateBody(destination=URI, shared_storage=True)
    assert migration.flags_of(shared) & libvirt.VIR_MIGRATE_UNSAFE
    assert migration.params_of(body) == {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>",
        libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: "<domain/>",
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 100}


def test_a_destination_must_be_a_qemu_tcp_or_tls_uri() -> None:
    MigrateBody(destination="qemu+tls://h2.example.org/system")
    for bad in ("qemu:///system", "qemu+ssh://h2/system", "h2", "qemu+tcp:///system"):
        with pytest.raises(ValueError, match="libvirt URI"):
            MigrateBody(destination=bad)


def test_progress_names_memory_left_rates_and_iteration() -> None:
    percent, message = migration.progress_of(FakeDomain().jobStats())
    assert percent == 75
    assert message == "iteration 2: 32 MiB of 128 MiB left, 50 MiB/s, dirtying 1 MiB/s"
    assert migration.progress_of({}) == (0, "starting")


def test_a_migration_reports_progress_and_ends_with_the_downtime() -> None:
    dom = FakeDomain()
    seen: list[tuple[int, str]] = []

    def report(percent: int, message: str) -> None:
        seen.append((percent, message))
        if len(seen) == 3:
            dom.done.set()  # the guest runs on the target now

    body = MigrateBody(destination=URI, max_downtime_ms=150)
    done = migration.migrate(FakeHv(dom), "web", body, report)  # type: ignore[arg-type]
    assert dom.called["uri"] == URI and dom.downtime == 150
    assert seen[0] == (75, "iteration 2: 32 MiB of 128 MiB left, 50 MiB/s, dirtying 1 MiB/s")
    assert done.downtime_ms == 87 and done.iterations == 3 and done.total_ms >= 0
    assert done.memory_bytes == 140 << 20 and not done.postcopy


def test_cancel_aborts_the_job_and_the_guest_stays() -> None:
    dom = FakeDomain()

    def report(percent: int, message: str) -> None:
        raise JobCancelled("vm.migrate domain:web was cancelled")

    with pytest.raises(JobCancelled):
        migration.migrate(FakeHv(dom), "web", MigrateBody(destination=URI),  # type: ignore[arg-type]
                          report)
    assert dom.aborted


def test_a_migration_that_does_not_converge_is_aborted_with_the_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    dom = FakeDomain()
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(migration.time, "monotonic", lambda: float(next(clock)))
    body = MigrateBody(destination=URI, converge_timeout_s=5)
    with pytest.raises(Exception, match="did not converge in 5 s") as exc:
        migration.migrate(FakeHv(dom), "web", body, lambda p, m: None)  # type: ignore[arg-type]
    assert dom.aborted and not isinstance(exc.value, HypervisorError)


def test_the_agents_route_starts_a_job_that_reports_libvirts_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real agent app on libvirt's test driver (which has domain ``test`` and no p2p
    migration): the route is reached (not taken for a power action), answers a job, and the
    job fails with libvirt's reason; an unknown domain is a 404 at once, a bad URI a 422."""
    monkeypatch.undo()  # the real libvirt.open
    app = create_app(AgentSettings(state_dir=tmp_path / "state", libvirt_uri="test:///default"))
    agent = TestClient(app)
    body = {"destination": "qemu+tcp://127.0.0.1:1/system"}
    started = agent.post("/v1/domains/test/migrate", json=body)
    assert started.status_code == 200, started.text
    job = started.json()
    assert job["kind"] == "vm.migrate" and job["key"] == "domain:test"
    for _ in range(100):  # bounded: the test driver refuses at once
        job = agent.get(f"/v1/jobs/{job['id']}?after={job['version']}&wait=1").json()
        if job["status"] != "running":
            break
    assert job["status"] == "failure"
    assert job["error"]["code"] == "hypervisor_error"
    assert "p2p migration is not supported" in job["error"]["message"]
    assert agent.post("/v1/domains/nope/migrate", json=body).status_code == 404
    assert agent.post("/v1/domains/test/migrate",
                      json={"destination": "qemu:///system"}).status_code == 422


def test_tls_encrypts_the_stream_checked_against_the_targets_name() -> None:
    body = MigrateBody(destination="qemu+tls://10.209.0.12/system", tls=True,
                       tls_hostname="lab2", migrate_uri="tcp://10.30.0.12")
    assert migration.flags_of(body) & libvirt.VIR_MIGRATE_TLS
    assert migration.params_of(body) == {
        libvirt.VIR_MIGRATE_PARAM_URI: "tcp://10.30.0.12",
        libvirt.VIR_MIGRATE_PARAM_TLS_DESTINATION: "lab2"}
    plain = MigrateBody(destination=URI, tls=False, tls_hostname="lab2")
    assert not migration.flags_of(plain) & libvirt.VIR_MIGRATE_TLS
    assert migration.params_of(plain) == {}
    for bad in ("10.30.0.12", "tcp://", "tcp://10.30.0.12/x", "rdma://10.30.0.12"):
        with pytest.raises(ValueError, match="tcp://ADDRESS"):
            MigrateBody(destination=URI, migrate_uri=bad)


def _identity(tmp_path: Path) -> Identity:
    identity = Identity(tmp_path / "identity")
    identity.dir.mkdir()
    for path, text in ((identity.ca, "CA"), (identity.cert, "CERT"), (identity.key, "KEY")):
        path.write_text(text)
    return identity


def test_the_hosts_certificate_is_laid_out_for_libvirt_and_qemu(tmp_path: Path) -> None:
    pki = migration_pki.install(_identity(tmp_path), tmp_path)
    assert pki == tmp_path / "migration-pki" and migration_pki.ready(pki)
    for name in ("cacert.pem", "ca-cert.pem"):
        assert (pki / name).read_text() == "CA"
    for name in ("clientcert.pem", "servercert.pem", "server-cert.pem", "client-cert.pem"):
        assert (pki / name).read_text() == "CERT"
    for name in ("clientkey.pem", "serverkey.pem", "server-key.pem", "client-key.pem"):
        assert (pki / name).read_text() == "KEY"
        assert (pki / name).stat().st_mode & 0o777 == 0o640  # QEMU's group reads it
    assert pki.stat().st_mode & 0o007 == 0  # nobody else


def test_a_tls_destination_gets_this_hosts_certificates(tmp_path: Path) -> None:
    body = MigrateBody(destination="qemu+tls://10.209.0.12/system")
    with pytest.raises(Unavailable, match="no certificates for migration TLS"):
        migration.destination_of(body, tmp_path / "migration-pki")
    pki = migration_pki.install(_identity(tmp_path), tmp_path)
    assert migration.destination_of(body, pki) == \
        f"qemu+tls://10.209.0.12/system?pkipath={pki}"
    assert migration.destination_of(MigrateBody(destination=URI), None) == URI


def test_the_reason_of_a_migration_that_did_not_converge() -> None:
    busy = {"memory_remaining": 200 << 20, "memory_bps": 1 << 20,
            "memory_dirty_rate": 1024, "memory_page_size": 4096}  # 4 MiB/s dirtied
    why = migration.unconverged("web", 120, busy)
    assert why.startswith("the migration of web did not converge in 120 s: dirty rate "
                          "4.0 MiB/s above transfer rate 1.0 MiB/s; aborted")
    slow = {**busy, "memory_dirty_rate": 0}
    assert "200 MiB left at a transfer rate of 1.0 MiB/s, dirty rate 0.0 MiB/s" in \
        migration.unconverged("web", 120, slow)


def test_a_migration_past_its_limit_switches_to_post_copy_when_allowed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    dom = FakeDomain()
    switched: list[int] = []

    def post_copy(flags: int) -> None:
        switched.append(flags)
        dom.done.set()  # the guest runs on the target from now on

    dom.migrateStartPostCopy = post_copy  # type: ignore[attr-defined]
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(migration.time, "monotonic", lambda: float(next(clock)))
    body = MigrateBody(destination=URI, converge_timeout_s=5, postcopy=True)
    done = migration.migrate(FakeHv(dom), "web", body, lambda p, m: None)  # type: ignore[arg-type]
    assert switched == [0] and done.postcopy and not dom.aborted
    assert migration.flags_of(body) & libvirt.VIR_MIGRATE_POSTCOPY


def test_a_host_reports_its_addresses_per_interface() -> None:
    found = host_facts.addresses()
    assert found, "this machine has an address beyond loopback"
    for entry in found:
        assert set(entry) == {"interface", "address", "prefix"}
        assert not entry["address"].startswith("127.") and entry["address"] != "::1"
        assert "%" not in entry["address"] and 0 < entry["prefix"] <= 128


def test_a_lost_target_libvirtd_is_named_in_the_error() -> None:
    said = migration._explained("internal error: client socket is closed")
    assert said.startswith("internal error: client socket is closed (the connection to the "
                           "target host's libvirtd was lost")
    assert "guest keeps running here" in said
    other = "operation failed: guest CPU doesn't match specification"
    assert migration._explained(other) == other
