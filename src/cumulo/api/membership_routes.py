"""REST routes of the cluster: enable, join tokens, members, evacuate and restore
(cluster/membership.py, cluster/evacuate.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cumulo.api.auth import caller_of
from cumulo.api.convert import operation_out
from cumulo.api.schemas import OperationOut, Strict
from cumulo.cluster.evacuate import Evacuation
from cumulo.services.host import Services
from cumulo.store.cluster import Member, Usage


class EnableIn(Strict):
    name: str = Field(description="this host's name in the cluster")


class JoinTokenIn(Strict):
    name: str = Field(description="the new member's name")
    ttl: float = Field(3600, description="seconds until the token expires")


class JoinTokenOut(BaseModel):
    name: str
    token: str = Field(description="single use: cumulod --join TOKEN on the new host")
    expires: str


class MemberOut(BaseModel):
    name: str
    address: str
    state: str = Field(description="online, offline (no heartbeat lately) or evacuated")
    cpus: int
    memory: int
    disk: int
    groups: list[str]
    features: dict[str, Any]
    heartbeat: datetime | None
    silent: float = Field(description="seconds since its last heartbeat")
    instances: int = Field(description="instances placed on it")
    declared_memory: int = Field(description="sum of their memory limits, bytes")
    declared_cpus: float = Field(description="sum of their CPU limits")
    fingerprint: str = Field(description="sha256 of its certificate; the others pin it")


class ClusterOut(BaseModel):
    enabled: bool
    member: str | None = Field(description="the member that answered")
    offline_after: float
    members: list[MemberOut]


def member_out(m: Member, u: Usage, state: str) -> MemberOut:
    return MemberOut(name=m.name, address=m.address, state=state, cpus=m.cpus,
                     memory=m.memory, disk=m.disk, groups=m.groups, features=m.features,
                     heartbeat=m.heartbeat, silent=round(m.silent, 1), instances=u.instances,
                     declared_memory=u.memory, declared_cpus=u.cpus,
                     fingerprint=m.fingerprint)


def add_routes(r: APIRouter, svc: Services) -> None:
    def evac(request: Request) -> Evacuation:
        return Evacuation(svc.cluster, svc.instances, caller_of(request).behalf)

    def members() -> list[MemberOut]:
        c = svc.cluster
        return [member_out(m, u, c.state_of(m)) for m, u in c.members()]

    @r.get("/cluster", response_model=ClusterOut, summary="The cluster and its members")
    def get_cluster() -> ClusterOut:
        c = svc.cluster
        return ClusterOut(enabled=c.identity is not None, member=c.member,
                          offline_after=c.offline_after,
                          members=members() if c.identity is not None else [])

    @r.post("/cluster", status_code=201, response_model=MemberOut,
            summary="Make this host the first member of a cluster (store on PostgreSQL)")
    def enable(body: EnableIn) -> MemberOut:
        c = svc.cluster
        m = c.enable(body.name)
        return member_out(m, Usage(), c.state_of(m))

    @r.post("/cluster/join-tokens", status_code=201, response_model=JoinTokenOut,
            summary="A single-use token that lets a new host join as NAME")
    def add_member(body: JoinTokenIn) -> JoinTokenOut:
        c = svc.cluster
        token, expires = c.add(body.name, body.ttl)
        return JoinTokenOut(name=body.name, token=token, expires=expires)

    @r.get("/cluster/members", response_model=list[MemberOut], summary="Members")
    def list_members() -> list[MemberOut]:
        return members()

    @r.get("/cluster/members/{name}", response_model=MemberOut, summary="One member")
    def get_member(name: str) -> MemberOut:
        c = svc.cluster
        c.store.get_member(name)   # 404 for an unknown one
        return next(m for m in members() if m.name == name)

    @r.post("/cluster/members/{name}/evacuate", status_code=202, response_model=OperationOut,
            summary="Move every instance off a member (live when it can)")
    def evacuate(name: str, request: Request) -> JSONResponse:
        c = svc.cluster
        c._require()
        return JSONResponse(operation_out(evac(request).evacuate(name)).model_dump(mode="json"),
                            status_code=202)

    @r.post("/cluster/members/{name}/restore", status_code=202, response_model=OperationOut,
            summary="Bring back what was evacuated from a member")
    def restore(name: str, request: Request) -> JSONResponse:
        c = svc.cluster
        c._require()
        return JSONResponse(operation_out(evac(request).restore(name)).model_dump(mode="json"),
                            status_code=202)
