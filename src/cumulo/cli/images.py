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
from cumulo.cli.complete import Image, Instance
from cumulo.cli.settings import ProjectOpt
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
    """A transient bar on stderr; yields the ``on_progress`` callback for `Client.wait`.

    Only on a terminal: into a pipe or a log it would leave blank lines behind.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if not o.err.is_terminal:
        yield lambda _op: None
        return
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
        o.say(f"Cancelling {title}...")
        with contextlib.suppress(CumuloError):
            c.cancel_operation(op["id"])
        with contextlib.suppress(CumuloError):
            c.wait(op, timeout=120)
        raise Cancelled(f"{title} cancelled: nothing was kept") from None


def _built(c: Client, op: dict[str, Any], verb: str) -> None:
    fp = op["resources"]["images"][0]
    img = c.image(fp)
    o.say(f"{verb} {', '.join(img['aliases']) or '(no alias)'} {fp[:12]} "
          f"({img['kind']}, {format_size(img['size'])})")


@image_app.command("build")
def image_build(
    builder: Annotated[str, typer.Argument(
        help="busybox, debian/<release> (e.g. debian/12), app, kernel")],
    alias: AliasOpt = None,
    variant: Annotated[str | None, typer.Option(
        help="debian: minbase (default), essential, apt, required, important, standard")] = None,
    packages: Annotated[str | None, typer.Option(
        help="debian: extra packages, comma-separated (e.g. curl,ca-certificates)")] = None,
    binary: Annotated[str | None, typer.Option(
        help="app: the program to package (an ELF file on the daemon's host)")] = None,
    profile: Annotated[str | None, typer.Option(
        help="kernel: what it is for (app: single-application VMs, the default)")] = None,
    with_: Annotated[str | None, typer.Option(
        "--with", help="kernel: more to build in, comma-separated (net, block, rng, tpm)")] = None,
    vm: Annotated[bool, typer.Option(
        "--vm", help="debian: a disk that VMs boot through firmware (GRUB, Debian's kernel,"
                     " systemd, qemu-guest-agent)")] = False,
) -> None:
    """Build an image locally (busybox, debian/12 from the Debian mirror, an app, or a
    kernel for app VMs from Debian's linux-source)."""
    import os

    def listed(text: str | None) -> list[str] | None:
        return [p.strip() for p in text.split(",") if p.strip()] if text else None

    with Client() as c:
        op = c.build_image(builder, alias, wait=False, variant=variant, packages=listed(packages),
                           binary=os.path.abspath(binary) if binary else None,
                           profile=profile, features=listed(with_), vm=vm)
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
def image_info(ref: Image, fmt: FormatOpt = o.Format.table) -> None:
    """Details of an image: kind, size, command, properties (source, variant...)."""
    with Client() as c:
        img = c.image(ref)
    if fmt == o.Format.table:
        props = img.pop("properties", {}) or {}
        img["size"] = f"{format_size(img['size'])} ({img['size']} bytes)"
        img.update({f"properties.{k}": v for k, v in sorted(props.items()) if v != ""})
    o.key_values(img, fmt)


@image_app.command("delete")
def image_delete(ref: Image) -> None:
    """Delete an image no instance uses."""
    with Client() as c:
        c.delete_image(ref)


@alias_app.command("set")
def alias_set(alias: str, target: Image) -> None:
    """Point ALIAS at the image TARGET (alias or fingerprint)."""
    with Client() as c:
        c.set_alias(alias, target)


@alias_app.command("delete")
def alias_delete(alias: str) -> None:
    """Remove an alias (the image stays)."""
    with Client() as c:
        c.delete_alias(alias)


def _pack_layout(directory: str, into: str) -> None:
    """An OCI image layout directory as one uncompressed tar (its blobs are compressed)."""
    import tarfile

    with tarfile.open(into, "w") as tar:
        tar.add(directory, arcname=".")


@image_app.command("import")
def image_import(
    file: Annotated[str, typer.Argument(
        help="a rootfs tarball (.tar, .tar.gz, .tar.xz), a qcow2 or raw (.raw/.img) disk, "
             "or an OCI image layout (directory or tar)")],
    alias: AliasOpt = None,
    sha256: Annotated[str | None, typer.Option(
        help="refuse the file unless its sha256 is this (64 hex digits)")] = None,
) -> None:
    """Import an image from a file: its kind comes from what the file is."""
    import os
    import tempfile

    if not os.path.exists(file):
        raise CumuloError(f"no such file: {file}")
    with Client() as c, tempfile.TemporaryDirectory(prefix="cumulo-import-") as tmp:
        path, name = file, os.path.basename(file.rstrip("/"))
        if os.path.isdir(file):
            if not os.path.isfile(os.path.join(file, "oci-layout")):
                raise CumuloError(f"{file} is a directory but not an OCI image layout "
                                  "(no oci-layout file)")
            if sha256:
                raise CumuloError("--sha256 applies to a file, not to a layout directory")
            path, name = os.path.join(tmp, "layout.tar"), name + ".tar"
            _pack_layout(file, path)
        op = c.import_image(path, name, alias, sha256)
        _built(c, follow(c, op, f"importing {name}"), "Imported")


@image_app.command("export")
def image_export(image: Image, file: Annotated[str, typer.Argument(
        help="where to write it: a rootfs image as tar.gz, a disk image as its qcow2/raw file")]
                 ) -> None:
    """Write an image to a file (written to FILE.part first: FILE is complete or absent)."""
    import os

    part = file + ".part"
    fmt, size = "", 0
    try:
        with Client() as c, open(part, "wb") as out:
            for got, chunk in c.export_image(image):
                fmt = got
                out.write(chunk)
                size += len(chunk)
        os.replace(part, file)
    except OSError as err:
        raise CumuloError(f"cannot write {file}: {err.strerror}") from None
    finally:
        if os.path.exists(part):
            os.unlink(part)
    o.say(f"Exported {image} to {file} ({fmt}, {format_size(size)})")


def publish(instance: Instance, alias: Annotated[str, typer.Option(help="name of the new image")],
            project: ProjectOpt = None) -> None:
    """Make a stopped container's root filesystem (with its changes) a new image."""
    with Client() as c:
        op = c.publish(instance, alias, project)
        _built(c, follow(c, op, f"publishing {instance}"), "Published")
