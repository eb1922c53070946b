"""`corral vm ...`: VM lifecycle."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.api import Hardware, HardwarePatch, PowerAction, VmCreate, VmPatch
from corral.api.migration import VmMigrate
from corral.api.models import CLOUD_INIT_SECRETS
from corral.api.scheduling import Placement
from corral.cli import vm_agent, vm_group, vm_guest
from corral.cli.console import attach_console
from corral.cli.customize import vm_customize
from corral.cli.output import (
    DataDirOpt,
    OutputFormat,
    OutputOpt,
    WaitOpt,
    build,
    client,
    emit,
    err,
    follow,
    handled,
    human_bytes,
    out,
    show_one,
)
from corral.errors import InsufficientResources, InvalidInput

app = typer.Typer(help="Create, run and delete virtual machines.", no_args_is_help=True)

COLUMNS = [
    ("NAME", lambda v: v.name), ("STATE", lambda v: v.state.value), ("CPUS", lambda v: v.cpus),
    ("MEMORY", lambda v: f"{v.memory_mib} MiB"), ("DISK", lambda v: human_bytes(v.disk_bytes)),
    ("IMAGE", lambda v: v.image), ("NETWORK", lambda v: v.network or "-"),
    ("HOST", lambda v: v.host or "-"),
    ("HA", lambda v: (f"yes ({v.ha_priority})" if v.ha_priority else "yes") if v.ha else "-"),
]

EVACUATION_HELP = ("What `corral host maintenance` does with it: auto (live migration, else "
                   "stop, move and start on the target), migrate (live only: if it cannot, "
                   "the maintenance is refused), stop (stopped and left on its host)")
HA_HELP = ("High availability: restarted in place when it goes down unasked (at most "
           "ha.restart_max times in ha.restart_window_s), on another host when its host "
           "fails. Every disk must be on a shared or rbd pool (--pool)")
HA_PRIORITY_HELP = "Order of HA restarts, 0 to 1000, higher first"
RESTART_POLICY_HELP = ("always: any stop not asked through corral (a crash, a guest "
                       "powering itself off); on-failure: not after the guest powered "
                       "itself off")


@app.command("create")
def create(
    name: str = typer.Argument(..., help="VM name: letters, digits, '-' and '_'"),
    image: str = typer.Option(None, "--image", "-i", help="Image to clone the root disk from"),
    iso: str = typer.Option(None, "--iso", help="ISO image to install from (CD-ROM; needs --disk)"),
    template: str = typer.Option(None, "--template", "-t",
                                 help="Template to clone the root disk from (= --image)"),
    cpus: int = typer.Option(1, "--cpus", help="Virtual CPUs"),
    memory: str = typer.Option("512M", "--memory", "-m", help="Memory, e.g. 512M or 2G"),
    disk: str = typer.Option(None, "--disk", help="Root disk size, e.g. 10G (default: image size)"),
    network: str = typer.Option("default", "--network", help="Network for the first NIC"),
    security_group: list[str] = typer.Option(None, "--security-group", "--sg",
                                             help="Security group of the first NIC "
                                             "(repeatable)"),
    pool: str = typer.Option(None, "--pool", help="Storage pool of the root disk (dir, shared "
                             "or rbd; default: this host's storage dir)"),
    start: bool = typer.Option(False, "--start", help="Start the VM once created"),
    firmware: str = typer.Option("bios", "--firmware", help="bios, or uefi (OVMF, with the "
                                 "VM's own NVRAM)", rich_help_panel="Hardware"),
    secure_boot: bool = typer.Option(False, "--secure-boot", help="UEFI Secure Boot with "
                                     "the usual keys enrolled (implies --firmware uefi)",
                                     rich_help_panel="Hardware"),
    tpm: bool = typer.Option(False, "--tpm", help="An emulated TPM 2.0 (swtpm), as Windows "
                             "11 needs", rich_help_panel="Hardware"),
    machine: str = typer.Option("q35", "--machine", help="q35 or i440fx",
                                rich_help_panel="Hardware"),
    boot: str = typer.Option(None, "--boot", help="Boot order, e.g. disk,cdrom,network "
                             "(default: disks, then CD-ROMs)", rich_help_panel="Hardware"),
    cpu_model: str = typer.Option("host-model", "--cpu-model", help="host-model, "
                                  "host-passthrough or a libvirt CPU model (e.g. Haswell)",
                                  rich_help_panel="Hardware"),
    sockets: int = typer.Option(1, "--sockets", help="CPU sockets (cores per socket: "
                                "--cpus / (sockets x threads))", rich_help_panel="Hardware"),
    threads: int = typer.Option(1, "--threads", help="Threads per core",
                                rich_help_panel="Hardware"),
    graphics: str = typer.Option("vnc", "--graphics", help="vnc (on the host's loopback) or "
                                 "none (serial console only)", rich_help_panel="Hardware"),
    cpu_max: int = typer.Option(None, "--cpu-max", help="vCPU hot-plug: the most vCPUs a "
                                "running VM can be given with `vm set --cpus`",
                                rich_help_panel="Hardware"),
    memory_max: str = typer.Option(None, "--memory-max", metavar="SIZE", help="Memory "
                                   "hot-plug: the most memory a running VM can be given "
                                   "with `vm set --memory` (in steps of 128M), e.g. 4G",
                                   rich_help_panel="Hardware"),
    cpu_pin: str = typer.Option(None, "--cpu-pin", metavar="auto|LIST", help="Pin each vCPU "
                                "to a host CPU: auto, or a list like 0-3,8-11 with one "
                                "host CPU per vCPU (QEMU's other threads go on the rest)",
                                rich_help_panel="Hardware"),
    numa: str = typer.Option(None, "--numa", metavar="auto|N", help="Guest NUMA cells, vCPUs "
                             "and memory split evenly (auto: as many as the host's nodes); "
                             "memory bound to the host's nodes where it has as many",
                             rich_help_panel="Hardware"),
    hugepages: str = typer.Option(None, "--hugepages", metavar="2M|1G", help="Back the "
                                  "memory with huge pages (refused when the host has too "
                                  "few free)", rich_help_panel="Hardware"),
    watchdog: str = typer.Option("none", "--watchdog", metavar="ACTION", help="An i6300esb "
                                 "watchdog and what to do when the guest stops feeding it: "
                                 "reset, poweroff, shutdown, pause, dump, inject-nmi (none: "
                                 "no watchdog)", rich_help_panel="Hardware"),
    video: str = typer.Option("vga", "--video", metavar="MODEL", help="Video card of the "
                              "VNC display: vga, virtio, bochs, qxl or none",
                              rich_help_panel="Hardware"),
    description: str = typer.Option("", "--description", help="Free text shown by vm show"),
    host: str = typer.Option(None, "--host", help="Pin to this host; it must still pass every "
                             "rule (room, tags, group...)", rich_help_panel="Placement"),
    host_tag: list[str] = typer.Option(None, "--host-tag", metavar="TAG", help="A tag the "
                                       "host must have, e.g. ssd (repeatable; `corral host "
                                       "tag`)", rich_help_panel="Placement"),
    group: str = typer.Option(None, "--group", help="Affinity group to join (`corral vm "
                              "group create`)", rich_help_panel="Placement"),
    explain: bool = typer.Option(False, "--explain", help="Dry run: print where the VM would "
                                 "go and how every host was judged (which rule refused it, "
                                 "with figures); create nothing", rich_help_panel="Placement"),
    evacuation: str = typer.Option("auto", "--evacuation", metavar="MODE", help=EVACUATION_HELP,
                                   rich_help_panel="Placement"),
    ha: bool = typer.Option(False, "--ha", help=HA_HELP,
                            rich_help_panel="High availability"),
    ha_priority: int = typer.Option(0, "--ha-priority", metavar="N", help=HA_PRIORITY_HELP,
                                    rich_help_panel="High availability"),
    restart_policy: str = typer.Option("always", "--restart-policy",
                                       metavar="always|on-failure", help=RESTART_POLICY_HELP,
                                       rich_help_panel="High availability"),
    hostname: str = vm_guest.HostnameOpt, user: str = vm_guest.UserOpt,
    ssh_key: list[str] = vm_guest.SshKeyOpt, password_hash: str = vm_guest.PasswordHashOpt,
    user_data: str = vm_guest.UserDataOpt, network_config: str = vm_guest.NetworkConfigOpt,
    cloud_init: bool = vm_guest.CloudInitOpt,
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Create a VM whose disk is a linked clone (qcow2 overlay) of --image, or a blank
    --disk that installs from an --iso image attached as a CD-ROM.

    Any cloud-init option attaches a NoCloud seed CD-ROM (hostname, users, SSH keys,
    user-data, network-config) that cloud images and the tiny guest apply at boot.

    Hardware: BIOS, q35, the host's CPU model and a VNC display by default. Windows 11:
    --secure-boot --tpm. `corral vm show` prints what a VM has.

    Placement: the scheduler takes the hosts that pass every rule (up, free vCPUs and
    memory, --host-tag, pool and network, CPU model, --group) and picks by the engine's
    policy (spread or pack). A refusal says which rule each host failed; --explain shows
    it without creating anything.

    High availability: --ha (every disk on a shared or rbd pool, e.g. --pool shared1).
    Example: corral vm create db --image debian --pool shared1 --ha --ha-priority 100
    """
    with handled():
        if template is not None:  # a template is an image made from a VM (corral template)
            if image is not None:
                raise InvalidInput("give --image or --template, not both", field="template")
            image = template
        ci = vm_guest.cloud_init_from_flags(
            hostname=hostname, user=user, ssh_key=ssh_key, password_hash=password_hash,
            user_data=user_data, network_config=network_config, force=cloud_init,
        )
        hardware = build(Hardware, firmware="uefi" if secure_boot else firmware,
                         secure_boot=secure_boot, tpm=tpm, machine=machine,
                         boot=_boot_order(boot) if boot else [],
                         cpu_pin=cpu_pin, numa=numa, hugepages=hugepages,
                         cpu_model=cpu_model, sockets=sockets, threads=threads,
                         graphics=graphics, cpu_max=cpu_max, memory_max=memory_max,
                         watchdog=watchdog, video=video)
        req = build(VmCreate, name=name, image=image, iso=iso, cpus=cpus, memory=memory,
                    disk=disk, network=network, start=start, cloud_init=ci, pool=pool,
                    security_groups=list(security_group or []), hardware=hardware,
                    description=description, host=host, host_tags=list(host_tag or []),
                    group=group, evacuation=evacuation, ha=ha, ha_priority=ha_priority,
                    restart_policy=restart_policy)
        with client(data_dir) as c:
            if explain:
                _print_placement(c.explain_vm(req), output)
                return
            try:
                op = c.create_vm(req)
            except InsufficientResources as exc:
                _print_refusal(exc)
                raise
            follow(c, op, f"create VM {name}", wait, output)


def _print_refusal(exc: InsufficientResources) -> None:
    """Each host's reasons of a refused placement, before the error line says the gist."""
    hosts = exc.details.get("hosts")
    if isinstance(hosts, dict) and hosts:
        width = max(len(h) for h in hosts)
        for host, reasons in hosts.items():
            err.print(f"  {host:{width}}  {'; '.join(reasons) or 'eligible'}", highlight=False,
                      markup=False)


def _print_placement(p: Placement, output: OutputFormat) -> None:
    """The explanation; exit 2 when no host can take the VM (as a refused create does)."""
    if output == OutputFormat.JSON:
        print(p.model_dump_json(indent=2))
    else:
        for line in p.text:  # plain: a table of its own that must not wrap
            print(line)
    if p.chosen is None and p.current is None:
        raise typer.Exit(2)


@app.command("placement")
def placement(name: str = typer.Argument(..., help="VM name"),
              output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """Where a VM runs, and how every host would be judged for it now by the rules a create
    follows (its own vCPUs and memory left out): eligible or not, which rule refused each
    host with figures, and the ranking of those that could take it."""
    with handled(), client(data_dir) as c:
        _print_placement(c.vm_placement(name), output)


@app.command("list")
def list_vms(output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt) -> None:
    """List VMs with their state.

    `unknown` with no host: its host was removed while dead (`corral host remove --force`);
    nothing restarts it anywhere, `corral vm delete` removes it."""
    with handled(), client(data_dir) as c:
        emit(c.list_vms(), output, COLUMNS)


def _boot_order(boot: str) -> list[str]:
    return [b.strip() for b in boot.split(",") if b.strip()]


@app.command("set")
def set_vm(
    name: str = typer.Argument(..., help="VM to change"),
    cpus: int = typer.Option(None, "--cpus", help="vCPUs: live up to the cpu-max it was "
                             "started with, else at next start"),
    memory: str = typer.Option(None, "--memory", "-m", help="Memory, e.g. 2G (next start "
                               "when running)"),
    memory_target: str = typer.Option(None, "--memory-target", help="Balloon target, e.g. "
                                      "1G: the memory the guest may use, live; 'full': all "
                                      "of it"),
    description: str = typer.Option(None, "--description", help="Free text (live)"),
    cpu_model: str = typer.Option(None, "--cpu-model", help="host-model, host-passthrough "
                                  "or a libvirt CPU model (next start)",
                                  rich_help_panel="Hardware"),
    cpu_max: str = typer.Option(None, "--cpu-max", help="vCPU hot-plug ceiling (next start; "
                                "'none': no headroom)", rich_help_panel="Hardware"),
    sockets: int = typer.Option(None, "--sockets", help="CPU sockets (next start)",
                                rich_help_panel="Hardware"),
    threads: int = typer.Option(None, "--threads", help="Threads per core (next start)",
                                rich_help_panel="Hardware"),
    boot: str = typer.Option(None, "--boot", help="Boot order, e.g. cdrom,disk (next start)",
                             rich_help_panel="Hardware"),
    graphics: str = typer.Option(None, "--graphics", help="vnc or none (next start)",
                                 rich_help_panel="Hardware"),
    memory_max: str = typer.Option(None, "--memory-max", metavar="SIZE|none", help="Memory "
                                   "hot-plug ceiling (next start; 'none': no hot-plug)",
                                   rich_help_panel="Hardware"),
    cpu_pin: str = typer.Option(None, "--cpu-pin", metavar="auto|LIST|none", help="vCPU "
                                "pinning (next start)", rich_help_panel="Hardware"),
    numa: str = typer.Option(None, "--numa", metavar="auto|N|none", help="Guest NUMA cells "
                             "(next start)", rich_help_panel="Hardware"),
    hugepages: str = typer.Option(None, "--hugepages", metavar="2M|1G|none", help="Huge "
                                  "pages backing the memory (next start)",
                                  rich_help_panel="Hardware"),
    watchdog: str = typer.Option(None, "--watchdog", metavar="ACTION", help="Watchdog "
                                 "action, or none (next start)", rich_help_panel="Hardware"),
    video: str = typer.Option(None, "--video", metavar="MODEL", help="vga, virtio, bochs, "
                              "qxl or none (next start)", rich_help_panel="Hardware"),
    firmware: str = typer.Option(None, "--firmware", help="bios or uefi (stopped VMs only)",
                                 rich_help_panel="Hardware"),
    secure_boot: bool = typer.Option(None, "--secure-boot/--no-secure-boot",
                                     help="UEFI Secure Boot (stopped VMs only)",
                                     rich_help_panel="Hardware"),
    tpm: bool = typer.Option(None, "--tpm/--no-tpm", help="Emulated TPM 2.0 (stopped VMs "
                             "only)", rich_help_panel="Hardware"),
    machine: str = typer.Option(None, "--machine", help="q35 or i440fx (stopped VMs only)",
                                rich_help_panel="Hardware"),
    evacuation: str = typer.Option(None, "--evacuation", metavar="MODE", help=EVACUATION_HELP),
    ha: bool = typer.Option(None, "--ha/--no-ha", help=HA_HELP,
                            rich_help_panel="High availability"),
    ha_priority: int = typer.Option(None, "--ha-priority", metavar="N", help=HA_PRIORITY_HELP,
                                    rich_help_panel="High availability"),
    restart_policy: str = typer.Option(None, "--restart-policy",
                                       metavar="always|on-failure", help=RESTART_POLICY_HELP,
                                       rich_help_panel="High availability"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Change a VM's settings; what is not given stays as it is.

    Live on a running VM: --description, --memory-target (the virtio balloon), --cpus up
    to the --cpu-max it was started with, and more --memory up to the --memory-max it was
    started with (in steps of 128M). At its next start (`vm show` lists them under pending
    until then): other --memory, --cpus beyond that, --cpu-model, --cpu-max, --memory-max,
    --cpu-pin,
    --numa, --hugepages, --sockets, --threads, --boot, --graphics, --watchdog, --video.
    Only while stopped (refused otherwise): --firmware, --secure-boot, --tpm, --machine.
    --evacuation (auto, migrate, stop) is what `host maintenance` does with it.
    --ha/--no-ha, --ha-priority, --restart-policy: high availability (docs/ha.md).

    Example: corral vm set web --cpus 4 --memory-target 1G
    Example: corral vm set db --ha --ha-priority 100 --restart-policy on-failure
    """
    with handled():
        hw: dict[str, object] = {k: v for k, v in {
            "cpu_model": cpu_model, "sockets": sockets, "threads": threads,
            "boot": _boot_order(boot) if boot is not None else None, "graphics": graphics,
            "watchdog": watchdog, "video": video,
            "firmware": firmware, "secure_boot": secure_boot, "tpm": tpm, "machine": machine,
        }.items() if v is not None}
        if cpu_max is not None:
            hw["cpu_max"] = None if cpu_max.lower() == "none" else _int(cpu_max, "cpu_max")
        for key, value in (("cpu_pin", cpu_pin), ("numa", numa), ("hugepages", hugepages),
                           ("memory_max", memory_max)):
            if value is not None:  # 'none' takes the setting away
                hw[key] = None if value.lower() == "none" else value
        if secure_boot and firmware is None:
            hw["firmware"] = "uefi"  # as with create: Secure Boot is UEFI's
        fields: dict[str, object] = {k: v for k, v in {
            "cpus": cpus, "memory": memory, "description": description,
            "evacuation": evacuation, "ha": ha, "ha_priority": ha_priority,
            "restart_policy": restart_policy}.items() if v is not None}
        if memory_target is not None:
            fields["memory_target"] = None if memory_target.lower() == "full" else memory_target
        if hw:
            fields["hardware"] = build(HardwarePatch, **hw)
        if not fields:
            raise InvalidInput("nothing to change: give an option (see --help)")
        req = build(VmPatch, **fields)
        with client(data_dir) as c:
            follow(c, c.update_vm(name, req), f"change VM {name}", wait, output)


def _int(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{field} must be a whole number or 'none', not {value!r}",
                           field=field) from None


@app.command("show")
def show(
    name: str,
    secrets: bool = typer.Option(
        False, "--secrets", help="Also show the cloud-init user-data and password hash, which "
        "are hidden otherwise (permission vm.secrets: operators and admins)"),
    output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Show one VM (state `unknown`, host None: its dead host was removed; see `vm list`).

    cloud-init user-data and password hashes are write-only: shown as null, with
    `user_data_set` / `password_hash_set` saying whether the VM has them; --secrets reads
    them back."""
    with handled(), client(data_dir) as c:
        vm = c.get_vm(name)
        if secrets and vm.cloud_init is not None:
            whole = c.vm_cloud_init(name)
            vm = vm.model_copy(update={"cloud_init": vm.cloud_init.model_copy(
                update={k: getattr(whole, k) for k in CLOUD_INIT_SECRETS})})
        show_one(vm, output)


def _power(action: PowerAction, name: str, wait: bool, output: OutputFormat, data_dir: Path | None,
           force: bool = False, timeout: int = 60) -> None:
    with handled(), client(data_dir) as c:
        op = c.vm_action(name, action, force=force, timeout=timeout)
        follow(c, op, f"{action.value} VM {name}", wait, output, timeout=timeout + 120)


@app.command("start")
def start(name: str, wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
          data_dir: Path = DataDirOpt) -> None:
    """Start a stopped VM."""
    _power(PowerAction.START, name, wait, output, data_dir)


@app.command("stop")
def stop(
    name: str,
    force: bool = typer.Option(False, "--force", help="Power off at once (no graceful shutdown)"),
    timeout: int = typer.Option(60, "--timeout", help="Seconds to wait for the guest before forcing"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Shut a VM down: through its guest agent when one answers, else the ACPI power
    button; forced off after --timeout seconds."""
    _power(PowerAction.STOP, name, wait, output, data_dir, force=force, timeout=timeout)


@app.command("reboot")
def reboot(name: str, wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
           data_dir: Path = DataDirOpt) -> None:
    """Reboot a running VM."""
    _power(PowerAction.REBOOT, name, wait, output, data_dir)


@app.command("pause")
def pause(name: str, wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
          data_dir: Path = DataDirOpt) -> None:
    """Freeze a running VM's CPUs (memory stays)."""
    _power(PowerAction.PAUSE, name, wait, output, data_dir)


@app.command("resume")
def resume(name: str, wait: bool = WaitOpt, output: OutputFormat = OutputOpt,
           data_dir: Path = DataDirOpt) -> None:
    """Resume a paused VM."""
    _power(PowerAction.RESUME, name, wait, output, data_dir)


@app.command("migrate")
def migrate(
    name: str = typer.Argument(..., help="The VM to move (running; stopped: --offline)"),
    to: str | None = typer.Option(None, "--to", help="Target host (default: the scheduler "
                                  "picks one, every placement rule applies)"),
    max_downtime: int | None = typer.Option(None, "--max-downtime", metavar="MS",
                                            help="Longest pause of the guest at the switch, "
                                            "ms (libvirt's default: 300)"),
    bandwidth: int | None = typer.Option(None, "--bandwidth", metavar="MIB_S",
                                         help="Cap of the transfer rate, MiB/s (also of "
                                         "an offline copy)"),
    postcopy: bool = typer.Option(False, "--postcopy", help="Switch to post-copy when "
                                  "pre-copy does not converge"),
    copy_storage: bool = typer.Option(False, "--copy-storage", help="Copy a root disk on "
                                      "the host's own storage to the target meanwhile"),
    offline: bool = typer.Option(False, "--offline", help="Move a stopped VM: copy its "
                                 "files, define it on the target, remove it from its host"),
    explain: bool = typer.Option(False, "--explain", help="Dry run: print where the VM "
                                 "would go and how every other host was judged; move "
                                 "nothing"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Move a running VM to another host while it runs (live migration), or a stopped one
    with --offline.

    Everything is checked first (the target is up, has room, the networks and pools the
    VM uses, its CPU model). Disks on a shared or rbd pool stay where they are; a root disk
    on the host's own storage is copied with --copy-storage. Progress shows what is left
    and the transfer rate; the end says the guest's downtime. `corral operation cancel ID`
    aborts it: the VM keeps running where it was.

    --offline moves a stopped VM: its image (if the target lacks it), its root disk if on
    the host's own storage, UEFI variables and cloud-init seed are copied (checked by
    SHA-256), the VM is defined on the target, and only then removed from its old host. A
    failure or a cancel before that leaves it where it was, with nothing on the target.

    Example: corral vm migrate web1 --to h2 --max-downtime 200
             corral vm migrate db1 --offline --to h2
    """
    with handled(), client(data_dir) as c:
        req = build(VmMigrate, to=to, max_downtime_ms=max_downtime, bandwidth_mib_s=bandwidth,
                    postcopy=postcopy, copy_storage=copy_storage, offline=offline)
        if explain:
            placed = c.explain_migration(name, req)
            _print_placement(placed, output)
            if placed.chosen is None:  # as a refused migration does
                raise typer.Exit(2)
            return
        op = follow(c, c.migrate_vm(name, req), f"migrate VM {name}", wait, output,
                    timeout=24 * 3600)
        if wait and output == OutputFormat.TABLE and op.message:
            out.print(op.message, highlight=False)  # from, to and the downtime


@app.command("delete")
def delete(
    name: str,
    force: bool = typer.Option(False, "--force", help="Power off a running VM first"),
    wait: bool = WaitOpt, output: OutputFormat = OutputOpt, data_dir: Path = DataDirOpt,
) -> None:
    """Delete a VM and its disk (a running VM needs --force)."""
    with handled(), client(data_dir) as c:
        follow(c, c.delete_vm(name, force=force), f"delete VM {name}", wait, output)


@app.command("console")
def console(
    name: str,
    log: bool = typer.Option(False, "--log", help="Print the console log instead of attaching"),
    data_dir: Path = DataDirOpt,
) -> None:
    """Attach to the VM's serial console (leave with Ctrl-]); --log prints what it wrote."""
    with handled(), client(data_dir) as c:
        if log:
            print(c.console_log(name), end="")
            return
        attach_console(c, name)


vm_guest.register(app)
vm_agent.register(app)  # vm exec, vm vnc


app.command("customize")(vm_customize)  # offline changes to a stopped VM's disk (libguestfs)
app.add_typer(vm_group.app, name="group")  # corral vm group create|list|show|delete
