"""cumulo cluster ...: enable a cluster, invite members, list them, evacuate and restore."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cumulo.cli import output as o
from cumulo.client import Client
from cumulo.domain.units import format_size

cluster_app = typer.Typer(no_args_is_help=True,
                          help="Several hosts as one: members on a shared PostgreSQL store.")
FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]


def _rows(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for m in members:
        f = m.get("features") or {}
        m["capacity"] = (f"{m['cpus']} CPU, {format_size(m['memory'])} RAM,"
                         f" {format_size(m['disk'])} disk")
        m["declared"] = (f"{m['instances']} inst, {format_size(m['declared_memory'])},"
                         f" {m['declared_cpus']:g} CPU")
        m["features_text"] = " ".join(
            [*(["kvm"] if f.get("kvm") else []), *(["criu"] if f.get("criu") else []),
             *f.get("runtimes", [])])
    return members


@cluster_app.command("enable")
def enable(name: Annotated[str, typer.Argument(help="this host's name in the cluster")]) -> None:
    """Make this host the first member (its store must be on PostgreSQL, and it needs
    --listen: the members reach each other there)."""
    with Client() as c:
        c.request("POST", "/cluster", json={"name": name})
    o.say(f"Cluster enabled: this host is member {name}")


@cluster_app.command("add")
def add(name: Annotated[str, typer.Argument(help="the new member's name")],
        ttl: Annotated[float, typer.Option(help="seconds the token stays valid")] = 3600
        ) -> None:
    """Print a single-use join token for a new member: `cumulod --listen HOST:PORT --join
    TOKEN` on that host."""
    with Client() as c:
        t = c.request("POST", "/cluster/join-tokens", json={"name": name, "ttl": ttl}).json()
    o.say(f"Join token for {name} (single use, expires {t['expires']}):")
    print(t["token"])


@cluster_app.command("list")
def list_(fmt: FormatOpt = o.Format.table) -> None:
    """Members: address, state, capacity, what is declared on them, features."""
    with Client() as c:
        rows = _rows(c.request("GET", "/cluster/members").json())
    o.table(rows, [("NAME", "name"), ("ADDRESS", "address"), ("STATE", "state"),
                   ("CAPACITY", "capacity"), ("DECLARED", "declared"),
                   ("FEATURES", "features_text")], fmt)


@cluster_app.command("info")
def info(name: Annotated[str | None, typer.Argument(help="a member (default: this one)")]
         = None, fmt: FormatOpt = o.Format.table) -> None:
    """One member in detail."""
    with Client() as c:
        if name is None:
            cl = c.request("GET", "/cluster").json()
            if not cl["enabled"]:
                o.say("This host is in no cluster (`cumulo cluster enable NAME`)")
                return
            name = cl["member"]
        m = _rows([c.request("GET", f"/cluster/members/{name}").json()])[0]
    if fmt == o.Format.json:
        o.emit_json(m)
        return
    for key, label in (("name", "Name"), ("address", "Address"), ("state", "State"),
                       ("capacity", "Capacity"), ("declared", "Declared"),
                       ("features_text", "Features"), ("silent", "Last heartbeat (s ago)")):
        print(f"{label + ':':24}{o.cell(m.get(key))}")


def _run(path: str, what: str) -> None:
    from rich.progress import BarColumn, Progress, TextColumn

    with Client() as c, Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"),
                                 console=o.err, transient=True) as bar:
        task = bar.add_task(what, total=1.0)

        def show(op: dict[str, Any]) -> None:
            bar.update(task, completed=op.get("progress", 0.0),
                       description=op.get("message") or what)

        op = c.wait(c.request("POST", path).json(), show, timeout=3600)
    r = op.get("resources") or {}
    for line in r.get("moved", []) + r.get("restored", []):
        o.say(f"  {line}")
    o.say(op.get("message") or "done")


@cluster_app.command("evacuate")
def evacuate(name: Annotated[str, typer.Argument(help="the member to empty")]) -> None:
    """Move every instance off a member (live when it runs, cold otherwise); no new
    instance goes there until `cumulo cluster restore`."""
    _run(f"/cluster/members/{name}/evacuate", f"evacuating {name}")


@cluster_app.command("restore")
def restore(name: Annotated[str, typer.Argument(help="the evacuated member")]) -> None:
    """Bring back the instances evacuated from a member."""
    _run(f"/cluster/members/{name}/restore", f"restoring {name}")
