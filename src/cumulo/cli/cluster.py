"""cumulo cluster ...: enable a cluster, invite members, list them, declare what they
offer, evacuate and restore them, rebalance, cluster-wide settings."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cumulo.cli import output as o
from cumulo.cli.settings import ProjectOpt
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
        m["groups_text"] = ", ".join(m.get("groups") or [])
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
                       ("features_text", "Features"), ("groups_text", "Groups"),
                       ("silent", "Last heartbeat (s ago)")):
        print(f"{label + ':':24}{o.cell(m.get(key))}")


def _run(path: str, what: str, body: dict[str, Any] | None = None) -> None:
    from rich.progress import BarColumn, Progress, TextColumn

    with Client() as c, Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"),
                                 console=o.err, transient=True) as bar:
        task = bar.add_task(what, total=1.0)

        def show(op: dict[str, Any]) -> None:
            bar.update(task, completed=op.get("progress", 0.0),
                       description=op.get("message") or what)

        op = c.wait(c.request("POST", path, json=body).json(), show, timeout=3600)
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


@cluster_app.command("recover")
def recover(name: Annotated[str, typer.Argument(help="a stateful instance of an offline"
                                                    " member")],
            target: Annotated[str | None, typer.Option(help="the member to recreate it on")
                              ] = None,
            from_snapshot: Annotated[str | None, typer.Option(
                help="the snapshot (default: its latest)")] = None,
            project: ProjectOpt = None) -> None:
    """Recreate a stateful instance of an offline member from a snapshot held by another
    member. Refused for now: snapshots stay in their member's own storage pools."""
    with Client() as c:
        c.request("POST", "/cluster/recover", params={"project": c._p(project)},
                  json={"instance": name, "target": target, "snapshot": from_snapshot})


@cluster_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="the member")],
           force: Annotated[bool, typer.Option(
               "--force", help="even if it still has instances: they are forgotten (use"
               " it for a host that is gone for good)")] = False) -> None:
    """Remove a member from the cluster (empty it first: `cumulo cluster evacuate`)."""
    with Client() as c:
        c.request("DELETE", f"/cluster/members/{name}", params={"force": force})
    o.err.print(f"Member {name} removed")


@cluster_app.command("set")
def set_(name: Annotated[str, typer.Argument(help="a member")],
         key: Annotated[str, typer.Argument(help="cpus, memory or disk")],
         value: Annotated[str, typer.Argument(help="e.g. 4, 8GiB, 200GiB")]) -> None:
    """Declare what a member offers to instances (the placement engine never places
    more than that on it; its host's own figures by default)."""
    if key not in ("cpus", "memory", "disk"):
        o.err.print(f"Error: unknown member key {key!r}: cpus, memory or disk")
        raise typer.Exit(1)
    body: dict[str, Any] = {key: float(value) if key == "cpus" and _number(value) else value}
    with Client() as c:
        c.request("PATCH", f"/cluster/members/{name}", json=body)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@cluster_app.command("rebalance")
def rebalance(dry_run: Annotated[bool, typer.Option(
                  "--dry-run", help="only print the moves it would make")] = False,
              max_moves: Annotated[int, typer.Option(
                  help="at most this many moves")] = 10) -> None:
    """Move instances (live) between members so that their declared memory use is even:
    the bounded list of moves that lowers the imbalance score the most."""
    with Client() as c:
        plan = c.request("GET", "/cluster/rebalance", params={"max_moves": max_moves}).json()
    rows = [{"move": f"{m['instance']}", "from": m["source"], "to": m["target"],
             "score": f"{m['score_before']:.4f} -> {m['score_after']:.4f}"}
            for m in plan["moves"]]
    if rows:
        o.table(rows, [("MOVE", "move"), ("FROM", "from"), ("TO", "to"),
                       ("IMBALANCE", "score")], o.Format.table)
    summary = (f"imbalance {plan['score_before']:.4f} -> {plan['score_after']:.4f} with"
               f" {len(rows)} move(s)")
    if dry_run or not rows:
        o.err.print(summary + (" (dry run)" if dry_run and rows else
                               "" if rows else ": nothing to move"))
        return
    _run("/cluster/rebalance", "rebalancing", {"max_moves": max_moves})


group_app = typer.Typer(no_args_is_help=True,
                        help="Member groups: `cumulo launch ... --target @GROUP` places there.")
cluster_app.add_typer(group_app, name="group")


@group_app.command("assign")
def group_assign(member: Annotated[str, typer.Argument(help="a member")],
                 groups: Annotated[str, typer.Argument(
                     help="every group it is to be in, comma-separated ('' for none)")]
                 ) -> None:
    """Put a member in these groups (and in no other), as `incus cluster group assign`."""
    names = [g.strip() for g in groups.split(",") if g.strip()]
    with Client() as c:
        c.request("PATCH", f"/cluster/members/{member}", json={"groups": names})


@group_app.command("list")
def group_list(fmt: FormatOpt = o.Format.table) -> None:
    """Groups and their members (a group exists while a member is in it)."""
    with Client() as c:
        ms = c.request("GET", "/cluster/members").json()
    groups: dict[str, list[str]] = {}
    for m in ms:
        for g in m["groups"]:
            groups.setdefault(g, []).append(m["name"])
    o.table([{"name": g, "members": ", ".join(sorted(n))} for g, n in sorted(groups.items())],
            [("NAME", "name"), ("MEMBERS", "members")], fmt)


config_app = typer.Typer(no_args_is_help=True,
                         help="Cluster-wide settings: the automatic rebalancer's.")
cluster_app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(fmt: FormatOpt = o.Format.table) -> None:
    """Every setting and its value."""
    with Client() as c:
        cfg = c.request("GET", "/cluster/config").json()
    o.table([{"key": k, "value": v} for k, v in sorted(cfg.items())],
            [("KEY", "key"), ("VALUE", "value")], fmt)


@config_app.command("set")
def config_set(key: Annotated[str, typer.Argument(help="e.g. rebalance.interval")],
               value: Annotated[str, typer.Argument(help="its new value")]) -> None:
    """Change a setting (rebalance.interval > 0 turns the automatic rebalancer on)."""
    with Client() as c:
        c.request("PATCH", "/cluster/config", json={key: value})


@config_app.command("unset")
def config_unset(key: Annotated[str, typer.Argument(help="the setting")]) -> None:
    """Back to the default."""
    with Client() as c:
        c.request("PATCH", "/cluster/config", json={key: None})


@cluster_app.command("join")
def join(token: Annotated[str, typer.Argument(help="from `cumulo cluster add NAME`")],
         timeout: Annotated[float, typer.Option(help="seconds to wait for the restart")]
         = 60) -> None:
    """Make this host (a running cumulod with --listen, holding no instance) a member:
    the same as starting it with `cumulod --join TOKEN`. It restarts on the cluster's
    store; this waits until it answers again as a member."""
    import time

    from cumulo.errors import CumuloError

    with Client() as c:
        member = c.request("POST", "/cluster/join", json={"token": token}).json()["member"]
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client() as c:
                if c.request("GET", "/cluster").json().get("member") == member:
                    break
        except (CumuloError, OSError):
            pass   # restarting: its socket is away for a moment
        if time.monotonic() > deadline:
            o.err.print(f"Error: cumulod did not come back as member {member} within"
                        f" {timeout:g} s: see its log")
            raise typer.Exit(1)
        time.sleep(0.5)
    o.err.print(f"Joined the cluster as member {member}")
