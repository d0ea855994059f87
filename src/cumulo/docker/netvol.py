"""Docker networks and volumes over Cumulo's (``bridge`` is Cumulo's ``default``)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo import errors as e
from cumulo.docker.common import Context, DockerError, bad, body_json, call, conflict, filters
from cumulo.docker.common import ok_json as js
from cumulo.docker.containers import Containers
from cumulo.docker.images import iso
from cumulo.docker.meta import Meta
from cumulo.domain.models import Instance, Network
from cumulo.domain.volumes import Volume
from cumulo.services.nic_hotplug import NicPlugs

DEFAULT_VOLUME_SIZE = "1GiB"
BRIDGE = "bridge"          # Docker's name for the default network
ANONYMOUS = "com.docker.volume.anonymous"   # the label of a container's ``-v /path``


def _net_id(net: Network) -> str:
    return hashlib.sha256(f"{net.project}/{net.name}/{net.bridge}".encode()).hexdigest()


def routes(ctx: Context, meta: Meta) -> list[Route]:
    svc, project = ctx.svc, ctx.project

    def shape_net(net: Network) -> dict[str, Any]:
        containers = {}
        for inst in svc.store.list_instances(project):
            for nic in inst.nics:
                if nic.network == net.name:
                    containers[meta.container(inst)["Id"]] = {
                        "Name": inst.name, "EndpointID": nic.host_name,
                        "MacAddress": nic.mac, "IPv4Address": nic.ip, "IPv6Address": ""}
        return {"Name": BRIDGE if net.name == "default" else net.name, "Id": _net_id(net),
                "Created": iso(net.created_at), "Scope": "local", "Driver": "bridge",
                "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": None,
                         "Config": [{"Subnet": net.subnet, "Gateway": net.gateway}]},
                "Internal": net.isolated and net.name != "default", "Attachable": False,
                "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
                "Containers": containers,
                "Options": {"com.docker.network.bridge.name": net.bridge},
                "Labels": {}}

    def find_net(ref: str) -> Network:
        name = "default" if ref == BRIDGE else ref
        for net in svc.networks.list_in(project):
            if net.name == name or _net_id(net).startswith(ref):
                return net
        raise DockerError(404, f"network {ref} not found")

    async def list_networks(request: Request) -> Response:
        want = filters(request)
        out = [shape_net(n) for n in await call(svc.networks.list_in, project)]
        if want.get("name"):
            out = [n for n in out if any(v in n["Name"] for v in want["name"])]
        return js(out)

    async def get_network(request: Request) -> Response:
        return js(shape_net(await call(find_net, request.path_params["id"])))

    async def create_network(request: Request) -> Response:
        body = await body_json(request)
        name = str(body.get("Name") or "")
        if not name:
            raise bad("network name is required")
        if body.get("Driver") not in (None, "", "bridge"):
            raise DockerError(501, f"network driver {body['Driver']!r} is not supported by"
                                   " Cumulo: only bridge")
        subnet = None
        for conf in ((body.get("IPAM") or {}).get("Config") or []):
            subnet = conf.get("Subnet") or subnet
        try:
            net = await call(svc.networks.create, project, name, subnet, None,
                             not body.get("Internal"))
        except e.ConflictError:
            raise conflict(f"network with name {name} already exists") from None
        return js({"Id": _net_id(net), "Warning": ""}, 201)

    async def delete_network(request: Request) -> Response:
        net = await call(find_net, request.path_params["id"])
        if net.name == "default":
            raise DockerError(403, "bridge is a pre-defined network and cannot be removed")
        users = await call(svc.networks.users, project, net.name)
        if users:
            raise DockerError(403, f"error while removing network: network {net.name} id "
                                   f"{_net_id(net)} has active endpoints")
        await call(svc.networks.delete, project, net.name)
        return Response(status_code=204)

    async def prune_networks(_request: Request) -> Response:
        gone = []
        for net in await call(svc.networks.list_in, project):
            if net.name != "default" and not await call(svc.networks.users, project,
                                                        net.name):
                await call(svc.networks.delete, project, net.name)
                gone.append(net.name)
        return js({"NetworksDeleted": gone or None})

    async def endpoint(request: Request) -> tuple[Network, Instance, dict[str, Any]]:
        """The network, the container and the request's body of a connect/disconnect."""
        net = await call(find_net, request.path_params["id"])
        body = await body_json(request)
        if not body.get("Container"):
            raise bad("container is required")
        return net, await call(Containers(ctx, meta).find, str(body["Container"])), body

    async def connect(request: Request) -> Response:
        """A NIC on the network, live when the container runs (NicPlugs); Aliases and
        Links are accepted and ignored: the container's name is its only DNS name."""
        net, inst, body = await endpoint(request)
        shown = BRIDGE if net.name == "default" else net.name
        if any(n.network == net.name for n in inst.nics):
            raise DockerError(403, f"endpoint with name {inst.name} already exists in"
                                   f" network {shown}")
        ipam = (body.get("EndpointConfig") or {}).get("IPAMConfig") or {}
        try:
            await call(NicPlugs(svc.instances).attach, project, inst.name, net.name, None,
                       ipam.get("IPv4Address") or None)
        except e.InvalidInputError as err:
            raise bad(f"invalid endpoint settings: {err}") from None
        return Response(status_code=200)

    async def disconnect(request: Request) -> Response:
        net, inst, _body = await endpoint(request)
        if not any(n.network == net.name for n in inst.nics):
            raise DockerError(500, f"container {meta.container(inst)['Id']} is not connected"
                                   f" to network {BRIDGE if net.name == 'default' else net.name}")
        await call(NicPlugs(svc.instances).detach, project, inst.name, net.name)
        return Response(status_code=200)

    def shape_vol(vol: Volume, anonymous: set[str]) -> dict[str, Any]:
        labels = {ANONYMOUS: ""} if vol.name in anonymous else {}
        return {"Name": vol.name, "Driver": "local", "Mountpoint": "",
                "CreatedAt": iso(vol.created_at), "Labels": labels, "Scope": "local",
                "Options": {"size": str(vol.size), "pool": vol.pool},
                "Status": {"attachments": [a.instance for a in vol.attachments]}}

    async def get_vol(name: str) -> Volume:
        try:
            return await call(svc.volumes.get, project, name)
        except e.NotFoundError:
            raise DockerError(404, f"get {name}: no such volume") from None

    async def list_volumes(_request: Request) -> Response:
        vols = await call(svc.volumes.list_in, project)
        anonymous = meta.anonymous()
        return js({"Volumes": [shape_vol(v, anonymous) for v in vols], "Warnings": []})

    async def create_volume(request: Request) -> Response:
        body = await body_json(request)
        name = str(body.get("Name") or "") or f"v{secrets.token_hex(6)}"
        if body.get("Driver") not in (None, "", "local"):
            raise DockerError(501, f"volume driver {body['Driver']!r} is not supported by"
                                   " Cumulo: only local")
        size = (body.get("DriverOpts") or {}).get("size") or DEFAULT_VOLUME_SIZE
        try:
            return js(shape_vol(await call(svc.volumes.get, project, name), meta.anonymous()),
                      201)
        except e.NotFoundError:
            pass
        return js(shape_vol(await call(svc.volumes.create, project, name, size), set()), 201)

    async def get_volume(request: Request) -> Response:
        return js(shape_vol(await get_vol(request.path_params["name"]), meta.anonymous()))

    async def delete_volume(request: Request) -> Response:
        vol = await get_vol(request.path_params["name"])
        if vol.attachments:
            ids = ", ".join(meta.container_id(project, a.instance) for a in vol.attachments)
            raise conflict(f"remove {vol.name}: volume is in use - [{ids}]")
        await call(svc.volumes.delete, project, vol.name)
        meta.forget_volume(vol.name)
        return Response(status_code=204)

    async def prune_volumes(request: Request) -> Response:
        """Volumes no container uses; from API 1.42 on only anonymous ones unless the
        filter ``all`` is true (``docker volume prune -a``), as Docker."""
        version = request.scope.get("cumulo.api_version") or (1, 45)
        every = version < (1, 42) or "true" in [v.lower() for v in filters(request).get(
            "all", [])]
        anonymous = meta.anonymous()
        gone = []
        for vol in await call(svc.volumes.list_in, project):
            if not vol.attachments and (every or vol.name in anonymous):
                await call(svc.volumes.delete, project, vol.name)
                meta.forget_volume(vol.name)
                gone.append(vol.name)
        return js({"VolumesDeleted": gone or None, "SpaceReclaimed": 0})

    return [
        Route("/networks", list_networks, methods=["GET"]),
        Route("/networks/create", create_network, methods=["POST"]),
        Route("/networks/prune", prune_networks, methods=["POST"]),
        Route("/networks/{id}", get_network, methods=["GET"]),
        Route("/networks/{id}", delete_network, methods=["DELETE"]),
        Route("/networks/{id}/connect", connect, methods=["POST"]),
        Route("/networks/{id}/disconnect", disconnect, methods=["POST"]),
        Route("/volumes", list_volumes, methods=["GET"]),
        Route("/volumes/create", create_volume, methods=["POST"]),
        Route("/volumes/prune", prune_volumes, methods=["POST"]),
        Route("/volumes/{name}", get_volume, methods=["GET"]),
        Route("/volumes/{name}", delete_volume, methods=["DELETE"]),
    ]
