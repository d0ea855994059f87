"""cumulo: launch and manage containers through the cumulod REST API."""

from __future__ import annotations

import os
import sys
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

import typer

from cumulo.cli import complete, create_request, settings
from cumulo.cli import output as o
from cumulo.cli.complete import Image, Instance, Network
from cumulo.cli.settings import ProjectOpt
from cumulo.client import Client
from cumulo.domain import evacuation_mode
from cumulo.domain.units import format_size
from cumulo.errors import CumuloError

ROOT: dict[str, Any] = {"no_args_is_help": True, "help": __doc__,
                        "pretty_exceptions_enable": False}
app = typer.Typer(**ROOT)
host_app = typer.Typer(no_args_is_help=True, help="What this host can do.")
config_app = typer.Typer(no_args_is_help=True, help="Change an instance's limits.")
op_app = typer.Typer(no_args_is_help=True, help="Long-running operations.")
net_app = typer.Typer(no_args_is_help=True, help="Virtual networks: bridges, subnets, isolation.")
app.add_typer(host_app, name="host")
app.add_typer(config_app, name="config")
app.add_typer(op_app, name="operation")
app.add_typer(net_app, name="network")

# Commands in other modules, imported only to run them (or for help and completion):
# name -> (module, attribute, Typer sub-app or a command's function)
LAZY: dict[str, tuple[str, str, bool]] = {
    "image": ("cumulo.cli.images", "image_app", True),
    "publish": ("cumulo.cli.images", "publish", False),
    "remote": ("cumulo.cli.remotes", "remote_app", True),
    "identity": ("cumulo.cli.identities", "identity_app", True),
    "audit": ("cumulo.cli.identities", "audit_app", True),
    "cluster": ("cumulo.cli.cluster", "cluster_app", True),
    "migrate": ("cumulo.cli.remotes", "migrate", False),
    "storage": ("cumulo.cli.storage", "storage_app", True),
    "volume": ("cumulo.cli.storage", "volume_app", True),
    "snapshot": ("cumulo.cli.storage", "snapshot_app", True),
    "bench": ("cumulo.cli.bench", "bench_app", True),
    "monitor": ("cumulo.cli.monitor", "monitor", False),
    "ui": ("cumulo.cli.ui", "ui", False),
    "placement-group": ("cumulo.cli.placement", "placement_group_app", True),
    "project": ("cumulo.cli.projects", "project_app", True),
    "file": ("cumulo.cli.files", "file_app", True),
    "tpm": ("cumulo.cli.tpm", "tpm_app", True),
}
NET_LAZY = {"acl": ("cumulo.cli.firewall", "acl_app"),
            "forward": ("cumulo.cli.firewall", "forward_app")}


def _root(project: Annotated[str | None, typer.Option(
        "--project", help="project (tenant) of every command: before CUMULO_PROJECT and"
        " `cumulo project switch`")] = None) -> None:
    settings.choose_project(project)


def _command_name(argv: list[str]) -> str:
    """The command word, after the global options (``--project P``, ``--project=P``)."""
    args = list(argv)
    while args and args[0].startswith("--project"):
        args = args[1:] if "=" in args[0] else args[2:]
    return args[0] if args else ""


def command_app(argv: list[str]) -> typer.Typer:
    """The app holding only the command ``argv`` runs, or all of them for help, completion
    and mistakes: typer builds the click object of every command it holds on each run,
    which for all of them (~25 ms) is as much as a quick command may cost in all."""
    name = _command_name(argv)
    own = {typer.main.get_command_name(i.name or i.callback.__name__): i
           for i in app.registered_commands if i.callback is not None}
    groups = {i.name: i for i in app.registered_groups}
    every = (name not in own and name not in groups and name not in LAZY
             or complete.ENV in os.environ)
    root = typer.Typer(**ROOT)
    root.callback()(_root)   # a group even when it holds one command
    root.registered_commands = [i for n, i in own.items() if every or n == name]
    root.registered_groups = [i for n, i in groups.items() if every or n == name]
    for lazy, (module, attr, is_app) in LAZY.items():
        if every or lazy == name:
            obj = getattr(import_module(module), attr)
            if is_app:
                root.add_typer(obj, name=lazy)
            else:
                root.command(lazy)(obj)
    if (every or name == "network") and not net_app.registered_groups:
        for sub, (module, attr) in NET_LAZY.items():
            net_app.add_typer(getattr(import_module(module), attr), name=sub)
    return root


FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]
Cpu = Annotated[float | None, typer.Option(help="CPUs worth of time (0.5 = half a CPU)")]
CpuWeight = Annotated[int | None, typer.Option(help="relative CPU share 1..10000 (100 default)")]
Cpuset = Annotated[str | None, typer.Option(help="CPUs it may run on, e.g. 0-1")]
Memory = Annotated[str | None, typer.Option(help="memory limit, e.g. 256MiB")]
MemorySwap = Annotated[str | None, typer.Option(help="memory+swap limit, e.g. 512MiB")]
Pids = Annotated[int | None, typer.Option(help="max processes")]
IoWeight = Annotated[int | None, typer.Option(help="relative block I/O share 10..1000")]
Type = Annotated[str, typer.Option("--type", help="instance type")]
Privileged = Annotated[bool, typer.Option(help="no user namespace: root inside is host root")]
Accel = Annotated[str | None, typer.Option(help="vm: auto, kvm (hardware) or tcg (emulation)")]
Evacuate = Annotated[str | None, typer.Option(
    "--evacuate", help="in a cluster, when its member is evacuated: auto (default: live"
    " where it can, cold otherwise), live-migrate, migrate (cold: stop, move, start) or"
    " stop (stopped in place, started again by `cumulo cluster restore`)")]
Machine = Annotated[str | None, typer.Option(
    help="vm: microvm (default: no firmware or PCI, fastest boot, no hot-plug),"
         " pc (the default with --io emulated), or q35")]
IoFamily = Annotated[str | None, typer.Option(
    "--io", help="vm: paravirt (virtio) or emulated (IDE disk, e1000 NIC)")]
NetworkOpt = Annotated[list[str] | None, typer.Option(
    "--network", help="attach a NIC on this network (repeatable); 'none': loopback only;"
    " default: the network 'default' if there is one")]
IpOpt = Annotated[list[str] | None, typer.Option(
    "--ip", help="static IPv4 address for the NIC of the matching --network")]
LimitIn = Annotated[str | None, typer.Option(
    "--limit-ingress", help="cap on what each NIC receives, e.g. 20Mbit")]
LimitOut = Annotated[str | None, typer.Option(
    "--limit-egress", help="cap on what each NIC sends, e.g. 50Mbit")]
PoolOpt = Annotated[str | None, typer.Option("--pool", help="storage pool of the root")]
CopyOpt = Annotated[bool, typer.Option(
    "--copy", help="a full copy of the image (default: a copy-on-write clone of it)")]
DiskOpt = Annotated[str | None, typer.Option("--disk", help="root size cap, e.g. 2GiB")]
TpmOpt = Annotated[bool, typer.Option(
    "--tpm", help="vm, appvm: a TPM 2.0 (one swtpm per VM; an app VM needs a kernel --with tpm)")]
KernelOpt = Annotated[str | None, typer.Option(
    help="appvm: a kernel image (image build kernel), or generic for Debian's;"
         " default: the newest app kernel built here, else generic")]
SshKeyOpt = Annotated[str | None, typer.Option(
    "--ssh-key", help="vm, system container: an SSH public key file (or the key itself) for"
    " root in the guest (and cloud-init's default user where cloud-init puts it)")]
FirmwareOpt = Annotated[str | None, typer.Option(
    help="vm booting its image's disk: bios (SeaBIOS) or uefi (OVMF; the default where"
         " it is installed)")]
SecureBootOpt = Annotated[bool, typer.Option(
    "--secure-boot", help="vm booting its image's disk: UEFI secure boot (OVMF with"
    " Microsoft's keys, q35 with SMM); the disk's boot chain must be signed")]
UserDataOpt = Annotated[str | None, typer.Option(
    "--user-data", help="vm booting its own disk, system container: a cloud-init user-data"
    " file (#cloud-config YAML or a #! script) for its NoCloud seed")]
CloudConfigOpt = Annotated[list[str] | None, typer.Option(
    "--cloud-config", help="vm booting its own disk, system container: a cloud-config YAML"
    " file or KEY=VALUE (repeatable), merged into the user-data")]
AppOpt = Annotated[str | None, typer.Option(
    "--app", help="appvm: a static program to run as PID 1 (then give only NAME)")]


def client() -> Client:
    return Client()


def _argv(command: list[str] | None) -> list[str]:
    """The command after ``--``; click may hand the separator through."""
    args = list(command or [])
    return args[1:] if args[:1] == ["--"] else args


def _limits(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _nics(networks: list[str] | None, ips: list[str] | None, ingress: str | None = None,
          egress: str | None = None) -> list[dict[str, Any]] | None:
    if networks != ["none"]:
        if not networks and (ips or ingress or egress):
            raise typer.BadParameter("--ip and --limit-* need a --network",
                                     param_hint="--network")
        if len(ips or []) > len(networks or []):
            raise typer.BadParameter("each --ip needs a --network before it",
                                     param_hint="--ip")
    return create_request.nics(networks, ips, ingress, egress)


def _app_image(image: str, name: str | None, type_: str, app_path: str | None,
               command: list[str] | None) -> tuple[str, str, str, list[str] | None]:
    """With --app: upload the program as an app image; the first positional is NAME and
    the rest (click hands the first one over as ``name``) are the program's arguments."""
    if app_path is None:
        if name is None:
            raise typer.BadParameter("give IMAGE and NAME", param_hint="NAME")
        return image, name, type_, command
    args = _argv(([name] if name is not None else []) + list(command or []))
    if type_ not in ("container", "appvm"):
        raise typer.BadParameter(f"--app is for --type appvm, not {type_}")
    path = Path(app_path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CumuloError(f"cannot read app {app_path}: {err.strerror}") from None
    with client() as c:
        img = c.import_app(path.name, data)
    return img["fingerprint"], image, "appvm", [path.name, *args]


def _ssh_key(value: str | None) -> str | None:
    """--ssh-key: the key itself if it reads like one, else a file holding it; checked here
    so a bad file fails before anything is created (the daemon checks again)."""
    if value is None:
        return None
    from cumulo.domain import ssh_keys

    text = value
    if not value.lstrip().startswith(tuple(ssh_keys.KEY_TYPES)):
        try:
            text = Path(value).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not a text file"
            raise CumuloError(f"cannot read SSH key file {value}: {reason}") from None
    return "\n".join(ssh_keys.parse_keys(text))


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not a text file"
        raise CumuloError(f"cannot read {what} file {path}: {reason}") from None


def _cloud_init(user_data: str | None, cloud_config: list[str] | None
                ) -> dict[str, Any]:
    """--user-data and --cloud-config read and checked here, before anything is made
    (the daemon checks again)."""
    if user_data is None and not cloud_config:
        return {}
    from cumulo.domain import cloud_init

    out: dict[str, Any] = {}
    if user_data is not None:
        out["user_data"] = cloud_init.check_user_data(_read_text(user_data, "user-data"),
                                                      f"user-data {user_data}")
    pieces = []
    for item in cloud_config or ():
        if "=" in item and not Path(item).expanduser().is_file():
            pieces.append(cloud_init.parse_item(item))
        else:
            pieces.append(cloud_init.parse_cloud_config(
                _read_text(item, "cloud-config"), f"cloud-config {item}"))
    if pieces:
        out["cloud_config"] = cloud_init.merge(*pieces)
    return out


def _create(start: bool, image: str, name: str | None, type_: str, app_path: str | None,
            tpm: bool, cpu: float | None, cpu_weight: int | None, cpuset: str | None,
            memory: str | None, memory_swap: str | None, pids: int | None,
            io_weight: int | None, privileged: bool, accel: str | None, machine: str | None,
            io: str | None, network: list[str] | None, ip: list[str] | None,
            limit_ingress: str | None, limit_egress: str | None, pool: str | None,
            copy: bool, disk: str | None, ssh_key: str | None, kernel: str | None,
            firmware: str | None, secure_boot: bool, user_data: str | None,
            cloud_config: list[str] | None, evacuate: str | None, command: list[str] | None,
            project: str | None, target: str | None = None, ephemeral: bool = False,
            placement_group: str | None = None) -> None:
    """launch (``start``) and create: their options, by name."""
    image, name, type_, command = _app_image(image, name, type_, app_path, command)
    seed = _cloud_init(user_data, cloud_config)
    options = {"accel": accel, "machine": machine, "io": io, "tpm": "on" if tpm else None,
               "kernel": kernel, "firmware": firmware, evacuation_mode.KEY: evacuate,
               "security.secureboot": "true" if secure_boot else None}
    nics = _nics(network, ip, limit_ingress, limit_egress)
    key = _ssh_key(ssh_key)
    with client() as c:
        done = create_request.create(
            c, name, image, start=start, type_=type_, command=_argv(command),
            project=project, networks=nics,
            limits=_limits(cpu=cpu, cpu_weight=cpu_weight, cpuset=cpuset, memory=memory,
                           memory_swap=memory_swap, pids=pids, io_weight=io_weight),
            privileged=privileged, options=options, pool=pool, copy=copy, disk=disk,
            ephemeral=ephemeral, placement_group=placement_group, ssh_key=key,
            target=target, seed=seed)
    o.say(done)


@app.command()
def launch(image: Image, name: Annotated[str | None, typer.Argument()] = None,
           type_: Type = "container", app_path: AppOpt = None, tpm: TpmOpt = False, cpu: Cpu = None,
           cpu_weight: CpuWeight = None, cpuset: Cpuset = None, memory: Memory = None,
           memory_swap: MemorySwap = None, pids: Pids = None, io_weight: IoWeight = None,
           privileged: Privileged = False, accel: Accel = None, machine: Machine = None,
           io: IoFamily = None, network: NetworkOpt = None, ip: IpOpt = None,
           limit_ingress: LimitIn = None, limit_egress: LimitOut = None,
           pool: PoolOpt = None, copy: CopyOpt = False, disk: DiskOpt = None,
           ssh_key: SshKeyOpt = None, kernel: KernelOpt = None,
           firmware: FirmwareOpt = None, secure_boot: SecureBootOpt = False,
           user_data: UserDataOpt = None,
           cloud_config: CloudConfigOpt = None, evacuate: Evacuate = None,
           command: Annotated[list[str] | None, typer.Argument(help="PID 1 (after --)")] = None,
           project: ProjectOpt = None,
           target: Annotated[str | None, typer.Option(
               help="in a cluster: the member to run it on (default: the least used)")] = None,
           ephemeral: Annotated[bool, typer.Option(
               "--ephemeral", help="stateless: in a cluster, recreated from its image on"
               " another member if its own stays offline")] = False,
           placement_group: Annotated[str | None, typer.Option(
               help="in a cluster: a placement group of the project (cumulo"
               " placement-group create)")] = None) -> None:
    """Create and start an instance from IMAGE (with --app: launch --type appvm NAME --app PATH)."""
    _create(True, **locals())   # every parameter above, by name


@app.command()
def create(image: Image, name: Annotated[str | None, typer.Argument()] = None,
           type_: Type = "container", app_path: AppOpt = None, tpm: TpmOpt = False, cpu: Cpu = None,
           cpu_weight: CpuWeight = None, cpuset: Cpuset = None, memory: Memory = None,
           memory_swap: MemorySwap = None, pids: Pids = None, io_weight: IoWeight = None,
           privileged: Privileged = False, accel: Accel = None, machine: Machine = None,
           io: IoFamily = None, network: NetworkOpt = None, ip: IpOpt = None,
           limit_ingress: LimitIn = None, limit_egress: LimitOut = None,
           pool: PoolOpt = None, copy: CopyOpt = False, disk: DiskOpt = None,
           ssh_key: SshKeyOpt = None, kernel: KernelOpt = None,
           firmware: FirmwareOpt = None, secure_boot: SecureBootOpt = False,
           user_data: UserDataOpt = None,
           cloud_config: CloudConfigOpt = None, evacuate: Evacuate = None,
           command: Annotated[list[str] | None, typer.Argument(help="PID 1 (after --)")] = None,
           project: ProjectOpt = None) -> None:
    """Create an instance from IMAGE without starting it."""
    _create(False, **locals())   # every parameter above, by name


def _state(name: str, action: str, project: str | None, timeout: float = 30, force: bool = False
           ) -> None:
    with client() as c:
        c.set_state(name, action, timeout=timeout, force=force, project=project)


@app.command()
def start(name: Instance, project: ProjectOpt = None) -> None:
    """Start a stopped instance."""
    _state(name, "start", project)


@app.command()
def stop(name: Instance,
         timeout: Annotated[float, typer.Option(help="seconds before SIGKILL")] = 30,
         force: Annotated[bool, typer.Option(help="kill at once")] = False,
         project: ProjectOpt = None) -> None:
    """Stop an instance: SIGTERM (a system container's init: its image's stop signal,
    SIGRTMIN+3 for systemd), then SIGKILL after --timeout."""
    _state(name, "stop", project, timeout, force)


@app.command()
def restart(name: Instance, timeout: Annotated[float, typer.Option()] = 30,
            project: ProjectOpt = None) -> None:
    """Stop (if running) and start again."""
    _state(name, "restart", project, timeout)


@app.command()
def pause(name: Instance, project: ProjectOpt = None) -> None:
    """Freeze every process of an instance."""
    _state(name, "pause", project)


@app.command()
def resume(name: Instance, project: ProjectOpt = None) -> None:
    """Thaw a paused instance."""
    _state(name, "resume", project)


FileOpt = Annotated[str | None, typer.Option(
    "--file", help="absolute path on the daemon's host (default: in the instance's dir)")]


@app.command()
def checkpoint(name: Instance, file: FileOpt = None, project: ProjectOpt = None) -> None:
    """Save a running instance's whole state and stop it (restore resumes it).

    VMs: memory and device state. Containers: every process of the container, with CRIU."""
    with client() as c:
        op = c.checkpoint(name, file, project=project)
    meta = op.get("resources") or {}
    size = f", {format_size(meta['transferred'])}" if meta.get("transferred") else ""
    o.say(f"Checkpointed {name} to {meta.get('file', '?')}{size}")


@app.command()
def restore(name: Instance, file: FileOpt = None, project: ProjectOpt = None) -> None:
    """Run a checkpointed instance again, where it was."""
    with client() as c:
        c.checkpoint(name, file, restore=True, project=project)
    o.say(f"Restored {name}")


@app.command()
def delete(name: Instance, force: Annotated[bool, typer.Option(help="also a running one")] = False,
           project: ProjectOpt = None) -> None:
    """Delete an instance and everything it left on the host."""
    with client() as c:
        c.delete(name, force=force, project=project)


@app.command("list")
def list_(fmt: FormatOpt = o.Format.table, project: ProjectOpt = None) -> None:
    """List instances."""
    with client() as c:
        rows = c.instances(project)
    for r in rows:
        r["limits_text"] = o.limits_text(r["limits"])
        r["image_short"] = r["image"][:12]
    cols = [("NAME", "name"), ("TYPE", "type"), ("STATE", "state"),
            ("IMAGE", "image_short"), ("LIMITS", "limits_text"), ("EXIT", "exit_code")]
    if any(r.get("location") for r in rows):   # in a cluster: where each one runs
        cols.insert(3, ("LOCATION", "location"))
    o.table(rows, cols, fmt)


@app.command()
def info(name: Instance, fmt: FormatOpt = o.Format.table, project: ProjectOpt = None,
         tpm: Annotated[bool, typer.Option(
             "--tpm", help="a VM's vTPM instead: PCRs and the boot event log")] = False
         ) -> None:
    """State, pid, limits and live usage of an instance."""
    if tpm:
        import_module("cumulo.cli.tpm").show(name, project, fmt)
        return
    with client() as c:
        inst = c.instance(name, project)
    if fmt == o.Format.json:
        o.emit_json(inst)
        return
    usage = inst.get("usage") or {}
    cpu_ns = usage.get("cpu_time_ns")
    o.key_values({
        "name": inst["name"], "project": inst["project"], "type": inst["type"],
        "state": inst["state"], "pid": inst["pid"], "image": inst["image"][:12],
        "privileged": inst["privileged"], "command": inst["command"],
        "options": inst["options"] or None,
        "limits": o.limits_text(inst["limits"]) or "none",
        "cpu time": f"{cpu_ns / 1e9:.2f}s" if cpu_ns is not None else None,
        "memory": format_size(usage.get("memory_bytes")),
        "memory peak": format_size(usage.get("memory_peak_bytes")),
        "processes": usage.get("pids"), "exit code": inst["exit_code"],
        "last error": inst["last_error"],
        "nics": [_nic_text(n) for n in inst.get("nics", [])] or "none",
        "root": _root_text(inst.get("root")),
        **_details_text(inst.get("details")),
    }, fmt)


def _details_text(d: dict[str, Any] | None) -> dict[str, Any]:
    """A VM's footprint and balloon, for the info table."""
    if not d:
        return {}
    out: dict[str, Any] = {}
    if "firmware" in d:   # a VM booted from its own disk
        out["firmware"] = d["firmware"] + (f", secure boot {'on' if d['secure_boot'] else 'off'}"
                                           if d["firmware"] == "uefi" else "")
    if "initramfs_bytes" in d:
        out["initramfs"] = format_size(d["initramfs_bytes"])
    if "qemu_rss_bytes" in d:
        out["qemu memory"] = (f"rss {format_size(d['qemu_rss_bytes'])},"
                              f" pss {format_size(d['qemu_pss_bytes'])},"
                              f" {d['qemu_threads']} threads")
    if "cgroup" in d:   # the VM's cgroup around QEMU and its swtpm
        lim = d.get("cgroup_limits") or {}
        cpu = lim.get("cpu_max")
        out["cgroup"] = (f"{d['cgroup']} (memory max {format_size(lim.get('memory_max'))},"
                         f" cpu {'unlimited' if cpu is None else f'{cpu:g}'},"
                         f" pids max {lim.get('pids_max')})")
    if "balloon_actual_bytes" in d:
        out["guest memory"] = (f"{format_size(d['balloon_actual_bytes'])} (balloon;"
                               f" {format_size(d['memory_bytes'])} configured)")
    return out


def _root_text(root: dict[str, Any] | None) -> str:
    if not root:
        return "overlay in the instance dir (made before storage pools)"
    size = f", {format_size(root['size'])} cap" if root.get("size") else ""
    return f"pool {root['pool']}, {'full copy' if root.get('copy') else 'clone'}{size}"


def _nic_text(nic: dict[str, Any]) -> str:
    text = f"eth{nic['index']} {nic['network']} {nic['ip']} {nic['mac']}"
    bw = nic.get("bandwidth") or {}
    for key in ("ingress", "egress"):
        if bw.get(key):
            text += f" {key} {bw[key] / 1e6:g}Mbit/s"
    if nic.get("groups"):
        text += f" groups {','.join(nic['groups'])}"
    c = nic.get("counters")
    if c:
        text += (f" rx {format_size(c['rx_bytes'])} ({c['rx_packets']} packets)"
                 f" tx {format_size(c['tx_bytes'])} ({c['tx_packets']} packets)"
                 f" dropped {c['rx_dropped'] + c['tx_dropped']}")
    return text


@app.command(context_settings={"allow_interspersed_args": False})
def exec(name: Instance,
         command: Annotated[list[str], typer.Argument(help="the command, after --")],
         tty: Annotated[bool, typer.Option("-t", "--tty", help="allocate a terminal")] = False,
         env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE")] = None,
         cwd: Annotated[str, typer.Option(help="working directory")] = "/",
         project: ProjectOpt = None) -> None:
    """Run a command in a running instance; its exit code becomes ours."""
    env_map = dict(e.split("=", 1) for e in env or [] if "=" in e)
    argv = _argv(command)
    if not argv:
        raise typer.BadParameter("give the command after --, e.g. cumulo exec web -- ps")
    from cumulo.cli.exec_client import run_exec  # websockets: only exec pays its import

    with client() as c:
        code = run_exec(c, name, argv, tty_mode=tty, env=env_map, cwd=cwd, project=project)
    raise typer.Exit(code)


@app.command()
def logs(name: Instance, follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
         project: ProjectOpt = None) -> None:
    """The console output of PID 1."""
    with client() as c:
        if follow:
            for chunk in c.console_follow(name, project):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        else:
            data, _ = c.console(name, 0, project)
            sys.stdout.buffer.write(data)


@app.command()
def console(name: Instance, project: ProjectOpt = None) -> None:
    """Attach to the serial console of a VM (detach: ctrl-a q; ctrl-a a sends ctrl-a)."""
    from cumulo.cli.console_client import run_console  # websockets: only console pays it

    with client() as c:
        raise typer.Exit(run_console(c, name, project))


@config_app.command("set")
def config_set(name: Instance, key: str, value: str, project: ProjectOpt = None) -> None:
    """Set a limit (cpu, cpu_weight, cpuset, memory, memory_swap, pids, io_weight);
    a running instance gets it at once. Or cluster.evacuate (auto, live-migrate, migrate,
    stop). Value 'none' removes it."""
    if key in ("evacuate", evacuation_mode.KEY):
        with client() as c:
            c.set_options(name, {evacuation_mode.KEY: None if value == "none" else value},
                          project)
        return
    key = key.replace("-", "_")
    with client() as c:
        c.set_limits(name, {key: None if value == "none" else value}, project)


@config_app.command("show")
def config_show(name: Instance, fmt: FormatOpt = o.Format.table,
                project: ProjectOpt = None) -> None:
    """Show an instance's limits."""
    with client() as c:
        o.key_values(c.instance(name, project)["limits"], fmt)


@host_app.command("info")
def host_info(fmt: FormatOpt = o.Format.table) -> None:
    """Kernel, cgroups, KVM, runtimes and tools of the daemon's host."""
    with client() as c:
        o.key_values(c.host_info(), fmt)


@host_app.command("fingerprint")
def host_fingerprint() -> None:
    """The sha256 of the certificate `cumulod --listen` serves: what clients pin
    (`cumulo remote add --fingerprint`, CUMULO_FINGERPRINT)."""
    with client() as c:
        fp = c.server().get("certificate_fingerprint")
    if not fp:
        raise CumuloError("this cumulod serves no HTTPS (start it with --listen HOST:PORT)")
    print(fp)


@op_app.command("list")
def op_list(fmt: FormatOpt = o.Format.table) -> None:
    """Recent operations."""
    with client() as c:
        rows = c.operations()
    o.table(rows, [("ID", "id"), ("DESCRIPTION", "description"), ("STATUS", "status"),
                   ("ERROR", "error")], fmt)


@op_app.command("cancel")
def op_cancel(op_id: str) -> None:
    """Cancel a running operation (an image build or import): its work is undone."""
    with client() as c:
        op = c.cancel_operation(op_id)
        try:
            c.wait(op, timeout=120)
        except CumuloError as err:   # the expected end: failed as "cancelled"
            o.say(f"Operation {op_id} ended: {err}")


@net_app.command("create")
def network_create(name: str, subnet: Annotated[str | None, typer.Option(
        help="IPv4 CIDR, e.g. 10.20.30.0/24; default: a free /24 of 10.210.0.0/16")] = None,
        project: ProjectOpt = None,
        dns_domain: Annotated[str | None, typer.Option(
            help="instances resolve each other as NAME and NAME.DOMAIN; default: cumulo")] = None,
        nat: Annotated[bool, typer.Option(
            "--nat/--isolated", help="masquerade traffic out of the subnet, or keep it inside "
                                     "(default)")] = False,
        type: Annotated[str, typer.Option(
            "--type", help="bridge (this host's) or overlay (one segment over every cluster"
                           " member, VXLAN)")] = "bridge",
        vni: Annotated[int | None, typer.Option(
            help="an overlay's VXLAN id; default: the lowest free one")] = None,
        mtu: Annotated[int | None, typer.Option(
            help="an overlay's MTU; default: the underlay's less 50")] = None) -> None:
    """Create a network: a bridge with its own subnet, DHCP and DNS, isolated from others."""
    with client() as c:
        net = c.create_network(name, subnet, project, dns_domain=dns_domain, nat=nat,
                               type=type, vni=vni, mtu=mtu)
    extra = f", overlay VNI {net['vni']}, MTU {net['mtu']}" if net.get("vni") else ""
    if net.get("own_netns"):
        extra += ", in a namespace of its own: another project has this subnet too"
    o.say(f"Created network {name} {net['subnet']} (gateway {net['gateway']}, "
          f"domain {net['dns_domain']}, {'nat' if net['nat'] else 'isolated'}{extra})")


@net_app.command("list")
def network_list(fmt: FormatOpt = o.Format.table, project: ProjectOpt = None) -> None:
    """List networks."""
    with client() as c:
        rows = c.networks(project)
    for row in rows:
        row.setdefault("mode", "nat" if row.get("nat") else "isolated")
    o.table(rows, [("NAME", "name"), ("SUBNET", "subnet"), ("GATEWAY", "gateway"),
                   ("BRIDGE", "bridge"), ("MODE", "mode"), ("DOMAIN", "dns_domain"),
                   ("USED BY", "used_by")], fmt)


@net_app.command("info")
def network_info(name: Network, fmt: FormatOpt = o.Format.table,
                 project: ProjectOpt = None) -> None:
    """A network and the instances on it."""
    with client() as c:
        data = c.network(name, project)
    if fmt != o.Format.json:
        tunnels = data.pop("tunnels", [])
        if data.get("type") != "overlay":
            for key in ("vni", "mtu"):
                data.pop(key, None)
        else:
            data["tunnels"] = [f"{t['member']} {t['state']} {t['device']} from {t['local']}"
                               f" to {' '.join(t['peers']) or 'nobody'}" for t in tunnels]
    o.key_values(data, fmt)


@net_app.command("limit")
def network_limit(instance: Instance, network: Annotated[str | None, typer.Option(
        help="only the NIC on this network; default: all")] = None,
        ingress: Annotated[str | None, typer.Option(
            help='cap on what the instance receives, e.g. 20Mbit; "none" lifts it')] = None,
        egress: Annotated[str | None, typer.Option(help="cap on what it sends")] = None,
        burst: Annotated[str | None, typer.Option(help="bucket, e.g. 64k")] = None,
        project: ProjectOpt = None) -> None:
    """Change the bandwidth caps of an instance's NICs (at once if it runs)."""
    with client() as c:
        inst = c.set_bandwidth(instance, {"network": network, "ingress": ingress,
                                          "egress": egress, "burst": burst}, project)
    for nic in inst["nics"]:
        o.say(_nic_text(nic))


@net_app.command("attach")
def network_attach(network: Network, instance: Instance, name: Annotated[str | None, typer.Option(
        "--name", help="the NIC's name inside, eth<N>; default: the first free one")] = None,
        ip: Annotated[str | None, typer.Option(
            help="static IPv4 address; default: the next free one")] = None,
        project: ProjectOpt = None) -> None:
    """Give an instance a NIC on a network: at once if it runs, else at its next start."""
    with client() as c:
        inst = c.attach_nic(instance, network, name, ip, project)
    nic = next(n for n in inst["nics"] if n["network"] == network)
    o.err.print(f"Attached {instance} to {network}: {_nic_text(nic)}")


@net_app.command("detach")
def network_detach(network: Network, instance: Instance, project: ProjectOpt = None) -> None:
    """Remove an instance's NIC on a network (at once if it runs) and its address."""
    with client() as c:
        c.detach_nic(instance, network, project)
    o.err.print(f"Detached {instance} from {network}")


@net_app.command("delete")
def network_delete(name: Network, project: ProjectOpt = None) -> None:
    """Delete a network no instance uses."""
    with client() as c:
        c.delete_network(name, project)


def main() -> None:
    try:
        command_app(sys.argv[1:])(prog_name="cumulo")
    except CumuloError as err:
        print(f"Error: {err}", file=sys.stderr)  # one line, never wrapped
        sys.exit(1)
