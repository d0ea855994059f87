"""cumulo network acl|forward: security groups and port forwards through the REST API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cumulo.cli import output as o
from cumulo.cli.complete import Instance, Network
from cumulo.cli.settings import ProjectOpt
from cumulo.client import Client

acl_app = typer.Typer(no_args_is_help=True, help="Security groups: allow rules on NICs.")
rule_app = typer.Typer(no_args_is_help=True, help="Rules of a security group.")
forward_app = typer.Typer(no_args_is_help=True,
                          help="Port forwards from a host address to an instance.")
acl_app.add_typer(rule_app, name="rule")

FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]
NetOpt = Annotated[str | None, typer.Option(
    "--network", help="only the NIC on this network (default: all the instance's NICs)")]


@acl_app.command("create")
def acl_create(name: str, description: Annotated[str, typer.Option()] = "",
               project: ProjectOpt = None) -> None:
    """Create an empty security group: a NIC in it takes only what its rules allow in."""
    with Client() as c:
        c.create_group(name, description, project)
    o.say(f"Created security group {name}")


@acl_app.command("list")
def acl_list(fmt: FormatOpt = o.Format.table, project: ProjectOpt = None) -> None:
    """List security groups."""
    with Client() as c:
        rows = c.groups(project)
    for r in rows:
        r["rule_count"] = len(r["rules"])
    o.table(rows, [("NAME", "name"), ("RULES", "rule_count"), ("USED BY", "used_by"),
                   ("DESCRIPTION", "description")], fmt)


@acl_app.command("info")
def acl_info(name: str, fmt: FormatOpt = o.Format.table,
             project: ProjectOpt = None) -> None:
    """A security group: its numbered rules and the NICs in it."""
    with Client() as c:
        g = c.group(name, project)
    if fmt == o.Format.json:
        o.emit_json(g)
        return
    o.key_values({"name": g["name"], "description": g["description"],
                  "used by": ", ".join(g["used_by"]) or "none",
                  **{f"rule {r['index']}": r["text"] for r in g["rules"]}}, fmt)


@acl_app.command("delete")
def acl_delete(name: str, project: ProjectOpt = None) -> None:
    """Delete a security group no NIC is in."""
    with Client() as c:
        c.delete_group(name, project)


@acl_app.command("attach")
def acl_attach(name: str, instance: Instance, network: NetOpt = None,
               project: ProjectOpt = None) -> None:
    """Put an instance's NICs in the group (applies at once, also while running)."""
    with Client() as c:
        c.attach_group(name, instance, network, project)
    o.say(f"Attached security group {name} to {instance}")


@acl_app.command("detach")
def acl_detach(name: str, instance: Instance, network: NetOpt = None,
               project: ProjectOpt = None) -> None:
    """Take an instance's NICs out of the group (applies at once)."""
    with Client() as c:
        c.attach_group(name, instance, network, project, detach=True)


@rule_app.command("add")
def rule_add(name: str,
             direction: Annotated[str, typer.Option(help="ingress or egress")] = "ingress",
             protocol: Annotated[str, typer.Option(help="tcp, udp, icmp or any")] = "any",
             port: Annotated[str | None, typer.Option(help="80 or 8000-8080 (tcp/udp)")] = None,
             source: Annotated[str | None, typer.Option(
                 help="peer CIDR (the source of ingress, the destination of egress)")] = None,
             group: Annotated[str | None, typer.Option(
                 help="peer: the NICs in this security group")] = None,
             project: ProjectOpt = None) -> None:
    """Allow traffic (applies at once to every NIC in the group)."""
    rule = {"direction": direction, "protocol": protocol, "ports": port, "cidr": source,
            "group": group}
    with Client() as c:
        g = c.add_rule(name, rule, project)
    o.say(f"Added rule {g['rules'][-1]['index']}: {g['rules'][-1]['text']}")


@rule_app.command("remove")
def rule_remove(name: str, index: int, project: ProjectOpt = None) -> None:
    """Remove rule INDEX (numbers from `acl info`); applies at once."""
    with Client() as c:
        c.remove_rule(name, index, project)


def _forward_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        r["listen"] = f"{r['listen_address']}:{r['listen_port']}"
        r["to"] = f"{r['instance']} ({r['target_ip']}:{r['target_port']})"
    return rows


@forward_app.command("add")
def forward_add(network: Network,
                listen: Annotated[str, typer.Argument(help="HOST_ADDRESS:PORT")],
                target: Annotated[str, typer.Argument(help="INSTANCE[:PORT]")],
                protocol: Annotated[str, typer.Option(help="tcp or udp")] = "tcp",
                project: ProjectOpt = None) -> None:
    """Forward a port of a host address to an instance on NETWORK."""
    addr, _, port = listen.rpartition(":")
    inst, _, tport = target.partition(":")
    if not addr or not port.isdigit() or (tport and not tport.isdigit()):
        raise typer.BadParameter("use HOST_ADDRESS:PORT INSTANCE[:PORT], e.g. "
                                 "192.0.2.10:8080 web:80")
    body = {"listen_address": addr, "listen_port": int(port), "protocol": protocol,
            "instance": inst, "target_port": int(tport) if tport else None}
    with Client() as c:
        f = c.add_forward(network, body, project)
    o.say(f"Forwarding {protocol} {addr}:{port} to {inst} "
          f"({f['target_ip']}:{f['target_port']})")


@forward_app.command("list")
def forward_list(network: Network, fmt: FormatOpt = o.Format.table,
                 project: ProjectOpt = None) -> None:
    """Port forwards into NETWORK."""
    with Client() as c:
        rows = _forward_rows(c.forwards(network, project))
    o.table(rows, [("PROTOCOL", "protocol"), ("LISTEN", "listen"), ("TO", "to")], fmt)


@forward_app.command("remove")
def forward_remove(network: Network,
                   listen: Annotated[str, typer.Argument(help="HOST_ADDRESS:PORT")],
                   protocol: Annotated[str, typer.Option(help="tcp or udp")] = "tcp",
                   project: ProjectOpt = None) -> None:
    """Remove a port forward."""
    addr, _, port = listen.rpartition(":")
    if not addr or not port.isdigit():
        raise typer.BadParameter("use HOST_ADDRESS:PORT")
    with Client() as c:
        c.delete_forward(network, protocol, addr, int(port), project)
