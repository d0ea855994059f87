"""cumulo file push|pull: copy one file into or out of a running instance."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cumulo.cli.complete import Instance
from cumulo.cli.settings import ProjectOpt
from cumulo.client import Client
from cumulo.errors import InvalidInputError

file_app = typer.Typer(no_args_is_help=True,
                       help="Copy files into and out of running instances.")


@file_app.command("push")
def push(name: Instance,
         src: Annotated[str, typer.Argument(help="file on this machine ('-': stdin)")],
         dst: Annotated[str, typer.Argument(help="absolute path inside the instance")],
         mode: Annotated[str | None, typer.Option(
             help="octal permissions (default: the source file's, or 0644)")] = None,
         project: ProjectOpt = None) -> None:
    """Write SRC to DST in the instance (created or replaced)."""
    if src == "-":
        data, perm = sys.stdin.buffer.read(), 0o644
    else:
        try:
            data, perm = Path(src).read_bytes(), os.stat(src).st_mode & 0o7777
        except OSError as err:
            raise InvalidInputError(f"cannot read {src}: {err.strerror}") from None
    with Client() as c:
        c.push_file(name, dst, data, mode or f"{perm:04o}", project=project)


@file_app.command("pull")
def pull(name: Instance,
         src: Annotated[str, typer.Argument(help="absolute path inside the instance")],
         dst: Annotated[str, typer.Argument(help="file on this machine ('-': stdout)")],
         project: ProjectOpt = None) -> None:
    """Copy SRC from the instance to DST here."""
    with Client() as c:
        data = c.pull_file(name, src, project=project)
    if dst == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(dst)
    if target.is_dir():
        target = target / Path(src).name
    try:
        target.write_bytes(data)
    except OSError as err:
        raise InvalidInputError(f"cannot write {target}: {err.strerror}") from None
