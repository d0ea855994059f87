"""The REST API under /1.0/: HTTP in, service calls out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from cumulo import __version__
from cumulo.api import (
    auth,
    console_ws,
    errors,
    events_ws,
    exec_ws,
    firewall_routes,
    host_routes,
    identity_routes,
    membership_routes,
    placement_routes,
    tpm_routes,
    web_routes,
)
from cumulo.api import schemas as s
from cumulo.api.body_limit import BodyLimit
from cumulo.api.convert import (
    image_out,
    instance_out,
    limits_from,
    limits_in,
    location,
    network_out,
    operation_out,
    pool_out,
    volume_out,
)
from cumulo.api.forward import Forward
from cumulo.api.image_routes import add_routes as add_image_routes
from cumulo.api.metrics import CONTENT_TYPE, Metrics, RequestMetrics
from cumulo.api.projects import IMAGE_PROJECT, PROJECT
from cumulo.api.projects import add_routes as add_project_routes
from cumulo.cluster.choose import scheduled
from cumulo.domain import ssh_keys
from cumulo.domain.lifecycle import Action, State
from cumulo.domain.models import Operation
from cumulo.domain.roles import READ
from cumulo.domain.units import parse_size
from cumulo.drivers.base import ExecRequest
from cumulo.errors import InvalidInputError
from cumulo.images import app as app_image
from cumulo.images.builders import BuildOptions
from cumulo.services import files
from cumulo.services.host import Services
from cumulo.services.instances import CreateRequest
from cumulo.services.networks import NicRequest
from cumulo.services.nic_hotplug import NicPlugs
from cumulo.web import assets

API = "1.0"
# what every route under /1.0 answers an error with (ErrorOut), by status
ERRORS = {400: "Bad Request", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity",
          500: "Internal Server Error"}
FOLLOW_POLL = 0.2


def _document_errors(app: FastAPI) -> None:
    """The error answers of every route under /1.0 (``ERRORS``), added to the OpenAPI
    document once it is made. Declared per route (``responses=``), FastAPI built a
    validator for each route and status: ~40% of the app's build, paid at every daemon
    start and by every test's app, for a document that is rarely asked for."""
    made = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = made()   # (FastAPI keeps it: the changes below are kept with it)
        for path, operations in doc.get("paths", {}).items():
            if path.startswith(f"/{API}/") or path == f"/{API}":
                for operation in operations.values():
                    operation.setdefault("responses", {}).update(
                        {str(code): {"description": text, "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
                         for code, text in ERRORS.items()})
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["ErrorOut"] = s.ErrorOut.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization")
        text = json.dumps(doc["paths"])   # FastAPI's own 422, now replaced
        for name in ("HTTPValidationError", "ValidationError"):
            if f'"#/components/schemas/{name}"' not in text:
                schemas.pop(name, None)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def accepted(op: Operation) -> JSONResponse:
    return JSONResponse(operation_out(op).model_dump(mode="json"), status_code=202,
                        headers={"Location": location(op)})


def checkpoint_file(request: Request, body: s.CheckpointIn) -> str | None:
    """The checkpoint's file on the host, which only an admin may name."""
    if body.file is not None:
        auth.require_admin(request, "a checkpoint file on the host (file)")
    return body.file


def create_app(svc: Services, tcp_auth: bool = False, fingerprint: str | None = None,
               listen: str | None = None, reports: Path | None = None) -> FastAPI:
    """``tcp_auth``: requests over TCP need a token (the daemon; in-process tests do not,
    their caller is root as over the unix socket). Every request is authorized and
    audited by api/auth.py. ``fingerprint``: of the certificate ``--listen`` serves;
    ``listen``: the daemon's TCP address (for the web console's URL); ``reports``: the
    folder of benchmark reports the console shows."""
    stopping = threading.Event()   # ends the exec calls still running when the daemon stops

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        stopping.set()

    app = FastAPI(title="Cumulo", version=__version__, lifespan=lifespan,
                  description="Containers and virtual machines on one host, through one API.")
    app.state.services = svc   # for the PROJECT dependency (api/projects.py)
    errors.install(app)
    metrics = Metrics(svc)
    app.add_middleware(RequestMetrics, metrics=metrics)
    if svc is not None:   # (None: only the OpenAPI document is made)
        app.add_middleware(Forward, cluster=svc.cluster,
                           place=scheduled(svc.cluster, svc.scheduler))
    app.add_middleware(BodyLimit)   # before anything reads a body
    sessions = auth.Sessions()
    auth.install(app, svc, sessions, tcp_auth)
    r = APIRouter(prefix=f"/{API}")
    _document_errors(app)

    @r.get("", response_model=s.ServerOut, summary="Server information")
    def server() -> s.ServerOut:
        return s.ServerOut(api_version=API, version=__version__,
                           instance_types=sorted(svc.instances.drivers),
                           certificate_fingerprint=fingerprint)

    @r.get("/metrics", summary="Metrics of instances, host and daemon (Prometheus text format)",
           response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
    def get_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @r.get("/host", summary="What this host can do (the host probe)")
    def host() -> dict[str, object]:
        return svc.host.to_dict()

    @r.get("/instances", response_model=list[s.InstanceOut], summary="List instances")
    def list_instances(project: str = PROJECT) -> list[s.InstanceOut]:
        lost = svc.cluster.offline_members()
        return [instance_out(i, unreachable=i.location in lost)
                for i in svc.instances.list(project)]

    @r.post("/instances", status_code=202, response_model=s.OperationOut,
            summary="Create (and with start=true, launch) an instance; wait=SECONDS"
                    " answers once its operation ended (or after SECONDS)")
    async def create_instance(body: s.InstanceCreate, project: str = PROJECT,
                              wait: float = Query(0, ge=0, le=600),
                              target: str | None = Query(
                                  None, description="in a cluster: the member to run it on"
                                                    " (default: the least used)")
                              ) -> JSONResponse:
        if target is not None and svc.cluster.identity is None:
            raise InvalidInputError("--target names a cluster member: this host is in no"
                                    " cluster")
        if body.placement_group is not None and svc.cluster.identity is None:
            raise InvalidInputError("--placement-group places instances among cluster"
                                    " members: this host is in no cluster")
        req = CreateRequest(name=body.name, image=body.image, type=body.type,
                            limits=limits_from(body.limits), privileged=body.privileged,
                            command=body.command, options=body.options, start=body.start,
                            networks=None if body.networks is None else tuple(
                                NicRequest(n.network, n.ip, n.limit_ingress, n.limit_egress,
                                           n.limit_burst) for n in body.networks),
                            pool=body.pool, copy=body.full_copy,
                            disk=None if body.disk is None else parse_size(body.disk),
                            ssh_keys=ssh_keys.parse_keys(body.ssh_key) if body.ssh_key
                            else (), ephemeral=body.ephemeral, user_data=body.user_data,
                            cloud_config=body.cloud_config or {})
        op = await run_in_threadpool(svc.instances.create, project, req)
        # (a launch then costs one request, not two: no GET .../operations/ID?wait after it)
        return accepted(await svc.ops.wait(op.id, wait, project) or op)

    @r.get("/instances/{name}", response_model=s.InstanceOut, summary="Instance with live usage")
    def get_instance(name: str, project: str = PROJECT) -> s.InstanceOut:
        inst = svc.instances.get(project, name)
        if not svc.instances.local(inst):   # its member is offline (else it was forwarded)
            return instance_out(inst, unreachable=True)
        return instance_out(inst, svc.instances.pid(inst), svc.instances.usage(inst),
                            svc.networks.counters(inst), svc.instances.details(inst))

    @r.get("/instances/{name}/history", response_model=s.HistoryOut,
           summary="The instance's recent usage, sampled by the daemon (the last hour)")
    def get_history(name: str, project: str = PROJECT) -> s.HistoryOut:
        svc.instances.get(project, name)   # 404 for an unknown instance
        return s.HistoryOut.model_validate(svc.history.to_dict(project, name))

    @r.patch("/instances/{name}", response_model=s.InstanceOut,
             summary="Change limits (applied live to a running instance) or options"
                     " (cluster.evacuate)")
    def patch_instance(name: str, body: s.InstancePatch, project: str = PROJECT
                       ) -> s.InstanceOut:
        if body.options:
            inst = svc.instances.update_options(project, name, body.options)
        if body.limits or not body.options:
            inst = svc.instances.update_limits(project, name, limits_in(body.limits))
        return instance_out(inst)

    @r.delete("/instances/{name}", status_code=202, response_model=s.OperationOut,
              summary="Delete an instance (force: also a running one)")
    def delete_instance(name: str, force: bool = False, project: str = PROJECT
                        ) -> JSONResponse:
        return accepted(svc.instances.delete(project, name, force))

    @r.put("/instances/{name}/state", status_code=202, response_model=s.OperationOut,
           summary="Start, stop, restart, pause or resume")
    def change_state(name: str, body: s.InstanceStateChange, project: str = PROJECT
                     ) -> JSONResponse:
        op = svc.instances.change_state(project, name, Action(body.action), body.timeout,
                                        body.force)
        return accepted(op)

    @r.post("/instances/{name}/exec", response_model=s.ExecOut,
            summary="Run a command and return its output (the websocket streams instead)")
    def exec_once(name: str, body: s.ExecIn, project: str = PROJECT) -> JSONResponse:
        req = ExecRequest(command=body.command, env=body.env, cwd=body.cwd, tty=False)
        code, out, err = exec_ws.run_collect(
            svc.instances.exec(project, name, req), body.stdin.encode(), body.timeout, stopping)
        # (ExecOut's shape, without FastAPI validating and encoding it again on the loop)
        return JSONResponse({"exit_code": code, "stdout": out.decode(errors="replace"),
                             "stderr": err.decode(errors="replace")})

    @r.put("/instances/{name}/files", status_code=204, response_class=Response,
           summary="Write a file in a running instance (created or replaced)",
           openapi_extra={"requestBody": {"required": True, "content": {
               "application/octet-stream": {"schema": {"type": "string",
                                                       "format": "binary"}}}}})
    async def push_file(request: Request, name: str,
                        path: str = Query(..., description="absolute path inside"),
                        mode: str = Query("0644", description="octal permissions"),
                        project: str = PROJECT) -> Response:
        files.check_path(path)
        if int(request.headers.get("content-length") or 0) > files.MAX_SIZE:
            raise InvalidInputError(f"file push copies at most {files.MAX_SIZE // 2**20} MiB")
        data = await request.body()
        await asyncio.to_thread(files.push, svc.instances, project, name, path, data, mode)
        return Response(status_code=204)

    @r.get("/instances/{name}/files", response_class=Response,
           summary="Read a file in a running instance")
    def pull_file(name: str, path: str = Query(..., description="absolute path inside"),
                  project: str = PROJECT) -> Response:
        return Response(files.pull(svc.instances, project, name, path),
                        media_type="application/octet-stream")

    @r.get("/instances/{name}/console", summary="PID 1's output (follow=true streams it)",
           response_class=Response)
    def console(name: str, offset: int = Query(0, ge=0), follow: bool = False,
                project: str = PROJECT) -> Response:
        data, new_offset, _ = svc.instances.console(project, name, offset)
        if not follow:
            return Response(data, media_type="application/octet-stream",
                            headers={"X-Cumulo-Offset": str(new_offset)})

        def stream() -> Iterator[bytes]:
            yield data
            pos = new_offset
            while True:
                chunk, pos, inst = svc.instances.console(project, name, pos)
                if chunk:
                    yield chunk
                elif inst.state not in (State.RUNNING, State.PAUSED):
                    return
                else:
                    time.sleep(FOLLOW_POLL)

        return StreamingResponse(stream(), media_type="application/octet-stream")

    @r.get("/images", response_model=list[s.ImageOut], summary="List images")
    def list_images(project: str = PROJECT) -> list[s.ImageOut]:
        return [image_out(i) for i in svc.images.list(project)]

    @r.post("/images", status_code=202, response_model=s.OperationOut,
            summary="Build an image with a named builder (busybox, debian/12, app, kernel)")
    def build_image(body: s.ImageBuild, project: str = IMAGE_PROJECT) -> JSONResponse:
        return accepted(svc.images.build(body.builder, body.alias, BuildOptions(
            variant=body.variant, packages=tuple(body.packages), binary=body.binary,
            profile=body.profile, features=tuple(body.features), vm=body.vm), project=project))

    @r.post("/images/app", status_code=201, response_model=s.ImageOut,
            summary="Import one static x86-64 program as an app image (for --type appvm)",
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}})
    async def import_app(request: Request, name: str = Query(..., description="program name"),
                         project: str = IMAGE_PROJECT) -> s.ImageOut:
        if int(request.headers.get("content-length") or 0) > app_image.MAX_SIZE:
            raise InvalidInputError(f"an app is at most {app_image.MAX_SIZE} bytes")
        data = await request.body()
        return image_out(await asyncio.to_thread(svc.images.import_app, name, data, project))

    @r.get("/images/{ref:path}", response_model=s.ImageOut,
           summary="Image by alias or fingerprint")
    def get_image(ref: str, project: str = PROJECT) -> s.ImageOut:
        return image_out(svc.images.get(ref, project))

    @r.delete("/images/{ref:path}", status_code=204, summary="Delete an unused image")
    def delete_image(ref: str, project: str = IMAGE_PROJECT) -> Response:
        svc.images.delete(ref, project)
        return Response(status_code=204)

    @r.post("/image-aliases", response_model=s.ImageOut, summary="Point an alias at an image")
    def set_alias(body: s.AliasIn, project: str = IMAGE_PROJECT) -> s.ImageOut:
        return image_out(svc.images.set_alias(body.name, body.target, project))

    @r.delete("/image-aliases/{name:path}", status_code=204, summary="Remove an alias")
    def delete_alias(name: str, project: str = IMAGE_PROJECT) -> Response:
        svc.images.delete_alias(name, project)
        return Response(status_code=204)

    @r.get("/networks", response_model=list[s.NetworkOut], summary="List networks")
    def list_networks(project: str = PROJECT) -> list[s.NetworkOut]:
        return [network_out(n, svc.networks.users(project, n.name))
                for n in svc.networks.list_in(project)]

    @r.post("/networks", status_code=201, response_model=s.NetworkOut,
            summary="Create a network: a bridge with its own subnet, isolated from others")
    def create_network(body: s.NetworkCreate, project: str = PROJECT) -> s.NetworkOut:
        return network_out(svc.networks.create(project, body.name, body.subnet,
                                               body.dns_domain, body.nat, body.type,
                                               body.vni, body.mtu))

    @r.get("/networks/{name}", response_model=s.NetworkOut,
           summary="A network and the instances on it")
    def get_network(name: str, project: str = PROJECT) -> s.NetworkOut:
        return network_out(svc.networks.get(project, name), svc.networks.users(project, name),
                           svc.networks.tunnels(project, name))

    @r.delete("/networks/{name}", status_code=204,
              summary="Delete a network no instance uses")
    def delete_network(name: str, project: str = PROJECT) -> Response:
        svc.networks.delete(project, name)
        return Response(status_code=204)

    # storage: pools, volumes, snapshots
    @r.get("/storage-pools", response_model=list[s.PoolOut], summary="List storage pools")
    def list_pools() -> list[s.PoolOut]:
        return [pool_out(p) for p in svc.storage.list_pools()]

    @r.get("/storage-pools/{name}", response_model=s.PoolOut, summary="A pool and its usage")
    def get_pool(name: str) -> s.PoolOut:
        return pool_out(svc.storage.info(name))

    @r.get("/volumes", response_model=list[s.VolumeOut], summary="List volumes")
    def list_volumes(project: str = PROJECT) -> list[s.VolumeOut]:
        return [volume_out(v) for v in svc.volumes.list_in(project)]

    @r.post("/volumes", status_code=201, response_model=s.VolumeOut,
            summary="Create a volume: a size-capped filesystem in a pool")
    def create_volume(body: s.VolumeCreate, project: str = PROJECT) -> s.VolumeOut:
        vol = svc.volumes.create(project, body.name, body.size, body.pool)
        return volume_out(vol, svc.volumes.used(vol))

    @r.get("/volumes/{name}", response_model=s.VolumeOut, summary="A volume and its users")
    def get_volume(name: str, project: str = PROJECT) -> s.VolumeOut:
        vol = svc.volumes.get(project, name)
        return volume_out(vol, svc.volumes.used(vol))

    @r.patch("/volumes/{name}", response_model=s.VolumeOut,
             summary="Resize a volume (grows online; never below what is in use)")
    def resize_volume(name: str, body: s.VolumeResize, project: str = PROJECT) -> s.VolumeOut:
        vol = svc.volumes.resize(project, name, body.size)
        return volume_out(vol, svc.volumes.used(vol))

    @r.delete("/volumes/{name}", status_code=204, summary="Delete a detached volume")
    def delete_volume(name: str, project: str = PROJECT) -> Response:
        svc.volumes.delete(project, name)
        return Response(status_code=204)

    @r.post("/volumes/{name}/attachments", response_model=s.VolumeOut,
            summary="Attach to an instance: mounted in a container at its next start,"
                    " hot-plugged into a running VM")
    def attach_volume(name: str, body: s.AttachmentIn, project: str = PROJECT
                      ) -> s.VolumeOut:
        return volume_out(svc.volumes.attach(project, name, body.instance, body.path,
                                             body.shared))

    @r.delete("/volumes/{name}/attachments/{instance}", response_model=s.VolumeOut,
              summary="Detach from an instance (hot-unplugged from a running VM)")
    def detach_volume(name: str, instance: str, project: str = PROJECT) -> s.VolumeOut:
        return volume_out(svc.volumes.detach(project, name, instance))

    for kind, is_volume in (("instances", False), ("volumes", True)):
        _snapshot_routes(r, svc, kind, is_volume)

    @r.get("/operations", response_model=list[s.OperationOut], summary="Recent operations")
    def list_operations(project: str = PROJECT) -> list[s.OperationOut]:
        return [operation_out(o) for o in svc.ops.list(project=project)]

    @r.get("/operations/{op_id}", response_model=s.OperationOut,
           summary="An operation; wait=SECONDS blocks until it ends")
    async def get_operation(request: Request, op_id: str,
                            wait: float = Query(0, ge=0, le=600),
                            project: str = PROJECT) -> s.OperationOut:
        caller = auth.caller_of(request)
        if not caller.admin:   # 404 for another project's
            auth.check_operation(caller, await run_in_threadpool(
                svc.ops.get, op_id, 0.0, project), READ)
        # a running one is awaited on the loop, woken by its end; a finished one is read
        # from the store on a worker thread
        op = await svc.ops.wait(op_id, wait, project)
        if op is None:
            op = await run_in_threadpool(svc.ops.get, op_id, 0.0, project)
        return operation_out(op)

    @r.post("/instances/{name}/checkpoint", status_code=202, response_model=s.OperationOut,
            summary="Save a running VM's memory and device state, then stop it")
    def checkpoint(request: Request, name: str, body: s.CheckpointIn, project: str = PROJECT
                   ) -> JSONResponse:
        return accepted(svc.checkpoints.checkpoint(project, name, checkpoint_file(request, body)))

    @r.post("/instances/{name}/restore", status_code=202, response_model=s.OperationOut,
            summary="Run a stopped VM again from its checkpoint, where it was")
    def restore(request: Request, name: str, body: s.CheckpointIn, project: str = PROJECT
                ) -> JSONResponse:
        return accepted(svc.checkpoints.restore(project, name, checkpoint_file(request, body)))

    @r.post("/instances/{name}/bandwidth", response_model=s.InstanceOut,
            summary="Change the bandwidth caps of an instance's NICs (live when running)")
    def set_bandwidth(name: str, body: s.BandwidthIn, project: str = PROJECT) -> s.InstanceOut:
        svc.networks.set_bandwidth(project, name, body.network, body.ingress, body.egress,
                                   body.burst)
        return instance_out(svc.instances.get(project, name))

    @r.post("/instances/{name}/nics", status_code=201, response_model=s.InstanceOut,
            summary="Attach a NIC on a network to an instance (live when it runs)")
    def attach_nic(name: str, body: s.NicAttachIn, project: str = PROJECT) -> s.InstanceOut:
        NicPlugs(svc.instances).attach(project, name, body.network, body.name, body.ip)
        return instance_out(svc.instances.get(project, name))

    @r.delete("/instances/{name}/nics/{network}", response_model=s.InstanceOut,
              summary="Detach the instance's NIC on a network (live when it runs)")
    def detach_nic(name: str, network: str, project: str = PROJECT) -> s.InstanceOut:
        NicPlugs(svc.instances).detach(project, name, network)
        return instance_out(svc.instances.get(project, name))

    add_image_routes(r, svc)
    add_project_routes(r, svc)
    firewall_routes.add_routes(r, svc)
    host_routes.add_routes(r, svc, sessions)
    identity_routes.add_routes(r, svc, sessions)
    web_routes.add_routes(r, svc, listen, reports, fingerprint)
    membership_routes.add_routes(r, svc)
    placement_routes.add_routes(r, svc)
    tpm_routes.add_routes(r, svc)
    # the routes as they are (prefix and error responses applied): include_router would
    # build each route's models once more, a second of the daemon's start-up
    app.router.routes.extend(r.routes)
    assets.mount(app)

    @app.websocket(f"/{API}/instances/{{name}}/exec-ws")
    async def exec_stream(ws: WebSocket, name: str, project: str = "default") -> None:
        await exec_ws.serve(ws, svc, project, name)

    @app.websocket(f"/{API}/events")
    async def event_stream(ws: WebSocket, type: str | None = None, project: str | None = None
                           ) -> None:
        if not auth.caller_of(ws).admin and type != "":   # log records: admins only
            with contextlib.suppress(InvalidInputError):   # (serve says what is wrong)
                type = ",".join(t for t in events_ws.parse_types(type) if t != "logging")
            if type == "":
                await ws.close(code=4403, reason="the daemon's log records are for admins")
                return
        await events_ws.serve(ws, svc, type, project)

    @app.websocket(f"/{API}/instances/{{name}}/console-ws")
    async def console_stream(ws: WebSocket, name: str, project: str = "default") -> None:
        await console_ws.serve(ws, svc, project, name)

    return app


def _snapshot_routes(r: APIRouter, svc: Services, kind: str, volume: bool) -> None:
    """Snapshots of instance roots and of volumes: the same four routes under each."""
    what = "a volume" if volume else "an instance's root"

    @r.get(f"/{kind}/{{name}}/snapshots", response_model=list[s.SnapshotOut],
           summary=f"Snapshots of {what}", operation_id=f"list_{kind}_snapshots")
    def list_snapshots(name: str, project: str = PROJECT) -> list[s.SnapshotOut]:
        return [s.SnapshotOut(name=n, stateful=svc.volumes.is_stateful(project, name, n, volume))
                for n in svc.volumes.snapshots(project, name, volume)]

    @r.post(f"/{kind}/{{name}}/snapshots", status_code=201, response_model=s.SnapshotOut,
            summary=f"Snapshot {what}", operation_id=f"create_{kind}_snapshot")
    def create_snapshot(name: str, body: s.SnapshotIn, project: str = PROJECT
                        ) -> s.SnapshotOut:
        svc.volumes.snapshot(project, name, body.name, volume, body.stateful)
        return s.SnapshotOut(name=body.name, stateful=body.stateful)

    @r.post(f"/{kind}/{{name}}/snapshots/{{snap}}/restore", status_code=204,
            summary=f"Bring {what} back to a snapshot (stopped instances only; a stateful"
                    " one runs the VM again where it was)",
            operation_id=f"restore_{kind}_snapshot")
    def restore_snapshot(name: str, snap: str, project: str = PROJECT) -> Response:
        svc.volumes.restore(project, name, snap, volume)
        return Response(status_code=204)

    @r.delete(f"/{kind}/{{name}}/snapshots/{{snap}}", status_code=204,
              summary=f"Delete a snapshot of {what}", operation_id=f"delete_{kind}_snapshot")
    def delete_snapshot(name: str, snap: str, project: str = PROJECT) -> Response:
        svc.volumes.delete_snapshot(project, name, snap, volume)
        return Response(status_code=204)
