"""Shell completion of names (instances, images, networks, volumes) asked of the daemon.

Typer calls these while the shell waits: one short request each, and on any error no
names rather than a message in the middle of the command line.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cumulo.client import Client

ENV = "_CUMULO_COMPLETE"   # set by the shell's completion script (typer's)
TIMEOUT = 2.0


def _names(ctx: typer.Context, incomplete: str, path: str) -> list[str]:
    try:
        with Client(timeout=TIMEOUT) as c:
            params = {"project": ctx.params.get("project") or c.project}
            rows: list[dict[str, Any]] = c.get(path, params=params)
    except Exception:   # completion must never print an error
        return []
    names = []
    for row in rows:   # an image by its aliases and short fingerprint, the rest by name
        names += [*row["aliases"], row["fingerprint"][:12]] if "fingerprint" in row \
            else [row["name"]]
    return sorted(n for n in names if n.startswith(incomplete))


def instances(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, "/instances")


def images(ctx: typer.Context, incomplete: str) -> list[str]:
    """Aliases and short fingerprints."""
    return _names(ctx, incomplete, "/images")


def networks(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, "/networks")


def volumes(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, "/volumes")


Instance = Annotated[str, typer.Argument(autocompletion=instances, show_default=False)]
Image = Annotated[str, typer.Argument(autocompletion=images, show_default=False)]
Network = Annotated[str, typer.Argument(autocompletion=networks, show_default=False)]
Volume = Annotated[str, typer.Argument(autocompletion=volumes, show_default=False)]
