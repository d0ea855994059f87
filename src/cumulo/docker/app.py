"""The Docker Engine API as an ASGI app (served by ``cumulo.docker.server``).

Paths come bare (``/containers/json``) or with a version (``/v1.45/containers/json``):
versions from 1.24 to 1.45 are accepted, and the prefix is taken off before routing.
Every error is Docker's ``{"message": ...}``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo import errors as e
from cumulo.docker import containers, execs, images, netvol, system
from cumulo.docker.common import (
    API_VERSION,
    MIN_API_VERSION,
    Context,
    DockerError,
    cumulo_error,
    error_response,
)
from cumulo.docker.meta import Meta

log = logging.getLogger(__name__)
VERSION_RE = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")
SWARM = ("swarm", "nodes", "services", "tasks", "secrets", "configs")
NOT_OFFERED = ("build", "plugins", "session", "distribution", "auth", "commit",
               "images/search", "build/prune", "grpc")
SWARM_MESSAGE = ("This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm"
                 " join\" to connect this node to swarm and try again.")


def _ver(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


class Versioned:
    """Takes ``/vX.Y`` off the path; refuses versions out of the supported range."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            m = VERSION_RE.match(scope["path"])
            if m:
                wanted = (int(m.group(1)), int(m.group(2)))
                scope = {**scope, "path": m.group(3), "cumulo.api_version": wanted}
                message = None
                if wanted < _ver(MIN_API_VERSION):
                    message = (f"client version {m.group(1)}.{m.group(2)} is too old. Minimum"
                               f" supported API version is {MIN_API_VERSION}, please upgrade"
                               " your client to a newer version")
                elif wanted > _ver(API_VERSION):
                    message = (f"client version {m.group(1)}.{m.group(2)} is too new. Maximum"
                               f" supported API version is {API_VERSION}")
                if message:
                    await error_response(400, message)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _unsupported(status: int, message: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(_request: Request) -> Response:
        return error_response(status, message)
    return handler


def create_docker_app(ctx: Context) -> Versioned:
    meta = Meta(ctx.state_dir)
    routes: list[Route] = [
        *system.routes(ctx, meta), *images.routes(ctx, meta),
        *containers.routes(ctx, meta), *execs.routes(ctx, meta), *netvol.routes(ctx, meta)]
    methods = ["GET", "POST", "PUT", "DELETE", "HEAD"]
    for top in SWARM:
        for path in (f"/{top}", f"/{top}/{{rest:path}}"):
            routes.append(Route(path, _unsupported(503, SWARM_MESSAGE), methods=methods))
    for top in NOT_OFFERED:
        msg = f"/{top} is not supported by Cumulo's Docker API"
        if top == "build":
            msg = "docker build is not supported by Cumulo's Docker API: build elsewhere and" \
                  " use 'docker load'"
        for path in (f"/{top}", f"/{top}/{{rest:path}}"):
            routes.append(Route(path, _unsupported(501, msg), methods=methods))
    routes.append(Route("/images/{name:path}/push",
                        _unsupported(501, "Cumulo has no registry access: use 'docker save'"),
                        methods=["POST"]))

    async def docker_error(_req: Request, err: Exception) -> Response:
        assert isinstance(err, DockerError)
        return error_response(err.status, err.message)

    async def cumulo(_req: Request, err: Exception) -> Response:
        assert isinstance(err, e.CumuloError)
        return cumulo_error(err)

    async def http_error(_req: Request, err: Exception) -> Response:
        assert isinstance(err, HTTPException)
        if err.status_code == 404:
            return error_response(404, "page not found")
        return error_response(err.status_code, str(err.detail))

    async def internal(_req: Request, err: Exception) -> Response:
        log.exception("docker API: unhandled error")
        return error_response(500, f"internal error: {type(err).__name__}: {err}")

    app = Starlette(routes=routes, exception_handlers={
        DockerError: docker_error, e.CumuloError: cumulo, HTTPException: http_error,
        Exception: internal})
    ctx.extra["meta"] = meta
    return Versioned(app)
