"""REST routes for identities (who may call over TCP, with which role where) and the
audit log. Only admins reach them (api/rights.py)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from cumulo.api.auth import Sessions
from cumulo.api.schemas import Strict
from cumulo.services.host import Services
from cumulo.services.identities import IdentityService
from cumulo.store.identities import Identity


class IdentityIn(Strict):
    name: str
    role: str = Field(description="admin (server-wide), operator, user or viewer")
    project: str | None = Field("default", description="where the role holds (not admin)")
    expires: str | None = Field(None, description="lifetime: 30d, 12h, 2w; default: none")


class IdentityOut(BaseModel):
    name: str
    kind: str = Field(description="client, or remote: another host (migration only)")
    admin: bool
    roles: dict[str, str] = Field(description="project -> role")
    created_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None


class IdentityCreated(IdentityOut):
    token: str = Field(description="shown once; the daemon keeps only its sha256")


class RoleIn(Strict):
    role: str = Field(description="operator, user or viewer")


class AuditOut(BaseModel):
    at: datetime
    identity: str
    project: str | None
    action: str
    object: str
    result: int = Field(description="the HTTP status the request got")


def identity_out(i: Identity) -> IdentityOut:
    return IdentityOut(name=i.name, kind=i.kind, admin=i.admin, roles=dict(i.roles),
                       created_at=i.created_at, expires_at=i.expires_at,
                       last_used_at=i.last_used_at)


def add_routes(r: APIRouter, svc: Services, sessions: Sessions) -> None:
    def ids() -> IdentityService:   # looked up late: the OpenAPI dump has no services
        return svc.identities

    @r.get("/identities", response_model=list[IdentityOut],
           summary="Identities: names, roles, expiry, last use (never tokens)")
    def list_identities() -> list[IdentityOut]:
        return [identity_out(i) for i in ids().store.list()]

    @r.post("/identities", status_code=201, response_model=IdentityCreated,
            summary="Create an identity; its bearer token is in this answer only")
    def create_identity(body: IdentityIn) -> IdentityCreated:
        ident, token = ids().create(body.name, body.role, body.project, body.expires)
        return IdentityCreated(**identity_out(ident).model_dump(), token=token)

    @r.get("/identities/{name}", response_model=IdentityOut, summary="One identity")
    def get_identity(name: str) -> IdentityOut:
        return identity_out(ids().store.get(name))

    @r.delete("/identities/{name}", status_code=204,
              summary="Revoke: its token is refused from the next request on, and its"
                      " open websockets are closed")
    def revoke_identity(name: str) -> Response:
        sessions.revoke(ids().store.revoke(name).id)
        return Response(status_code=204)

    @r.put("/identities/{name}/roles/{project}", response_model=IdentityOut,
           summary="Give an identity a role in a project")
    def grant_role(name: str, project: str, body: RoleIn) -> IdentityOut:
        return identity_out(ids().grant(name, project, body.role))

    @r.delete("/identities/{name}/roles/{project}", response_model=IdentityOut,
              summary="Take an identity's role in a project away")
    def drop_role(name: str, project: str) -> IdentityOut:
        return identity_out(ids().grant(name, project, None))

    @r.get("/audit", response_model=list[AuditOut],
           summary="The newest mutating requests (of a project), oldest first")
    def list_audit(project: str | None = None,
                   limit: int = Query(100, ge=1, le=10000)) -> list[AuditOut]:
        return [AuditOut(at=a.at, identity=a.identity, project=a.project, action=a.action,
                         object=a.object, result=a.result)
                for a in ids().audit.list(project, limit)]
