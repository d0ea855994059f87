"""The ``--project`` option of the CLI's commands; the config file and the choice of the
project are in ``cumulo.cli.config_file`` (no typer there, for the fast path)."""

from __future__ import annotations

from typing import Annotated

import typer

from cumulo.cli.config_file import ENV, choose_project, current_project, load, path, save

__all__ = ["ENV", "ProjectOpt", "choose_project", "current_project", "load", "path", "save"]

ProjectOpt = Annotated[str | None, typer.Option(
    "--project", help="project (tenant); default: cumulo --project, CUMULO_PROJECT or"
    " `cumulo project switch`, else default")]
