"""cumulo identity ... and cumulo audit: who may call this host over the network, with
which role where, and what they did."""

from __future__ import annotations

from typing import Annotated

import typer

from cumulo.cli import output as o
from cumulo.client import Client

identity_app = typer.Typer(no_args_is_help=True,
                           help="Identities: bearer tokens with a role per project.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit log of mutating requests.")

FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]


@identity_app.command("create")
def identity_create(
        name: str,
        role: Annotated[str, typer.Option(help="admin (server-wide), operator, user or"
                                               " viewer")],
        project: Annotated[str, typer.Option(help="where the role holds")] = "default",
        expires: Annotated[str | None, typer.Option(help="lifetime: 30d, 12h, 2w")] = None
) -> None:
    """Create an identity; its token is printed once (only its hash is kept)."""
    with Client() as c:
        ident = c.create_identity(name, role, None if role == "admin" else project, expires)
    where = "server-wide" if ident["admin"] else f"in project {project}"
    until = f", expires {ident['expires_at'][:16]}" if ident["expires_at"] else ""
    o.say(f"Identity {name}: {role} {where}{until}. Its token (shown only now;"
          " set CUMULO_TOKEN to it):")
    print(ident["token"])


def _roles(i: dict[str, object]) -> str:
    if i["admin"]:
        return "admin (server-wide)"
    if i["kind"] == "remote":
        return "migrate (another host)"
    if i["kind"] == "member":
        return "migrate, forward for its callers (cluster member)"
    roles = i["roles"]
    assert isinstance(roles, dict)
    return ", ".join(f"{r} in {p}" for p, r in sorted(roles.items())) or "-"


@identity_app.command("list")
def identity_list(fmt: FormatOpt = o.Format.table) -> None:
    """Identities: roles, projects, expiry, last use (never tokens)."""
    with Client() as c:
        rows = c.identities()
    for r in rows:
        r["roles_text"] = _roles(r)
    o.table(rows, [("NAME", "name"), ("KIND", "kind"), ("ROLES", "roles_text"),
                   ("EXPIRES", "expires_at"), ("LAST USED", "last_used_at")], fmt)


@identity_app.command("revoke")
def identity_revoke(name: str) -> None:
    """Revoke: refused from the next request on, its open websockets closed."""
    with Client() as c:
        c.revoke_identity(name)
    o.say(f"Revoked identity {name}")


@identity_app.command("grant")
def identity_grant(name: str, project: Annotated[str, typer.Option(help="the project")],
                   role: Annotated[str, typer.Option(help="operator, user or viewer")]
                   ) -> None:
    """Give an identity a role in another project (or change it)."""
    with Client() as c:
        c.grant(name, project, role)


@identity_app.command("ungrant")
def identity_ungrant(name: str, project: Annotated[str, typer.Option(help="the project")]
                     ) -> None:
    """Take an identity's role in a project away."""
    with Client() as c:
        c.grant(name, project, None)


@audit_app.command("list")
def audit_list(project: Annotated[str | None, typer.Option(help="only this project")] = None,
               limit: Annotated[int, typer.Option(help="the newest N")] = 100,
               fmt: FormatOpt = o.Format.table) -> None:
    """Mutating requests: when, who, where, what, on what, and the answer's status."""
    with Client() as c:
        rows = c.audit(project, limit)
    for r in rows:
        r["at"] = r["at"][:19].replace("T", " ")
    o.table(rows, [("TIME", "at"), ("IDENTITY", "identity"), ("PROJECT", "project"),
                   ("ACTION", "action"), ("OBJECT", "object"), ("RESULT", "result")], fmt)
