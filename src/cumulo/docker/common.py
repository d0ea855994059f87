"""What every Docker route shares: the context, errors in Docker's shape, operations."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cumulo import errors as e
from cumulo.domain.models import Operation, OpStatus
from cumulo.services.host import Services

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"
T = TypeVar("T")


@dataclass
class Context:
    """The services, the project Docker's objects live in, and this face's own state."""

    svc: Services
    project: str
    state_dir: Path                     # Docker-only facts: container configs, image tags
    socket_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class DockerError(Exception):
    """An answer in Docker's error shape with Docker's status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def not_found(message: str) -> DockerError:
    return DockerError(404, message)


def conflict(message: str) -> DockerError:
    return DockerError(409, message)


def bad(message: str) -> DockerError:
    return DockerError(400, message)


STATUS: list[tuple[type[e.CumuloError], int]] = [
    (e.TooLargeError, 413), (e.InvalidInputError, 400), (e.NotFoundError, 404),
    (e.InvalidStateError, 409),
    (e.ConflictError, 409), (e.UnsupportedError, 501), (e.ProjectLimitError, 403),
    (e.CumuloError, 500)]


def error_response(status: int, message: str) -> Response:
    """Docker's error body: ``{"message": ...}``, Content-Type exactly application/json."""
    body = json.dumps({"message": message}).encode()
    return Response(body, status_code=status, media_type=None,
                    headers={"Content-Type": "application/json"})


def cumulo_error(err: e.CumuloError) -> Response:
    return error_response(next(c for cls, c in STATUS if isinstance(err, cls)), str(err))


def ok_json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking service call, off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


async def finish(ctx: Context, op: Operation, timeout: float = 600.0) -> Operation:
    """Await an operation's end; its failure raised as a DriverError (500)."""
    done = await ctx.svc.ops.wait(op.id, timeout)
    if done is None or not done.done:
        done = await call(ctx.svc.ops.get, op.id, timeout)
    if done.status == OpStatus.FAILURE:
        raise e.DriverError(done.error or "operation failed")
    return done


def flag(request: Request, name: str, default: bool = False) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes")


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return default
    try:
        return int(str(value))
    except ValueError:
        raise bad(f"invalid {name} {value!r}: not an integer") from None


def filters(request: Request) -> dict[str, list[str]]:
    """Docker's ``filters`` query: {"name": ["x"]} or the old {"name": {"x": true}}."""
    raw = request.query_params.get("filters")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad(f"invalid filter {raw!r}") from None
    out: dict[str, list[str]] = {}
    for key, value in (data or {}).items():
        out[key] = list(value) if isinstance(value, list) else [k for k, v in value.items()
                                                                 if v]
    return out


async def body_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise bad(f"invalid JSON: {err}") from None
    if not isinstance(data, dict):
        raise bad("invalid JSON: expected an object")
    return data
