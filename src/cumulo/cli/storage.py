"""cumulo storage|volume|snapshot: pools, volumes and snapshots through the REST API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cumulo.cli import output as o
from cumulo.cli.complete import Instance, Volume
from cumulo.cli.settings import ProjectOpt
from cumulo.client import Client
from cumulo.domain.units import format_size

storage_app = typer.Typer(no_args_is_help=True, help="Storage pools (where roots live).")
volume_app = typer.Typer(no_args_is_help=True, help="Volumes: size-capped disks to attach.")
snapshot_app = typer.Typer(no_args_is_help=True,
                           help="Snapshots of an instance's root (or of a volume: --volume).")

FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]
VolumeFlag = Annotated[bool, typer.Option("--volume", help="NAME is a volume, not an instance")]


def _pool_row(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "used_text": format_size(p["used"]), "free_text": format_size(p["free"])}


@storage_app.command("list")
def storage_list(fmt: FormatOpt = o.Format.table) -> None:
    """List storage pools."""
    with Client() as c:
        rows = [_pool_row(p) for p in c.pools()]
    o.table(rows, [("NAME", "name"), ("DRIVER", "driver"), ("PATH", "path"),
                   ("USED", "used_text"), ("FREE", "free_text"), ("ROOTS", "roots"),
                   ("VOLUMES", "volumes")], fmt)


@storage_app.command("info")
def storage_info(name: str, fmt: FormatOpt = o.Format.table) -> None:
    """A pool: driver, path, real disk use, free space, what lives in it."""
    with Client() as c:
        p = c.pool(name)
    if fmt == o.Format.json:
        o.emit_json(p)
        return
    o.key_values({"name": p["name"], "driver": p["driver"], "path": p["path"],
                  "used": format_size(p["used"]), "free": format_size(p["free"]),
                  "total": format_size(p["total"]), "instance roots": p["roots"],
                  "volumes": p["volumes"]}, fmt)


def _attachments(v: dict[str, Any]) -> str:
    return " ".join(f"{a['instance']}:{a['path']}" if a["path"] else a["instance"]
                    for a in v["attachments"])


@volume_app.command("create")
def volume_create(name: str, size: Annotated[str, typer.Option(help="e.g. 1GiB")],
                  pool: Annotated[str | None, typer.Option(help="default: default")] = None,
                  project: ProjectOpt = None) -> None:
    """Create a volume (an ext4 filesystem of SIZE in a pool)."""
    with Client() as c:
        v = c.create_volume(name, size, pool, project)
    o.say(f"Created volume {name} ({format_size(v['size'])} in pool {v['pool']})")


@volume_app.command("list")
def volume_list(fmt: FormatOpt = o.Format.table, project: ProjectOpt = None) -> None:
    """List volumes and where they are attached."""
    with Client() as c:
        rows = c.volumes(project)
    for r in rows:
        r["size_text"], r["used_by"] = format_size(r["size"]), _attachments(r)
    o.table(rows, [("NAME", "name"), ("POOL", "pool"), ("SIZE", "size_text"),
                   ("ATTACHED TO", "used_by")], fmt)


@volume_app.command("info")
def volume_info(name: Volume, fmt: FormatOpt = o.Format.table,
                project: ProjectOpt = None) -> None:
    """A volume: size, space in use, attachments."""
    with Client() as c:
        v = c.volume(name, project)
    if fmt == o.Format.json:
        o.emit_json(v)
        return
    o.key_values({"name": v["name"], "project": v["project"], "pool": v["pool"],
                  "size": format_size(v["size"]), "used": format_size(v["used"]),
                  "attached to": _attachments(v) or "none"}, fmt)


@volume_app.command("attach")
def volume_attach(name: Volume, instance: Instance,
                  path: Annotated[str, typer.Argument(help="mount point in a container")] = "",
                  shared: Annotated[bool, typer.Option(
                      help="allow several running instances at once")] = False,
                  project: ProjectOpt = None) -> None:
    """Attach a volume: a container mounts it at PATH from its next start; a running VM
    gets it hot-plugged as a virtio disk."""
    with Client() as c:
        c.attach_volume(name, instance, path, shared, project)
    o.say(f"Attached {name} to {instance}{' at ' + path if path else ''}")


@volume_app.command("detach")
def volume_detach(name: Volume, instance: Instance, project: ProjectOpt = None) -> None:
    """Detach a volume from an instance (hot-unplugged from a running VM)."""
    with Client() as c:
        c.detach_volume(name, instance, project)


@volume_app.command("resize")
def volume_resize(name: Volume, size: str, project: ProjectOpt = None) -> None:
    """Grow (online) or shrink (detached; never below what is in use) a volume."""
    with Client() as c:
        v = c.resize_volume(name, size, project)
    o.say(f"Resized volume {name} to {format_size(v['size'])}")


@volume_app.command("delete")
def volume_delete(name: Volume, project: ProjectOpt = None) -> None:
    """Delete a detached volume and its snapshots."""
    with Client() as c:
        c.delete_volume(name, project)


@snapshot_app.command("create")
def snapshot_create(name: str, snap: str, volume: VolumeFlag = False,
                    stateful: Annotated[bool, typer.Option(
                        "--stateful", help="a running VM: save its memory too, so a restore"
                        " continues where it was")] = False,
                    project: ProjectOpt = None) -> None:
    """Snapshot an instance's root (containers: also while running; VMs: stopped, or
    running with --stateful) or a volume."""
    with Client() as c:
        c.snapshot("create", name, snap, volume, project, stateful)
    o.say(f"Created {'stateful ' if stateful else ''}snapshot {snap} of {name}")


@snapshot_app.command("list")
def snapshot_list(name: str, volume: VolumeFlag = False, fmt: FormatOpt = o.Format.table,
                  project: ProjectOpt = None) -> None:
    """Snapshots of an instance or a volume."""
    with Client() as c:
        rows = c.snapshots(name, volume, project)
    o.table(rows, [("SNAPSHOT", "name"), ("STATEFUL", "stateful")], fmt)


@snapshot_app.command("restore")
def snapshot_restore(name: str, snap: str, volume: VolumeFlag = False,
                     project: ProjectOpt = None) -> None:
    """Bring back the exact files of a snapshot (the instance must be stopped); a stateful
    snapshot also runs the VM again from the instant it was taken."""
    with Client() as c:
        c.snapshot("restore", name, snap, volume, project)
    o.say(f"Restored {name} to snapshot {snap}")


@snapshot_app.command("delete")
def snapshot_delete(name: str, snap: str, volume: VolumeFlag = False,
                    project: ProjectOpt = None) -> None:
    """Delete a snapshot."""
    with Client() as c:
        c.snapshot("delete", name, snap, volume, project)
