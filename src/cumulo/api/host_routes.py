"""REST routes for tokens, remotes and migrations between hosts (services/migrations.py),
and the token check for requests that come over TCP."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from cumulo.api.convert import operation_out
from cumulo.api.schemas import OperationOut, Strict
from cumulo.domain.units import parse_size
from cumulo.services.host import Services
from cumulo.services.migrations import MigrationService

PROJECT = Query("default", description="project (tenant) the resource belongs to")


class TokenIn(Strict):
    name: str | None = Field(None, description="a name to revoke it by; default: token-N")


class TokenOut(BaseModel):
    name: str
    token: str = Field(description="shown once; the daemon keeps only its sha256")


class RemoteIn(Strict):
    name: str
    url: str = Field(description="http://HOST:PORT of the other cumulod's --listen")
    token: str


class RemoteOut(BaseModel):
    name: str
    url: str
    created_at: datetime | None


class MigrateIn(Strict):
    remote: str
    live: bool = Field(True, description="pre-copy while the guest runs; false: stop first")
    bandwidth: str | None = Field(None, description="cap on the stream, bytes/s: 100MiB")
    postcopy: bool = Field(False, description="switch to post-copy after the first pass")


class IncomingIn(BaseModel):
    name: str
    type: str
    image: str
    limits: dict[str, Any] = {}
    command: list[str] = []
    options: dict[str, str] = {}
    privileged: bool = False
    signature: str
    root: dict[str, Any] | None = None
    cold: bool = Field(False, description="stopped, moved and started: no state to load")
    postcopy: bool = False
    nics: dict[str, Any] | None = Field(None, description="networks, NICs (MAC, IP) and"
                                        " security groups to keep (migration_nics.py)")


def over_tcp(scope: Any) -> bool:
    """uvicorn gives no client address for a unix socket connection (root's own)."""
    return scope.get("client") is not None


def token_ok(svc: Services, header: str | None) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return svc.migrations.hosts.token_known(header[7:].strip())


class TokenAuth:
    """ASGI middleware: over TCP every HTTP request needs ``Authorization: Bearer TOKEN``
    of a token we issued (websockets check it in their handlers). A plain ASGI class,
    not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs each request
    through an extra task and memory streams (~1 ms of CPU per request)."""

    def __init__(self, app: ASGIApp, svc: Services) -> None:
        self.app, self.svc = app, svc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and over_tcp(scope) and not token_ok(
                self.svc, Headers(scope=scope).get("authorization")):
            refusal = JSONResponse(
                {"error": "over TCP this cumulod needs a token: set CUMULO_TOKEN"
                          " to one from `cumulo remote token` on its host",
                 "type": "AuthError"}, status_code=401)
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install_auth(app: FastAPI, svc: Services) -> None:
    """Over TCP every request needs a token (``TokenAuth``)."""
    app.add_middleware(TokenAuth, svc=svc)


def add_routes(r: APIRouter, svc: Services) -> None:
    def mig() -> MigrationService:
        return svc.migrations

    @r.post("/tokens", status_code=201, response_model=TokenOut,
            summary="Issue a token another host (or a TCP client) presents")
    def issue_token(body: TokenIn) -> TokenOut:
        name, token = mig().issue_token(body.name)
        return TokenOut(name=name, token=token)

    @r.get("/tokens", response_model=list[str], summary="Names of the tokens issued")
    def list_tokens() -> list[str]:
        return mig().hosts.token_names()

    @r.delete("/tokens/{name}", status_code=204, summary="Revoke a token")
    def revoke_token(name: str) -> Response:
        mig().hosts.revoke_token(name)
        return Response(status_code=204)

    @r.get("/remotes", response_model=list[RemoteOut], summary="Hosts this one trusts")
    def list_remotes() -> list[RemoteOut]:
        return [RemoteOut(name=x.name, url=x.url, created_at=x.created_at)
                for x in mig().hosts.list_remotes()]

    @r.post("/remotes", status_code=201, response_model=RemoteOut,
            summary="Trust another host: its URL and a token it issued (checked now)")
    def add_remote(body: RemoteIn) -> RemoteOut:
        x = mig().add_remote(body.name, body.url, body.token)
        return RemoteOut(name=x.name, url=x.url, created_at=x.created_at)

    @r.delete("/remotes/{name}", status_code=204, summary="Forget a remote")
    def delete_remote(name: str) -> Response:
        mig().hosts.delete_remote(name)
        return Response(status_code=204)

    @r.post("/instances/{name}/migrate", status_code=202, response_model=OperationOut,
            summary="Move an instance to a remote (VM: pre-copy; container: CRIU)")
    def migrate(name: str, body: MigrateIn, project: str = PROJECT) -> JSONResponse:
        cap = None if body.bandwidth is None else parse_size(body.bandwidth)
        op = mig().migrate(project, name, body.remote, body.live, cap, body.postcopy)
        return JSONResponse(operation_out(op).model_dump(mode="json"), status_code=202)

    @r.post("/migrations/incoming", summary="(host to host) get ready to receive an instance")
    def incoming(body: IncomingIn, project: str = PROJECT) -> dict[str, str]:
        return {"uri": mig().incoming(project, body.model_dump())}

    @r.post("/migrations/incoming/{name}/finish", status_code=204,
            summary="(host to host) the state was sent: run the instance here")
    def incoming_finish(name: str, project: str = PROJECT, start: bool = True) -> Response:
        mig().incoming_finish(project, name, start)
        return Response(status_code=204)

    @r.put("/migrations/incoming/{name}/state/{part}", status_code=204,
           summary="(host to host) upload a state file of an instance being received")
    async def incoming_state(name: str, part: str, request: Request,
                             project: str = PROJECT) -> Response:
        path = mig().incoming_state_path(project, name, part)
        tmp = path.with_name(f".{path.name}.part")
        try:
            with open(tmp, "wb") as f:
                async for chunk in request.stream():
                    f.write(chunk)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return Response(status_code=204)

    @r.delete("/migrations/incoming/{name}", status_code=204,
              summary="(host to host) drop an instance that was being received")
    def incoming_abort(name: str, project: str = PROJECT) -> Response:
        mig().incoming_abort(project, name)
        return Response(status_code=204)

