"""System routes: ``/_ping``, ``/version``, ``/info``, ``/events``, ``/system/df``."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cumulo import __version__
from cumulo.docker.common import API_VERSION, MIN_API_VERSION, Context, bad, call, filters
from cumulo.docker.common import ok_json as js
from cumulo.docker.meta import Meta
from cumulo.domain.lifecycle import State

PING_HEADERS = {"Api-Version": API_VERSION, "Docker-Experimental": "false", "Ostype": "linux",
                "Builder-Version": "1", "Cache-Control": "no-cache, no-store, must-revalidate",
                "Pragma": "no-cache", "Server": f"Cumulo/{__version__} (linux)"}
# Cumulo's lifecycle actions as Docker's container event actions
ACTIONS = {"created": "create", "started": "start", "stopped": "die", "deleted": "destroy",
           "paused": "pause", "resumed": "unpause", "renamed": "rename",
           "limits-changed": "update"}


def version_info() -> dict[str, Any]:
    uname = os.uname()
    return {
        "Platform": {"Name": "Cumulo"},
        "Components": [{"Name": "Engine", "Version": __version__,
                        "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                                    "Os": "linux", "Arch": "amd64",
                                    "KernelVersion": uname.release}}],
        "Version": __version__, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "", "GoVersion": f"python{platform.python_version()}", "Os": "linux",
        "Arch": "amd64", "KernelVersion": uname.release, "Experimental": False,
        "BuildTime": "",
    }


def _since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise bad(f"invalid time {value!r}") from None


def routes(ctx: Context, meta: Meta) -> list[Route]:
    svc = ctx.svc

    async def ping(request: Request) -> Response:
        body = b"" if request.method == "HEAD" else b"OK"
        return Response(body, media_type="text/plain; charset=utf-8", headers=PING_HEADERS)

    async def version(_request: Request) -> Response:
        return js(version_info())

    async def info(_request: Request) -> Response:
        insts = await call(svc.instances.list, ctx.project)
        images = await call(svc.images.list)
        host = svc.host
        running = sum(1 for i in insts if i.state == State.RUNNING)
        paused = sum(1 for i in insts if i.state == State.PAUSED)
        uname = os.uname()
        runtimes = {"runc": {"path": "runc"}}
        if "imagevm" in svc.instances.drivers:
            runtimes["cumulo-vm"] = {"path": "cumulo-vm"}
        return js({
            "ID": f"cumulo-{uname.nodename}", "Containers": len(insts),
            "ContainersRunning": running, "ContainersPaused": paused,
            "ContainersStopped": len(insts) - running - paused, "Images": len(images),
            "Driver": "cumulo", "DriverStatus": [["Project", ctx.project]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "null"], "Log": ["json-file"]},
            "MemoryLimit": True, "SwapLimit": True, "CpuCfsPeriod": True, "CpuCfsQuota": True,
            "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True,
            "Debug": False, "NFd": 0, "NGoroutines": 0, "SystemTime": datetime.now().astimezone()
            .isoformat(), "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if getattr(host, "cgroup_version", 1) == 2 else "1",
            "NEventsListener": svc.events.subscribers(), "KernelVersion": uname.release,
            "OperatingSystem": "Cumulo", "OSVersion": "", "OSType": "linux",
            "Architecture": uname.machine, "NCPU": host.cpus, "MemTotal": host.memory_bytes,
            "IndexServerAddress": "", "RegistryConfig": {"IndexConfigs": {},
                                                         "InsecureRegistryCIDRs": []},
            "DockerRootDir": str(ctx.state_dir), "Name": uname.nodename, "Labels": [],
            "ExperimentalBuild": False, "ServerVersion": __version__,
            "Runtimes": runtimes, "DefaultRuntime": "runc",
            "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "",
                      "ControlAvailable": False, "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "",
            "SecurityOptions": ["name=seccomp,profile=builtin", "name=userns"],
            "Warnings": [],
        })

    async def events(request: Request) -> Response:
        since, until = _since(request.query_params.get("since")), _since(
            request.query_params.get("until"))
        want = filters(request)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(wake.set)

        sub = svc.events.subscribe(["lifecycle"], ctx.project, notify=notify, since=None
                                   if since is None else datetime.fromtimestamp(since, UTC))

        def shape(event: dict[str, Any]) -> dict[str, Any] | None:
            md = event["metadata"]
            action = ACTIONS.get(md.get("action", "").removeprefix("instance-"))
            if action is None:
                return None
            name = md.get("name", "")
            ts = datetime.fromisoformat(event["timestamp"]).timestamp()
            if until is not None and ts > until:
                return None
            attrs: dict[str, str] = {"name": name}
            code = (md.get("context") or {}).get("exit_code")
            if code is not None:
                attrs["exitCode"] = str(code)
            old = (md.get("context") or {}).get("old_name")
            if old:
                attrs["oldName"] = f"/{old}"
            cid = meta.container_id(ctx.project, name)
            out = {"status": action, "id": cid, "from": "", "Type": "container",
                   "Action": action, "Actor": {"ID": cid, "Attributes": attrs},
                   "scope": "local", "time": int(ts), "timeNano": int(ts * 1e9)}
            if want.get("type") and "container" not in want["type"]:
                return None
            if want.get("event") and action not in want["event"]:
                return None
            if want.get("container") and not ({name, cid} & set(want["container"]) or any(
                    cid.startswith(c) for c in want["container"])):
                return None
            return out

        async def gen() -> AsyncIterator[bytes]:
            try:
                while True:
                    wake.clear()
                    for event in sub.drain():
                        shaped = shape(event)
                        if shaped is not None:
                            yield (json.dumps(shaped) + "\n").encode()
                    if sub.closed:
                        return
                    timeout = None if until is None else max(0.0, until - time.time())
                    if timeout == 0.0:
                        return
                    try:
                        await asyncio.wait_for(wake.wait(), timeout)
                    except TimeoutError:
                        return
            finally:
                sub.close()

        return StreamingResponse(gen(), media_type="application/json")

    async def df(_request: Request) -> Response:
        return js({"LayersSize": 0, "Images": [], "Containers": [], "Volumes": [],
                   "BuildCache": []})

    return [
        Route("/_ping", ping, methods=["GET", "HEAD"]),
        Route("/version", version, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Route("/system/df", df, methods=["GET"]),
    ]
