"""The `corral` command: `corral --help` lists everything."""

from __future__ import annotations

import typer

from corral.cli import agent, host, image, lab, net, node, output, remote, sg, snapshot, vm, vm_nic
from corral.cli import audit as audit_cli
from corral.cli import auth as auth_cli
from corral.cli import cert as cert_cli
from corral.cli import cluster as cluster_cli
from corral.cli import ha as ha_cli
from corral.cli import project as project_cli
from corral.cli import role as role_cli
from corral.cli import stats as stats_cli
from corral.cli import storage as storage_cli
from corral.cli import user as user_cli

app = typer.Typer(
    help="corral: virtual machines on your own hosts.\n\n"
    "Start with `corral up --detach`, then `corral image build-tiny` and "
    "`corral vm create demo --image tiny --start`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    remote_name: str | None = typer.Option(
        None, "--remote", envvar="CORRAL_REMOTE", metavar="NAME",
        help="The remote to talk to for this command (`corral remote list`); beats "
             "CORRAL_URL/CORRAL_TOKEN/CORRAL_DATA_DIR and the current remote"),
    project_name: str | None = typer.Option(
        None, "--project", envvar="CORRAL_PROJECT", metavar="NAME",
        help="The project this command acts in, e.g. `corral --project web vm list`; beats "
             "the one `corral project switch` chose (default: `default`)"),
) -> None:
    output.selected_remote = remote_name
    output.selected_project = project_name


app.command("up")(node.up)
app.command("down")(node.down)
app.command("status")(node.status)
app.command("events")(node.events)
app.add_typer(vm.app, name="vm")
app.add_typer(image.app, name="image")
app.add_typer(host.app, name="host")
app.add_typer(agent.app, name="agent")
app.add_typer(net.app, name="net")
app.add_typer(sg.app, name="sg")
app.add_typer(node.operation_app, name="operation")
app.add_typer(storage_cli.app, name="storage")
app.add_typer(storage_cli.volume_app, name="volume")
vm.app.add_typer(storage_cli.disk_app, name="disk")
vm.app.add_typer(snapshot.app, name="snapshot")
vm.app.add_typer(vm_nic.app, name="nic")
vm.app.command("stats")(stats_cli.vm_stats)
host.app.command("stats")(stats_cli.host_stats)
vm.app.command("clone")(snapshot.clone)
vm.app.command("export")(snapshot.export)
vm.app.command("import-ova")(snapshot.import_ova)
app.add_typer(snapshot.template_app, name="template")
app.add_typer(remote.app, name="remote")
app.add_typer(cert_cli.app, name="cert")
app.add_typer(lab.app, name="lab")
app.add_typer(user_cli.app, name="user")
app.add_typer(user_cli.token_app, name="token")
app.add_typer(project_cli.app, name="project")
app.add_typer(role_cli.app, name="role")
app.add_typer(audit_cli.app, name="audit")
app.add_typer(auth_cli.app, name="auth")
app.add_typer(cluster_cli.app, name="cluster")
app.add_typer(ha_cli.app, name="ha")
app.command("login")(user_cli.login)
app.command("logout")(user_cli.logout)
app.command("whoami")(user_cli.whoami)

if __name__ == "__main__":
    app()
