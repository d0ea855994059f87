"""Run the Docker API next to cumulod's own: its socket, its app, its reaper."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from cumulo.docker.app import create_docker_app
from cumulo.docker.common import Context
from cumulo.docker.server import serve
from cumulo.domain.units import validate_name
from cumulo.services.host import Services


def context(svc: Services, state_dir: Path, project: str, sock_path: Path | None) -> Context:
    """The Docker face's context; its own files live in ``state_dir/docker``."""
    validate_name(project, "project")
    svc.store.ensure_project(project, "Docker containers")
    return Context(svc, project, state_dir / "docker", sock_path)


async def run(ctx: Context, sock: socket.socket, stopping: asyncio.Event) -> None:
    """Serve until ``stopping``; auto-remove and restart policies meanwhile."""
    app = create_docker_app(ctx)
    reaper = asyncio.create_task(ctx.extra["containers"].reaper(stopping))
    try:
        await serve(app, sock, stopping)
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
