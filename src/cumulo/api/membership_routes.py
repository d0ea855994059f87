"""REST routes of the cluster: enable, join tokens, members (their declared capacity,
removal), evacuate and restore, rebalance, cluster-wide settings (cluster/membership.py,
cluster/evacuate.py, cluster/rebalancer.py, cluster/settings.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from cumulo.api.auth import caller_of
from cumulo.api.convert import operation_out
from cumulo.api.schemas import OperationOut, Strict
from cumulo.cluster import joined, settings, stateful
from cumulo.cluster.evacuate import Evacuation
from cumulo.cluster.membership import JoinToken
from cumulo.cluster.model import Resources
from cumulo.cluster.rebalancer import MAX_MOVES, Rebalancer
from cumulo.domain.models import Operation
from cumulo.domain.units import parse_size, validate_name
from cumulo.errors import InvalidInputError
from cumulo.services.host import Services
from cumulo.store.cluster import Member, Usage


class EnableIn(Strict):
    name: str = Field(description="this host's name in the cluster")


class JoinTokenIn(Strict):
    name: str = Field(description="the new member's name")
    ttl: float = Field(3600, description="seconds until the token expires")


class JoinIn(Strict):
    token: str = Field(description="from `cumulo cluster add NAME` on a member")


class JoinOut(BaseModel):
    member: str = Field(description="this host's name in the cluster")
    restarting: bool = Field(description="cumulod restarts on the cluster's store")


class JoinTokenOut(BaseModel):
    name: str
    token: str = Field(description="single use: cumulod --join TOKEN on the new host")
    expires: str


class MemberPatch(Strict):
    cpus: float | None = Field(None, description="CPUs it offers to instances")
    memory: str | int | None = Field(None, description="memory it offers (bytes, or 2GiB)")
    disk: str | int | None = Field(None, description="disk it offers (bytes, or 100GiB)")
    groups: list[str] | None = Field(None, description="the member groups it is in (all of"
                                     " them: `--target @GROUP` places in a group)")


class MoveOut(BaseModel):
    project: str
    instance: str
    source: str
    target: str
    score_before: float = Field(description="the imbalance score before this move")
    score_after: float = Field(description="... and after it")


class RebalancePlanOut(BaseModel):
    score_before: float = Field(description="standard deviation of the online members'"
                                            " declared memory use (0: even)")
    score_after: float
    moves: list[MoveOut]


class RebalanceIn(Strict):
    max_moves: int = Field(MAX_MOVES, ge=1, description="at most this many moves")


class RecoverIn(Strict):
    instance: str
    target: str | None = Field(None, description="the member to recreate it on")
    snapshot: str | None = Field(None, description="the snapshot (default: its latest)")


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


def accepted(op: Operation) -> JSONResponse:
    """202 with the operation (app.accepted's body, without its Location header)."""
    return JSONResponse(operation_out(op).model_dump(mode="json"), status_code=202)


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

    @r.post("/cluster/join", response_model=JoinOut,
            summary="Join a cluster with a token (this host must hold no instance); the"
                    " daemon then restarts on the cluster's store")
    def join(body: JoinIn) -> JSONResponse:
        token = JoinToken.decode(body.token)
        joined.join_running(svc, token)
        return JSONResponse(JoinOut(member=token.name, restarting=True).model_dump(),
                            background=BackgroundTask(joined.restart, svc))

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

    @r.patch("/cluster/members/{name}", response_model=MemberOut,
             summary="Change what a member declares it offers (CPUs, memory, disk) or"
                     " the groups it is in")
    def patch_member(name: str, body: MemberPatch) -> MemberOut:
        c = svc.cluster
        c._require()
        m = c.store.get_member(name)
        def size(v: str | int | None, old: int) -> int:
            return old if v is None else v if isinstance(v, int) else parse_size(v)
        cap = Resources(m.cpus if body.cpus is None else body.cpus,
                        size(body.memory, m.memory), size(body.disk, m.disk))
        if cap.cpus <= 0 or cap.memory <= 0 or cap.disk <= 0:
            raise InvalidInputError("a member's CPUs, memory and disk must be positive")
        groups = None if body.groups is None else frozenset(
            validate_name(g, "member group") for g in body.groups)
        c.store.members.update(name, capacity=cap, groups=groups)
        svc.scheduler.forget()
        return get_member(name)

    @r.delete("/cluster/members/{name}", status_code=204,
              summary="Remove a member (refused while it has instances, unless force)")
    def remove_member(name: str, force: bool = False) -> None:
        svc.cluster.remove(name, force, svc.store.delete_instance)

    @r.get("/cluster/rebalance", response_model=RebalancePlanOut,
           summary="The moves a rebalance would make now (a dry run)")
    def rebalance_plan(max_moves: int = MAX_MOVES) -> RebalancePlanOut:
        if max_moves < 1:
            raise InvalidInputError("--max-moves must be at least 1")
        before, after, steps = Rebalancer(svc.cluster, svc.instances).plan(max_moves)
        return RebalancePlanOut(score_before=before, score_after=after,
                                moves=[MoveOut(**s.out()) for s in steps])

    @r.post("/cluster/rebalance", status_code=202, response_model=OperationOut,
            summary="Move instances (live) so that the members are evenly used")
    def rebalance(body: RebalanceIn, request: Request) -> JSONResponse:
        return accepted(Rebalancer(svc.cluster, svc.instances, caller_of(request).behalf).run(
            body.max_moves))

    @r.get("/cluster/config", response_model=dict[str, str],
           summary="Cluster-wide settings (those not set at their default)")
    def get_config() -> dict[str, str]:
        svc.cluster._require()
        return {**settings.DEFAULTS, **svc.cluster.store.config()}

    @r.patch("/cluster/config", response_model=dict[str, str],
             summary="Change cluster-wide settings (null: back to the default)")
    def patch_config(body: dict[str, str | None]) -> dict[str, str]:
        svc.cluster._require()
        checked = {k: None if v is None else settings.check(k, v) for k, v in body.items()}
        for k, v in checked.items():
            svc.cluster.store.set_config(k, v)
        return get_config()

    @r.post("/cluster/members/{name}/evacuate", status_code=202, response_model=OperationOut,
            summary="Move every instance off a member (live when it can)")
    def evacuate(name: str, request: Request) -> JSONResponse:
        svc.cluster._require()
        return accepted(evac(request).evacuate(name))

    @r.post("/cluster/recover", status_code=204,
            summary="Recreate a stateful instance of an offline member from a snapshot held"
                    " elsewhere (refused: snapshots are local to each member)")
    def recover(body: RecoverIn, project: str = "default") -> None:
        stateful.recover(svc.cluster, svc.instances, project, body.instance, body.target,
                         body.snapshot)

    @r.post("/cluster/members/{name}/restore", status_code=202, response_model=OperationOut,
            summary="Bring back what was evacuated from a member")
    def restore(name: str, request: Request) -> JSONResponse:
        svc.cluster._require()
        return accepted(evac(request).restore(name))
