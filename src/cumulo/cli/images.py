"""cumulo image ...: build, import, export, list, inspect and delete images.

A build or import runs as an operation on the daemon; the CLI shows its progress
as a bar, and Ctrl-C cancels the operation (the daemon removes whatever it had
made so far) before the CLI exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from cumulo.cli import output as o
from cumulo.client import Client
from cumulo.domain.units import format_size
from cumulo.errors import CumuloError

image_app = typer.Typer(no_args_is_help=True, help="Build, import, export, list and delete images.")
alias_app = typer.Typer(no_args_is_help=True, help="Point names at images.")
image_app.add_typer(alias_app, name="alias")

FormatOpt = Annotated[o.Format, typer.Option("--format", help="table or json")]
AliasOpt = Annotated[str | None, typer.Option(help="name for the new image")]


class Cancelled(CumuloError):
    """Ctrl-C: the operation was cancelled and has ended."""


@contextlib.contextmanager
def progress_bar(title: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A transient bar on stderr; yields the ``on_progress`` callback for `Client.wait`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  console=o.err, transient=True) as bar:
        task = bar.add_task(title, total=1.0)
        yield lambda op: bar.update(
            task, completed=op["progress"],
            description=f"{title}: {op['message']}" if op["message"] else title)


def follow(c: Client, op: dict[str, Any], title: str) -> dict[str, Any]:
    """Wait for ``op`` with a progress bar; on Ctrl-C cancel it and wait for its undo."""
    try:
        with progress_bar(title) as on_progress:
            return c.wait(op, on_progress, timeout=3600)
    except KeyboardInterrupt:
        o.err.print(f"Cancelling {title}...")
        with contextlib.suppress(CumuloError):
            c.cancel_operation(op["id"])
        with contextlib.suppress(CumuloError):
            c.wait(op, timeout=120)
        raise Cancelled(f"{title} cancelled: nothing was kept") from None


def _built(c: Client, op: dict[str, Any], verb: str) -> None:
    fp = op["resources"]["images"][0]
    img = c.image(fp)
    o.err.print(f"{verb} {', '.join(img['aliases']) or '(no alias)'} {fp[:12]} "
                f"({img['kind']}, {format_size(img['size'])})")


@image_app.command("build")
def image_build(
    builder: Annotated[str, typer.Argument(help="busybox, debian/<release> (e.g. debian/12), app")],
    alias: AliasOpt = None,
    variant: Annotated[str | None, typer.Option(
        help="debian: minbase (default), essential, apt, required, important, standard")] = None,
    packages: Annotated[str | None, typer.Option(
        help="debian: extra packages, comma-separated (e.g. curl,ca-certificates)")] = None,
    binary: Annotated[str | None, typer.Option(
        help="app: the program to package (an ELF file on the daemon's host)")] = None,
) -> None:
    """Build an image locally (busybox, debian/12 from the Debian mirror, or an app)."""
    import os

    pkgs = [p.strip() for p in packages.split(",") if p.strip()] if packages else None
    with Client() as c:
        op = c.build_image(builder, alias, wait=False, variant=variant, packages=pkgs,
                           binary=os.path.abspath(binary) if binary else None)
        _built(c, follow(c, op, f"building {builder}"), "Built")


@image_app.command("list")
def image_list(fmt: FormatOpt = o.Format.table) -> None:
    """List images."""
    with Client() as c:
        rows = c.images()
    for r in rows:
        r["fp"], r["size_text"] = r["fingerprint"][:12], format_size(r["size"])
    o.table(rows, [("ALIAS", "aliases"), ("FINGERPRINT", "fp"), ("KIND", "kind"), ("OS", "os"),
                   ("RELEASE", "release"), ("ARCH", "architecture"), ("SIZE", "size_text")],
            fmt)


@image_app.command("info")
def image_info(ref: str, fmt: FormatOpt = o.Format.table) -> None:
    """Details of an image: kind, size, command, properties (source, variant...)."""
    with Client() as c:
        img = c.image(ref)
    if fmt == o.Format.table:
        props = img.pop("properties", {}) or {}
        img["size"] = f"{format_size(img['size'])} ({img['size']} bytes)"
        img.update({f"properties.{k}": v for k, v in sorted(props.items()) if v != ""})
    o.key_values(img, fmt)


@image_app.command("delete")
def image_delete(ref: str) -> None:
    """Delete an image no instance uses."""
    with Client() as c:
        c.delete_image(ref)


@alias_app.command("set")
def alias_set(alias: str, target: str) -> None:
    """Point ALIAS at the image TARGET (alias or fingerprint)."""
    with Client() as c:
        c.set_alias(alias, target)


@alias_app.command("delete")
def alias_delete(alias: str) -> None:
    """Remove an alias (the image stays)."""
    with Client() as c:
        c.delete_alias(alias)
