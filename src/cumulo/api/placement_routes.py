"""REST routes for placement groups (store/members.py): instances to keep apart
(``spread``, anti-affinity) or together (``compact``); ``strict``: a rule, else a
preference. Launching into a group (``--placement-group``) comes with the cluster."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from cumulo.api.schemas import Strict
from cumulo.cluster.model import PlacementGroup
from cumulo.errors import NotFoundError
from cumulo.services.host import Services
from cumulo.store.members import MemberStore

PROJECT = Query("default", description="project (tenant) the resource belongs to")


class PlacementGroupIn(Strict):
    name: str
    policy: str = Field("spread", description="spread (apart) or compact (together)")
    strict: bool = Field(False, description="a rule the scheduler never breaks (else a"
                                            " preference)")


class PlacementGroupOut(BaseModel):
    name: str
    project: str
    policy: str
    strict: bool
    used_by: list[str] = Field(description="MEMBER/INSTANCE of each instance in the group")


def _out(project: str, g: PlacementGroup, used_by: list[str]) -> PlacementGroupOut:
    return PlacementGroupOut(name=g.name, project=project, policy=g.policy, strict=g.strict,
                             used_by=used_by)


def add_routes(r: APIRouter, svc: Services) -> None:
    def members() -> MemberStore:   # (the services are touched only when called)
        return svc.scheduler.members

    @r.get("/placement-groups", response_model=list[PlacementGroupOut],
           summary="List placement groups")
    def list_pgs(project: str = PROJECT) -> list[PlacementGroupOut]:
        return [_out(project, g, used) for g, used in members().list_groups(project)]

    @r.post("/placement-groups", status_code=201, response_model=PlacementGroupOut,
            summary="Create a placement group (spread: apart; compact: together)")
    def create_pg(body: PlacementGroupIn, project: str = PROJECT) -> PlacementGroupOut:
        return _out(project, members().create_group(project, body.name, body.policy,
                                                  body.strict), [])

    @r.get("/placement-groups/{name}", response_model=PlacementGroupOut,
           summary="A placement group and where its instances are")
    def get_pg(name: str, project: str = PROJECT) -> PlacementGroupOut:
        for g, used in members().list_groups(project):
            if g.name == name:
                return _out(project, g, used)
        raise NotFoundError("placement group", name)

    @r.delete("/placement-groups/{name}", status_code=204,
              summary="Delete a placement group no instance is in")
    def delete_pg(name: str, project: str = PROJECT) -> Response:
        members().delete_group(project, name)
        return Response(status_code=204)
