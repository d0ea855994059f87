"""cumulo project ...: tenants, their quotas, defaults and restrictions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cumulo.cli import output as o
from cumulo.cli import settings
from cumulo.client import Client
from cumulo.domain.projects import show
from cumulo.errors import InvalidInputError

project_app = typer.Typer(no_args_is_help=True, help="Projects (tenants): what they hold, "
                          "their quotas and restrictions.")

FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]
NameArg = Annotated[str | None, typer.Argument(help="default: the current project")]


def _pairs(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidInputError(f"invalid setting {item!r}: use KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


@project_app.command("create")
def project_create(
        name: str,
        description: Annotated[str, typer.Option(help="what it is for")] = "",
        config: Annotated[list[str] | None, typer.Option(
            "--config", "-c", help="a setting KEY=VALUE (repeatable), e.g."
            " limits.instances=5")] = None) -> None:
    """Create a project (it denies privileged containers and uses default's images)."""
    with Client() as c:
        c.create_project(name, description, _pairs(config))
    o.say(f"Created project {name}")


@project_app.command("list")
def project_list(fmt: FormatOpt = o.Format.table) -> None:
    """Projects, the current one marked."""
    with Client() as c:
        rows = c.projects()
    current = settings.current_project()
    for r in rows:
        r["current"] = "*" if r["name"] == current else ""
    o.table(rows, [("", "current"), ("NAME", "name"), ("DESCRIPTION", "description")], fmt)


@project_app.command("info")
def project_info(name: NameArg = None, fmt: FormatOpt = o.Format.table) -> None:
    """A project's settings, and its usage against each limit."""
    name = name or settings.current_project()
    with Client() as c:
        p, state = c.project_info(name), c.project_state(name)
    if fmt == o.Format.json:
        o.emit_json({**p, "usage": state})
        return
    o.key_values({"name": p["name"], "description": p["description"]}, fmt)
    if p["config"]:
        typer.echo(typer.style("settings:", bold=True))
        for key, value in sorted(p["config"].items()):
            typer.echo(f"  {key}: {show(key, value)}")
    rows: list[dict[str, Any]] = []
    for what, q in state.items():
        key = f"limits.{what}"
        rows.append({"resource": what, "usage": show(key, q["usage"]),
                     "limit": "-" if q["limit"] is None else show(key, q["limit"])})
    o.table(rows, [("RESOURCE", "resource"), ("USAGE", "usage"), ("LIMIT", "limit")], fmt)


@project_app.command("set")
def project_set(name: str, key: str, value: str) -> None:
    """Change a setting: limits.*, default.*, restricted.*, features.images."""
    with Client() as c:
        c.update_project(name, {key: value})


@project_app.command("unset")
def project_unset(name: str, key: str) -> None:
    """Remove a setting (a limit: no limit)."""
    with Client() as c:
        c.update_project(name, {key: None})


@project_app.command("delete")
def project_delete(name: str) -> None:
    """Delete an empty project."""
    with Client() as c:
        c.delete_project(name)
    if settings.load().get("project") == name:
        settings.save({**settings.load(), "project": "default"})
    o.say(f"Deleted project {name}")


@project_app.command("switch")
def project_switch(name: str) -> None:
    """Make NAME the project later commands act in (kept in the CLI's config)."""
    with Client() as c:
        c.project_info(name)   # it must exist
    settings.save({**settings.load(), "project": name})
    o.say(f"Now in project {name}")
