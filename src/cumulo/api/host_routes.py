"""REST routes for host-to-host tokens, remotes and migrations between hosts
(services/migrations.py). Who may call them: api/auth.py and api/rights.py."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cumulo.api.auth import Sessions
from cumulo.api.convert import operation_out
from cumulo.api.projects import PROJECT
from cumulo.api.schemas import OperationOut, Strict
from cumulo.domain.units import parse_size
from cumulo.services.host import Services
from cumulo.services.migrations import MigrationService


class TokenIn(Strict):
    name: str | None = Field(None, description="a name to revoke it by; default: token-N")


class TokenOut(BaseModel):
    name: str
    token: str = Field(description="shown once; the daemon keeps only its sha256")


class RemoteIn(Strict):
    name: str
    url: str = Field(description="https://HOST:PORT of the other cumulod's --listen")
    token: str
    fingerprint: str | None = Field(None, description="sha256 of its certificate; default:"
                                    " the one it presents now (trust on first use)")


class RemoteOut(BaseModel):
    name: str
    url: str
    fingerprint: str = Field(description="sha256 of its certificate, pinned")
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


def add_routes(r: APIRouter, svc: Services, sessions: Sessions) -> None:
    def mig() -> MigrationService:
        return svc.migrations

    @r.post("/tokens", status_code=201, response_model=TokenOut,
            summary="Issue a token another host (or a TCP client) presents")
    def issue_token(body: TokenIn) -> TokenOut:
        name, token = mig().issue_token(body.name)
        return TokenOut(name=name, token=token)

    @r.get("/tokens", response_model=list[str], summary="Names of the tokens issued")
    def list_tokens() -> list[str]:
        return mig().token_names()

    @r.delete("/tokens/{name}", status_code=204, summary="Revoke a token")
    def revoke_token(name: str) -> Response:
        sessions.revoke(mig().revoke_token(name).id)
        return Response(status_code=204)

    @r.get("/remotes", response_model=list[RemoteOut], summary="Hosts this one trusts")
    def list_remotes() -> list[RemoteOut]:
        return [RemoteOut(name=x.name, url=x.url, fingerprint=x.fingerprint,
                          created_at=x.created_at) for x in mig().hosts.list_remotes()]

    @r.post("/remotes", status_code=201, response_model=RemoteOut,
            summary="Trust another host: its URL and a token it issued (checked now)")
    def add_remote(body: RemoteIn) -> RemoteOut:
        x = mig().add_remote(body.name, body.url, body.token, body.fingerprint)
        return RemoteOut(name=x.name, url=x.url, fingerprint=x.fingerprint,
                         created_at=x.created_at)

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

