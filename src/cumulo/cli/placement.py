"""cumulo placement-group ...: instances kept apart (spread) or together (compact)."""

from __future__ import annotations

from typing import Annotated

import typer

from cumulo.cli import output as o
from cumulo.client import Client

placement_group_app = typer.Typer(
    no_args_is_help=True, help="Placement groups: keep instances apart (spread) or together"
                               " (compact) across cluster members.")

FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]
ProjectOpt = Annotated[str, typer.Option("--project", help="project (tenant)")]


@placement_group_app.command("create")
def pg_create(name: str,
              policy: Annotated[str, typer.Option(
                  help="spread: on different members (anti-affinity); compact: together")
                                ] = "spread",
              strict: Annotated[bool, typer.Option(
                  "--strict", help="a rule: launching fails rather than break it (default: a"
                                   " preference)")] = False,
              project: ProjectOpt = "default") -> None:
    """Create a placement group; launch instances into it with --placement-group."""
    with Client() as c:
        c.create_placement_group(name, policy, strict, project)
    o.say(f"Created placement group {name} ({policy}{', strict' if strict else ''})")


@placement_group_app.command("list")
def pg_list(fmt: FormatOpt = o.Format.table, project: ProjectOpt = "default") -> None:
    """List placement groups and where their instances are."""
    with Client() as c:
        rows = c.placement_groups(project)
    o.table(rows, [("NAME", "name"), ("POLICY", "policy"), ("STRICT", "strict"),
                   ("INSTANCES", "used_by")], fmt)


@placement_group_app.command("info")
def pg_info(name: str, fmt: FormatOpt = o.Format.table,
            project: ProjectOpt = "default") -> None:
    """A placement group: its policy and its instances (MEMBER/INSTANCE)."""
    with Client() as c:
        g = c.placement_group(name, project)
    if fmt == o.Format.json:
        o.emit_json(g)
        return
    o.key_values({"name": g["name"], "policy": g["policy"], "strict": str(g["strict"]),
                  "instances": ", ".join(g["used_by"]) or "none"}, fmt)


@placement_group_app.command("delete")
def pg_delete(name: str, project: ProjectOpt = "default") -> None:
    """Delete a placement group no instance is in."""
    with Client() as c:
        c.delete_placement_group(name, project)
