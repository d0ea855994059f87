"""Projects over REST (Incus's shapes: ``/1.0/projects``, ``/1.0/projects/{name}`` GET,
PUT, PATCH, DELETE, ``/1.0/projects/{name}/state``) and ``PROJECT``, the one place a
request's project is resolved: every route that touches a project's objects takes
``project: str = PROJECT``. An unknown project is a 404, like an unknown object."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cumulo.api import auth
from cumulo.api.schemas import Strict
from cumulo.domain import roles
from cumulo.domain.models import Project
from cumulo.domain.projects import DEFAULT, private_images
from cumulo.errors import ForbiddenError
from cumulo.services.host import Services


async def scope(request: Request, project: str = Query(
        DEFAULT, description="project (tenant) the resource belongs to")) -> str:
    """The project a request acts in; NotFoundError (404) if there is no such project.
    Async: FastAPI runs a plain function dependency in a worker thread, a hand-off per
    request; only another project than default is looked up (in one)."""
    if project != DEFAULT:
        svc: Services = request.app.state.services
        await run_in_threadpool(svc.projects.check, project)
    return project


PROJECT: Any = Depends(scope)


def image_scope(request: Request, project: str = PROJECT) -> str:
    """The project of a request that changes images: a project that uses default's
    images (features.images=false) changes default's, which needs manage there too."""
    svc: Services = request.app.state.services
    if project == DEFAULT or private_images(project, svc.projects.config(project)):
        return project
    caller = auth.caller_of(request)
    if not caller.may(roles.MANAGE, DEFAULT):
        raise ForbiddenError(
            f"project {project!r} uses the images of 'default' (features.images=false):"
            " changing them needs the right 'manage' in project 'default'", roles.MANAGE)
    return project


IMAGE_PROJECT: Any = Depends(image_scope)


class ProjectIn(Strict):
    name: str
    description: str = ""
    config: dict[str, str] = Field({}, description="limits.*, default.*, restricted.*,"
                                                   " features.images (docs/projects.md)")


class ProjectPut(Strict):
    description: str | None = None
    config: dict[str, str] = {}


class ProjectPatch(Strict):
    description: str | None = None
    config: dict[str, str | None] = Field({}, description="a null value unsets the key")


class ProjectOut(BaseModel):
    name: str
    description: str
    config: dict[str, str]
    created_at: datetime | None


class QuotaOut(BaseModel):
    limit: int | float | None = Field(description="null: no limit")
    usage: int | float


def _out(p: Project) -> ProjectOut:
    return ProjectOut(name=p.name, description=p.description, config=p.config,
                      created_at=p.created_at)


def add_routes(r: APIRouter, svc: Services) -> None:
    @r.get("/projects", response_model=list[ProjectOut], summary="List projects")
    def list_projects(request: Request) -> list[ProjectOut]:
        caller = auth.caller_of(request)
        return [_out(p) for p in svc.projects.list() if caller.sees(p.name)]

    @r.post("/projects", status_code=201, response_model=ProjectOut,
            summary="Create a project (it denies privileged containers unless told)")
    def create_project(body: ProjectIn) -> ProjectOut:
        return _out(svc.projects.create(body.name, body.description, body.config))

    @r.get("/projects/{name}", response_model=ProjectOut, summary="A project and its settings")
    def get_project(name: str) -> ProjectOut:
        return _out(svc.projects.get(name))

    @r.put("/projects/{name}", response_model=ProjectOut,
           summary="Replace a project's settings (and description)")
    def put_project(name: str, body: ProjectPut) -> ProjectOut:
        return _out(svc.projects.update(name, dict(body.config), body.description,
                                        replace=True))

    @r.patch("/projects/{name}", response_model=ProjectOut,
             summary="Change some of a project's settings (null unsets one)")
    def patch_project(name: str, body: ProjectPatch) -> ProjectOut:
        return _out(svc.projects.update(name, body.config, body.description))

    @r.delete("/projects/{name}", status_code=204,
              summary="Delete an empty project ('default' cannot be deleted)")
    def delete_project(name: str) -> Response:
        svc.projects.delete(name)
        return Response(status_code=204)

    @r.get("/projects/{name}/state", response_model=dict[str, QuotaOut],
           summary="Usage against each of the project's limits")
    def project_state(name: str) -> dict[str, QuotaOut]:
        return {k: QuotaOut(**v) for k, v in svc.projects.state(name).items()}
