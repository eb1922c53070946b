"""The HTTP client behind corral.client."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from corral import errors
from corral.api import (
    CloudInit,
    Event,
    GuestCustomize,
    Host,
    Image,
    ImageBuildTiny,
    ImageImport,
    Network,
    NetworkCreate,
    Operation,
    PowerAction,
    Status,
    Vm,
    VmAddress,
    VmCreate,
    VmExec,
    VmExecResult,
    VmPatch,
    VmStatePut,
    VmVnc,
)
from corral.api import storage as storage_api
from corral.api.cluster import JoinToken
from corral.api.evacuation import EvacuationPlan
from corral.api.hosts import HostDetail, HostPatch
from corral.api.migration import VmMigrate
from corral.api.nics import NicUpdate, VmNic
from corral.api.scheduling import Placement, VmGroup, VmGroupCreate
from corral.api.security_groups import SecurityGroup, SecurityGroupCreate, SgRule, SgRuleCreate
from corral.api.snapshots import (
    OvaExport,
    OvaImport,
    Snapshot,
    SnapshotCreate,
    TemplateCreate,
    VmClone,
)
from corral.api.stats import Stats
from corral.client import remotes
from corral.client._audit import AuditApi
from corral.client._cluster import ClusterApi
from corral.client._fencing import FencingApi
from corral.client._ldap import LdapApi
from corral.client._projects import ProjectsApi
from corral.client._users import UsersApi
from corral.node.paths import load_client_config

_BY_STATUS = {401: "unauthorized", 404: "not_found", 409: "conflict", 422: "invalid_input",
              503: "unavailable"}


def _error_of(resp: httpx.Response) -> errors.CorralError:
    """The API's error body as a corral error; a bare HTTP error (a proxy, an older engine
    without this route) still gets a code from its status and a readable message."""
    try:
        data = resp.json()
    except ValueError:
        data = {}
    body = data.get("error") if isinstance(data, dict) else None
    if not body:
        detail = data.get("detail") if isinstance(data, dict) else None
        body = {"code": _BY_STATUS.get(resp.status_code, "internal"),
                "message": f"HTTP {resp.status_code} {resp.reason_phrase} from {resp.url.path}"
                           + (f": {detail}" if isinstance(detail, str) else "")}
    return errors.from_dict(body)


def _tls_refusal(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed under an httpx error, if that is what failed."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: httpx -> httpcore -> ssl
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Client(UsersApi, AuditApi, LdapApi, ProjectsApi, ClusterApi, FencingApi):
    """``ca``: a CA file; ``ca_pem``: a CA certificate itself (a pinned remote, which
    ``remote`` and ``fingerprint`` name in errors); neither: the system's CAs.
    ``project``: the project every request acts in (``?project=``) unless the call names
    one; None: the engine's default (`default`, or the one a token is bound to)."""

    def __init__(self, url: str, token: str, ca: str | None = None, timeout: float = 30.0, *,
                 ca_pem: str | None = None, remote: str | None = None,
                 fingerprint: str | None = None, project: str | None = None) -> None:
        if ca_pem:  # only this CA: create_default_context then loads no system CA
            verify = ssl.create_default_context(cadata=ca_pem)
        elif ca:
            verify = ssl.create_default_context(cafile=ca)
        else:  # the system's store (a company CA added to it included), not certifi's
            verify = ssl.create_default_context()
        self.url = url
        self.token = token
        self.ca = ca
        self.remote = remote
        self.fingerprint = fingerprint
        self.project = project
        # what other connections to this engine verify it with (the console's WebSocket)
        self.tls = verify
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                  verify=verify, timeout=timeout)

    @classmethod
    def from_config(cls, data_dir: Path | None = None, *, remote: str | None = None,
                    project: str | None = None) -> Client:
        """The node of ``data_dir`` when given; else the remote named, ``CORRAL_REMOTE``,
        ``CORRAL_URL``/``CORRAL_TOKEN``/``CORRAL_DATA_DIR``, the current remote, the local
        node: the first that applies (corral.client.remotes). ``project``: the one to act
        in; None: the one `corral project switch` kept in that config, if any."""
        if data_dir is None:
            t = remotes.resolve(remote)
            return cls(t.url, t.token, t.ca, ca_pem=t.ca_pem, remote=t.remote,
                       fingerprint=t.fingerprint, project=project or t.project)
        cfg = load_client_config(data_dir)
        if not cfg.get("url") or not cfg.get("token"):
            raise errors.Unavailable(
                "no corral node found: run `corral up` (or set CORRAL_DATA_DIR, "
                "or CORRAL_URL and CORRAL_TOKEN)"
            )
        return cls(cfg["url"], cfg["token"], cfg.get("ca"), project=project or cfg.get("project"))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **self._in_project(kwargs))
        except httpx.ConnectError as exc:
            raise self._unreachable(exc) from exc
        except httpx.HTTPError as exc:
            raise errors.Unavailable(f"request to {self.url} failed: {exc}") from exc
        if resp.status_code >= 400:
            raise _error_of(resp)
        return resp

    def _in_project(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments with ``?project=`` set to the client's project, unless the
        call names one (``project: None`` among its params: none at all, a filter left
        empty rather than the default)."""
        params = kwargs.get("params")
        if isinstance(params, dict) and "project" in params:
            if params["project"] is None:
                kwargs = {**kwargs, "params": {k: v for k, v in params.items()
                                               if k != "project"}}
            return kwargs
        if self.project is None:
            return kwargs
        query = httpx.QueryParams(params) if params is not None else httpx.QueryParams()
        if "project" in query:
            return kwargs
        return {**kwargs, "params": query.set("project", self.project)}

    def _unreachable(self, exc: httpx.ConnectError) -> errors.CorralError:
        refusal = _tls_refusal(exc)
        if refusal is None:
            return errors.Unavailable(f"cannot reach corral at {self.url}: {exc} "
                                      "(is it running? `corral up`)")
        why = refusal.verify_message or str(refusal)
        if self.remote is None or "mismatch" in why.lower():
            return errors.Unavailable(
                f"the server at {self.url} is not trusted: its certificate does not verify "
                f"({why}); an engine serving a certificate of another CA for its name "
                "(`corral cert set`) is added with `corral remote add NAME URL --ca FILE` "
                "(or --system-ca)")
        return errors.Unavailable(
            f"the server at {self.url} is not the one pinned for remote {self.remote!r}: its "
            f"certificate is not signed by the pinned CA (SHA-256 {self.fingerprint}; {why}). "
            "If that engine's CA was replaced on purpose, pin the new one: "
            f"`corral remote remove {self.remote}` then "
            f"`corral remote add {self.remote} {self.url} --token TOKEN`")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- VMs ------------------------------------------------------------------------------
    def list_vms(self) -> list[Vm]:
        return [Vm.model_validate(v) for v in self._json("GET", "/api/v1/vms")]

    def get_vm(self, name: str) -> Vm:
        return Vm.model_validate(self._json("GET", f"/api/v1/vms/{name}"))

    def vm_cloud_init(self, name: str) -> CloudInit:
        """The VM's cloud-init settings whole, user-data and password hash included (which
        ``get_vm`` hides); needs permission vm.secrets (403 otherwise)."""
        return CloudInit.model_validate(self._json("GET", f"/api/v1/vms/{name}/cloud-init"))

    def create_vm(self, req: VmCreate) -> Operation:
        return Operation.model_validate(
            self._json("POST", "/api/v1/vms", json=req.model_dump(exclude_none=True)))

    # -- placement and affinity groups (corral.api.scheduling) ----------------------------
    def explain_vm(self, req: VmCreate) -> Placement:
        """The dry run of ``create_vm``: where it would go and why; nothing is created."""
        return Placement.model_validate(self._json(
            "POST", "/api/v1/vms", params={"explain": True},
            json=req.model_dump(exclude_none=True)))

    def vm_placement(self, name: str) -> Placement:
        return Placement.model_validate(self._json("GET", f"/api/v1/vms/{name}/placement"))

    def list_vm_groups(self) -> list[VmGroup]:
        return [VmGroup.model_validate(g) for g in self._json("GET", "/api/v1/vm-groups")]

    def get_vm_group(self, name: str) -> VmGroup:
        return VmGroup.model_validate(self._json("GET", f"/api/v1/vm-groups/{name}"))

    def create_vm_group(self, req: VmGroupCreate) -> VmGroup:
        return VmGroup.model_validate(
            self._json("POST", "/api/v1/vm-groups", json=req.model_dump(mode="json")))

    def delete_vm_group(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/vm-groups/{name}")

    def tag_host(self, name: str, tag: str, present: bool = True) -> Host:
        """Add (``present``) or remove a host tag; the host as it is then."""
        return Host.model_validate(self._json("PUT" if present else "DELETE",
                                              f"/api/v1/hosts/{name}/tags/{tag}"))

    def vm_action(self, name: str, action: PowerAction, *, force: bool = False,
                  timeout: int = 60) -> Operation:
        body = VmStatePut(action=action, force=force, timeout=timeout).model_dump(mode="json")
        return Operation.model_validate(self._json("PUT", f"/api/v1/vms/{name}/state", json=body))

    def migrate_vm(self, name: str, req: VmMigrate) -> Operation:
        """Live-migrate a running VM (``req.to`` None: the scheduler picks the host); the
        operation's last message carries the downtime. ``cancel_operation`` aborts it."""
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/vms/{name}/migrate", json=req.model_dump(exclude_none=True)))

    def explain_migration(self, name: str, req: VmMigrate) -> Placement:
        """The dry run of ``migrate_vm``: where the VM would go and why; nothing moves."""
        return Placement.model_validate(self._json(
            "POST", f"/api/v1/vms/{name}/migrate", params={"explain": True},
            json=req.model_dump(exclude_none=True)))

    def delete_vm(self, name: str, force: bool = False) -> Operation:
        return Operation.model_validate(
            self._json("DELETE", f"/api/v1/vms/{name}", params={"force": force}))

    def console_log(self, name: str) -> str:
        return self.request("GET", f"/api/v1/vms/{name}/console-log").text

    def update_vm(self, name: str, req: VmPatch) -> Operation:
        """Change a VM: only the fields set in ``req`` are sent (``cloud_init=None`` removes
        the seed, ``memory_target=None`` gives the guest all its memory again)."""
        body = req.model_dump(mode="json", exclude_unset=True)
        if body.get("cloud_init"):
            body["cloud_init"] = req.cloud_init.model_dump(mode="json", exclude_none=True) \
                if req.cloud_init else None
        return Operation.model_validate(self._json("PATCH", f"/api/v1/vms/{name}", json=body))

    def exec_vm(self, name: str, req: VmExec) -> VmExecResult:
        """Run a command in a running guest through its QEMU guest agent; waits for it."""
        return VmExecResult.model_validate(self._json(
            "POST", f"/api/v1/vms/{name}/exec", json=req.model_dump(exclude_none=True),
            timeout=req.timeout + 60))

    def vm_vnc(self, name: str) -> VmVnc:
        """Where a running VM's VNC display listens (its host's loopback)."""
        return VmVnc.model_validate(self._json("GET", f"/api/v1/vms/{name}/vnc"))

    def vm_stats(self, name: str, since: float | None = None) -> Stats:
        """The VM's CPU, memory, disk and network of the last 10 minutes (points after
        ``since``, a unix time), as series of [unix time, value]."""
        return Stats.model_validate(self._json("GET", f"/api/v1/vms/{name}/stats",
                                               params=_since(since)))

    def vm_addresses(self, name: str) -> list[VmAddress]:
        return [VmAddress.model_validate(a) for a in self._json("GET", f"/api/v1/vms/{name}/addresses")]

    # -- images ---------------------------------------------------------------------------
    def list_images(self) -> list[Image]:
        return [Image.model_validate(i) for i in self._json("GET", "/api/v1/images")]

    def import_image(self, req: ImageImport) -> Operation:
        return Operation.model_validate(
            self._json("POST", "/api/v1/images", json=req.model_dump()))

    def build_tiny(self, name: str = "tiny", guest_agent: bool = False) -> Operation:
        """Build the tiny test guest; ``guest_agent``: with qemu-guest-agent in it."""
        body = ImageBuildTiny(name=name, guest_agent=guest_agent).model_dump()
        return Operation.model_validate(self._json("POST", "/api/v1/images/build-tiny", json=body))

    def customize_image(self, name: str, req: GuestCustomize) -> Operation:
        """Offline changes to an image no VM uses (libguestfs on the host)."""
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/images/{name}/customize", json=req.model_dump(mode="json")))

    def customize_vm(self, name: str, req: GuestCustomize) -> Operation:
        """Offline changes to the disk of a stopped VM (libguestfs on its host)."""
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/vms/{name}/customize", json=req.model_dump(mode="json")))

    def delete_image(self, name: str) -> Operation:
        return Operation.model_validate(self._json("DELETE", f"/api/v1/images/{name}"))

    def share(self, kind: str, name: str, shared: bool = True) -> bool:
        """Share an image or network (``kind``) with every project, or stop (admins)."""
        answer = self._json("PUT", f"/api/v1/{kind}s/{name}/shared", json={"shared": shared})
        return bool(answer["shared"])

    # -- operations, events, node ---------------------------------------------------------
    def get_operation(self, op_id: str) -> Operation:
        return Operation.model_validate(self._json("GET", f"/api/v1/operations/{op_id}"))

    def list_operations(self, limit: int = 50, *, status: Sequence[str] = (),
                        type: str | None = None, after: str | None = None) -> list[Operation]:
        """Newest first: only those of ``status`` (any of them) and ``type`` where given;
        the next page with ``after`` = the last id of this one."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = list(status)
        if type:
            params["type"] = type
        if after:
            params["after"] = after
        data = self._json("GET", "/api/v1/operations", params=params)
        return [Operation.model_validate(o) for o in data]

    def cancel_operation(self, op_id: str) -> Operation:
        """Drop a pending operation, or ask a running one to stop (``may_cancel``); the
        operation as it is now. Conflict when it is done or cannot be cancelled."""
        return Operation.model_validate(self._json("DELETE", f"/api/v1/operations/{op_id}"))

    def wait(self, op_id: str, timeout: float = 600) -> Operation:
        """Block until the operation is done; raise its error if it failed or was cancelled."""
        op = self.wait_quiet(op_id, timeout)
        if op.status.value in ("failure", "cancelled"):
            raise errors.from_dict(op.error or {"message": op.message or "operation failed"})
        if not op.status.done:
            raise errors.Unavailable(f"operation {op_id} still {op.status.value} after {timeout} s")
        return op

    def wait_quiet(self, op_id: str, timeout: float = 600) -> Operation:
        data = self._json("GET", f"/api/v1/operations/{op_id}/wait",
                          params={"timeout": timeout}, timeout=timeout + 30)
        return Operation.model_validate(data)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Server-Sent Events, as they come (the stream ends when the engine stops)."""
        try:
            with self._http.stream("GET", "/api/v1/events",
                                   **self._in_project({"timeout": httpx.Timeout(10, read=timeout)})
                                   ) as r:
                if r.status_code >= 400:
                    r.read()
                    raise errors.from_dict(r.json().get("error") or {})
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        yield Event.model_validate(json.loads(line[6:]))
        except httpx.ConnectError as exc:
            raise self._unreachable(exc) from exc

    def status(self) -> Status:
        return Status.model_validate(self._json("GET", "/api/v1/status"))

    def list_hosts(self) -> list[Host]:
        return [Host.model_validate(h) for h in self._json("GET", "/api/v1/hosts")]

    def create_join_token(self, ttl_s: int = 3600) -> JoinToken:
        """A one-time token a new host joins with (`corral agent join`)."""
        return JoinToken.model_validate(self._json("POST", "/api/v1/hosts/tokens",
                                                   json={"ttl_s": ttl_s}))

    def get_host(self, name: str) -> HostDetail:
        """One host, with its live memory (KSM, balloons) when its agent answers."""
        return HostDetail.model_validate(self._json("GET", f"/api/v1/hosts/{name}"))

    def host_stats(self, name: str, since: float | None = None) -> Stats:
        """The host's CPU % and its VMs' memory, disk and network of the last 10 minutes."""
        return Stats.model_validate(self._json("GET", f"/api/v1/hosts/{name}/stats",
                                               params=_since(since)))

    def update_host(self, name: str, req: HostPatch) -> Operation:
        """Change a host's settings (``HostPatch(ksm=True)``)."""
        return Operation.model_validate(self._json(
            "PATCH", f"/api/v1/hosts/{name}", json=req.model_dump(mode="json", exclude_unset=True)))

    def host_maintenance(self, name: str, force: bool = False) -> Operation:
        """Evacuate a host (its VMs move to other hosts), then keep new VMs off it;
        Conflict naming the VMs that cannot move (``force``: they stay on it)."""
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/hosts/{name}/maintenance", json={"force": force}))

    def evacuation_plan(self, name: str) -> EvacuationPlan:
        """What ``host_maintenance`` would do now, VM by VM; moves nothing."""
        return EvacuationPlan.model_validate(self._json(
            "POST", f"/api/v1/hosts/{name}/maintenance", params={"explain": True}, json={}))

    def host_reboot(self, name: str, return_vms: bool = False, force: bool = False
                    ) -> Operation:
        """Empty the host, reboot its machine, wait until it is back (``return_vms``: then
        activate it and bring back the VMs that moved off)."""
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/hosts/{name}/reboot",
            json={"return_vms": return_vms, "force": force}))

    def host_shutdown(self, name: str, force: bool = False) -> Operation:
        """Empty the host, then power its machine off (it stays in maintenance)."""
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/hosts/{name}/shutdown", json={"force": force}))

    def host_activate(self, name: str) -> Operation:
        """Take a host out of maintenance (its agent must answer)."""
        return Operation.model_validate(self._json("POST", f"/api/v1/hosts/{name}/activate"))

    def remove_host(self, name: str, force: bool = False) -> Operation:
        """Forget a host; Conflict while VMs are defined on it (``force``: a dead host's
        VMs become ``unknown``)."""
        return Operation.model_validate(
            self._json("DELETE", f"/api/v1/hosts/{name}", params={"force": force}))

    # -- networks -------------------------------------------------------------------------
    def list_networks(self) -> list[Network]:
        return [Network.model_validate(n) for n in self._json("GET", "/api/v1/networks")]

    def get_network(self, name: str) -> Network:
        return Network.model_validate(self._json("GET", f"/api/v1/networks/{name}"))

    def create_network(self, req: NetworkCreate) -> Operation:
        body = req.model_dump(mode="json", exclude_none=True)
        return Operation.model_validate(self._json("POST", "/api/v1/networks", json=body))

    def delete_network(self, name: str) -> Operation:
        return Operation.model_validate(self._json("DELETE", f"/api/v1/networks/{name}"))

    def leases(self, network: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/api/v1/networks/{network}/leases"))

    # -- storage: pools, volumes, disks of VMs --------------------------------------------
    def list_pools(self) -> list[storage_api.Pool]:
        return [storage_api.Pool.model_validate(p)
                for p in self._json("GET", "/api/v1/storage/pools")]

    def get_pool(self, name: str) -> storage_api.Pool:
        return storage_api.Pool.model_validate(self._json("GET", f"/api/v1/storage/pools/{name}"))

    def create_pool(self, req: storage_api.PoolCreate) -> Operation:
        body = req.model_dump(mode="json", exclude_none=True)
        return Operation.model_validate(self._json("POST", "/api/v1/storage/pools", json=body))

    def delete_pool(self, name: str) -> Operation:
        return Operation.model_validate(self._json("DELETE", f"/api/v1/storage/pools/{name}"))

    def list_volumes(self, pool: str | None = None) -> list[storage_api.Volume]:
        path = f"/api/v1/storage/pools/{pool}/volumes" if pool else "/api/v1/storage/volumes"
        return [storage_api.Volume.model_validate(v) for v in self._json("GET", path)]

    def get_volume(self, pool: str, name: str) -> storage_api.Volume:
        data = self._json("GET", f"/api/v1/storage/pools/{pool}/volumes/{name}")
        return storage_api.Volume.model_validate(data)

    def create_volume(self, pool: str, req: storage_api.VolumeCreate) -> Operation:
        body = req.model_dump(mode="json", exclude_none=True)
        return Operation.model_validate(
            self._json("POST", f"/api/v1/storage/pools/{pool}/volumes", json=body))

    def resize_volume(self, pool: str, name: str, size: str | int) -> Operation:
        return Operation.model_validate(self._json(  # the engine validates the size (422)
            "POST", f"/api/v1/storage/pools/{pool}/volumes/{name}/resize", json={"size": size}))

    def delete_volume(self, pool: str, name: str) -> Operation:
        return Operation.model_validate(
            self._json("DELETE", f"/api/v1/storage/pools/{pool}/volumes/{name}"))

    def list_vm_disks(self, vm: str) -> list[storage_api.VmDisk]:
        return [storage_api.VmDisk.model_validate(d)
                for d in self._json("GET", f"/api/v1/vms/{vm}/disks")]

    def attach_disk(self, vm: str, volume: str, bus: str = "virtio") -> Operation:
        """Attach volume ``POOL/NAME`` to a VM (hot-plugged when it runs)."""
        body = {"volume": volume, "bus": bus}
        return Operation.model_validate(self._json("POST", f"/api/v1/vms/{vm}/disks", json=body))

    def resize_root_disk(self, vm: str, size: str | int) -> Operation:
        """Grow a VM's root disk (live when it runs); ``size`` e.g. ``"20G"``."""
        return Operation.model_validate(self._json(  # the engine validates the size (422)
            "POST", f"/api/v1/vms/{vm}/disks/root/resize", json={"size": size}))

    def detach_disk(self, vm: str, volume: str) -> Operation:
        """Detach volume ``POOL/NAME`` from a VM."""
        try:
            pool, name = storage_api.split_volume(volume)
        except ValueError as exc:
            raise errors.InvalidInput(str(exc), field="volume") from None
        return Operation.model_validate(
            self._json("DELETE", f"/api/v1/vms/{vm}/disks/{pool}/{name}"))

    # -- NICs of VMs ------------------------------------------------------------------------
    def list_nics(self, vm: str) -> list[VmNic]:
        return [VmNic.model_validate(n) for n in self._json("GET", f"/api/v1/vms/{vm}/nics")]

    def add_nic(self, vm: str, network: str, mac: str | None = None,
                ip: str | None = None, *, security_groups: list[str] | None = None,
                inbound_kbps: int | None = None, outbound_kbps: int | None = None) -> Operation:
        """Add a NIC on ``network`` (hot-plugged when the VM runs); ``ip``: a static lease;
        ``security_groups``: filter it; ``inbound_kbps``/``outbound_kbps``: QoS in KiB/s."""
        body: dict[str, Any] = {k: v for k, v in (
            ("network", network), ("mac", mac), ("ip", ip), ("inbound_kbps", inbound_kbps),
            ("outbound_kbps", outbound_kbps)) if v is not None}
        if security_groups:
            body["security_groups"] = security_groups
        return Operation.model_validate(self._json("POST", f"/api/v1/vms/{vm}/nics", json=body))

    def update_nic(self, vm: str, mac: str, security_groups: list[str]) -> VmNic:
        """Replace a NIC's security groups ([]: unfiltered), applied live."""
        body = NicUpdate(security_groups=security_groups).model_dump(exclude_none=True)
        return VmNic.model_validate(self._json("PATCH", f"/api/v1/vms/{vm}/nics/{mac}",
                                               json=body))

    def remove_nic(self, vm: str, mac: str) -> Operation:
        return Operation.model_validate(self._json("DELETE", f"/api/v1/vms/{vm}/nics/{mac}"))

    # -- security groups ------------------------------------------------------------------
    def list_security_groups(self) -> list[SecurityGroup]:
        return [SecurityGroup.model_validate(g)
                for g in self._json("GET", "/api/v1/security-groups")]

    def get_security_group(self, name: str) -> SecurityGroup:
        return SecurityGroup.model_validate(self._json("GET", f"/api/v1/security-groups/{name}"))

    def create_security_group(self, name: str, description: str = "") -> SecurityGroup:
        body = SecurityGroupCreate(name=name, description=description).model_dump()
        return SecurityGroup.model_validate(
            self._json("POST", "/api/v1/security-groups", json=body))

    def delete_security_group(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/security-groups/{name}")

    def add_sg_rule(self, group: str, rule: SgRuleCreate) -> SgRule:
        """Add an allow rule; the group's NICs get it before this returns."""
        return SgRule.model_validate(self._json(
            "POST", f"/api/v1/security-groups/{group}/rules",
            json=rule.model_dump(mode="json", exclude_none=True)))

    def remove_sg_rule(self, group: str, rule_id: str) -> None:
        self.request("DELETE", f"/api/v1/security-groups/{group}/rules/{rule_id}")

    # -- snapshots, clones, templates -----------------------------------------------------
    def list_snapshots(self, vm: str) -> list[Snapshot]:
        return [Snapshot.model_validate(x) for x in self._json("GET", f"/api/v1/vms/{vm}/snapshots")]

    def create_snapshot(self, vm: str, req: SnapshotCreate) -> Operation:
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/vms/{vm}/snapshots", json=req.model_dump(exclude_none=True)))

    def revert_snapshot(self, vm: str, name: str) -> Operation:
        return Operation.model_validate(
            self._json("POST", f"/api/v1/vms/{vm}/snapshots/{name}/revert"))

    def delete_snapshot(self, vm: str, name: str) -> Operation:
        return Operation.model_validate(
            self._json("DELETE", f"/api/v1/vms/{vm}/snapshots/{name}"))

    def clone_vm(self, source: str, req: VmClone) -> Operation:
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/vms/{source}/clone", json=req.model_dump(mode="json",
                                                                       exclude_none=True)))

    def create_template(self, req: TemplateCreate) -> Operation:
        return Operation.model_validate(
            self._json("POST", "/api/v1/templates", json=req.model_dump()))

    def list_templates(self) -> list[Image]:
        return [Image.model_validate(i) for i in self._json("GET", "/api/v1/templates")]

    def delete_template(self, name: str) -> Operation:
        return Operation.model_validate(self._json("DELETE", f"/api/v1/templates/{name}"))

    def export_ova(self, vm: str, file: str) -> Operation:
        return Operation.model_validate(self._json(
            "POST", f"/api/v1/vms/{vm}/export-ova", json=OvaExport(file=file).model_dump()))

    def import_ova(self, req: OvaImport) -> Operation:
        return Operation.model_validate(
            self._json("POST", "/api/v1/ova-imports", json=req.model_dump(exclude_none=True)))


def _since(since: float | None) -> dict[str, float]:
    return {} if since is None else {"since": since}
