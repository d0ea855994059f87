"""Docker containers over Cumulo instances: create, lifecycle, wait, attach, logs, ps, rm."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cumulo import errors as e
from cumulo.api import upload_limit
from cumulo.docker import copy, output, shapes, stats
from cumulo.docker import images as img
from cumulo.docker.common import (
    Context,
    DockerError,
    bad,
    body_json,
    call,
    conflict,
    filters,
    finish,
    flag,
    int_param,
    not_found,
)
from cumulo.docker.common import ok_json as js
from cumulo.docker.meta import Meta
from cumulo.domain.lifecycle import Action, State
from cumulo.domain.models import Instance
from cumulo.domain.units import validate_name
from cumulo.drivers.container.oci_spec import IDMAP_BASE, IDMAP_SIZE
from cumulo.services.checkpoints import DEFAULT_FILE as CHECKPOINT_FILE
from cumulo.services.instances import CreateRequest, ProcessOptions
from cumulo.services.networks import NicRequest

POLL = 0.025             # how often a waiting client's container is looked at
REAP_POLL = 0.5          # auto-remove and restart policies, in the background
DRAIN_WAIT = 10.0        # how long an auto-remove waits for attached clients to get the end
REMOVED_KEPT = 256       # exit codes kept of containers --rm removed
ADJECTIVES = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "quiet", "sharp",
              "tender", "vivid", "witty", "zen", "bold", "cool", "happy")
NAMES = ("turing", "hopper", "lovelace", "ritchie", "thompson", "knuth", "dijkstra",
         "liskov", "hamilton", "torvalds", "kay", "lamport", "perlman", "wirth", "backus")
SIGNALS = {"SIGKILL": "KILL", "SIGTERM": "TERM", "SIGINT": "INT", "SIGHUP": "HUP",
           "SIGQUIT": "QUIT", "SIGUSR1": "USR1", "SIGUSR2": "USR2", "SIGSTOP": "STOP",
           "SIGCONT": "CONT", "SIGWINCH": "WINCH"}


def _bind_source(src: str) -> str:
    if not src.startswith("/") or not os.path.exists(src):
        raise bad(f"invalid mount config for type \"bind\": bind source path does not"
                  f" exist: {src}")
    return src


def check_name(name: str) -> None:
    try:
        validate_name(name)
    except e.InvalidInputError:
        raise bad(f"Invalid container name ({name}), only [a-z0-9-] are allowed in"
                  " Cumulo (lowercase letters, digits and '-', up to 63)") from None


def anonymous_name() -> str:
    """An anonymous volume's name (Docker's 64 hex digits are over Cumulo's 63)."""
    return f"v{secrets.token_hex(6)}"


def random_name() -> str:
    return f"{secrets.choice(ADJECTIVES)}-{secrets.choice(NAMES)}"


class Containers:
    """The container routes' shared logic (lookups, shapes, the background reaper)."""

    def __init__(self, ctx: Context, meta: Meta) -> None:
        self.ctx, self.meta = ctx, meta
        self.svc = ctx.svc
        self.project = ctx.project
        self._attached: Counter[str] = Counter()   # attach streams per container
        # exit codes of containers --rm removed, for a wait that comes too late to see
        # them stop (host id -> code; the newest REMOVED_KEPT)
        self.removed_codes: OrderedDict[str, int | None] = OrderedDict()
        self._drained = threading.Condition()

    @contextlib.contextmanager
    def attached(self, inst: Instance) -> Iterator[None]:
        """An attach stream of ``inst`` is open: an auto-remove waits for its end, so the
        client gets the last output before the container and its log are gone."""
        with self._drained:
            self._attached[inst.host_id] += 1
        try:
            yield
        finally:
            with self._drained:
                self._attached[inst.host_id] -= 1
                if self._attached[inst.host_id] <= 0:
                    del self._attached[inst.host_id]
                self._drained.notify_all()

    # lookups
    def find(self, ref: str) -> Instance:
        """By name (``/name`` too), full Docker id, or id prefix."""
        name = ref.lstrip("/")
        with contextlib.suppress(e.NotFoundError, e.InvalidInputError):
            return self.svc.instances.get(self.project, name)
        if name:
            matches = [i for i in self.svc.store.list_instances(self.project)
                       if self.meta.container(i)["Id"].startswith(name)]
            if len(matches) == 1:
                return self.svc.instances.refresh(matches[0])
            if len(matches) > 1:
                raise bad(f"multiple IDs found with provided prefix: {name}")
        raise not_found(f"No such container: {ref}")

    def gateways(self) -> dict[str, str]:
        return {n.name: n.gateway for n in self.svc.networks.list_in(self.project)}

    def mounts(self, inst: Instance) -> list[dict[str, Any]]:
        out = []
        for vol in self.svc.volumes.list_in(self.project):
            for a in vol.attachments:
                if a.instance == inst.name:
                    out.append({"Type": "volume", "Name": vol.name, "Source": "",
                                "Destination": a.path, "Driver": "local", "Mode": "z",
                                "RW": True, "Propagation": ""})
        with contextlib.suppress(DockerError):   # (a source gone since: not shown)
            for source, path, ro in self._volumes(self.meta.container(inst).get(
                    "HostConfig") or {})[1]:
                out.append({"Type": "bind", "Source": source, "Destination": path,
                            "Mode": "ro" if ro else "", "RW": not ro,
                            "Propagation": "rprivate"})
        return out

    def inspect(self, inst: Instance) -> dict[str, Any]:
        return shapes.inspect(inst, self.meta.container(inst), self.svc.instances.pid(inst),
                              self.gateways(), self.mounts(inst))

    def name_free(self, name: str, prefix: str = "") -> None:
        """Docker's 409 when a container already has ``name``."""
        with contextlib.suppress(e.NotFoundError):
            other = self.svc.store.get_instance(self.project, name)
            raise conflict(f"{prefix}Conflict. The container name \"/{name}\" is already in use by "
                           f"container \"{self.meta.container(other)['Id']}\". You have to "
                           "remove (or rename) that container to be able to reuse that name.")

    def not_running(self, inst: Instance) -> DockerError:
        return conflict(f"Container {self.meta.container(inst)['Id']} is not running")

    # create
    def create(self, name: str | None, body: dict[str, Any]) -> dict[str, Any]:
        hc: dict[str, Any] = body.get("HostConfig") or {}
        name = (name or "").lstrip("/") or random_name()
        check_name(name)
        self.name_free(name)
        ref = str(body.get("Image") or "")
        if not ref:
            raise bad("config cannot be empty in order to create a container")
        image = img.resolve(self.ctx, self.meta, ref)
        iconf = img.config_of(self.meta, image)
        entry = body.get("Entrypoint")
        if isinstance(entry, str):
            entry = [entry]
        cmd = body.get("Cmd")
        if isinstance(cmd, str):
            cmd = [cmd]
        if entry is None:
            entry = iconf.get("Entrypoint") or []
            cmd = cmd if cmd else (iconf.get("Cmd") or [])
        command = [*(entry or []), *(cmd or [])] or list(image.command)
        if not command:
            raise bad("No command specified")
        env: dict[str, str] = {}
        for item in [*(iconf.get("Env") or []), *(body.get("Env") or [])]:
            key, _, value = str(item).partition("=")
            env[key] = value
        rootfs = self.svc.images.files.payload(image.fingerprint)
        user_text = str(body.get("User") or iconf.get("User") or "")
        user = shapes.resolve_user(rootfs, user_text)
        cwd = str(body.get("WorkingDir") or iconf.get("WorkingDir") or "/")
        limits = shapes.limits_from(hc)
        runtime = hc.get("Runtime") or ""
        vm = runtime == shapes.VM_RUNTIME or hc.get("Isolation") == "vm"
        if runtime and runtime not in ("runc", shapes.VM_RUNTIME):
            raise bad(f"unknown or invalid runtime name: {runtime}")
        mode = hc.get("NetworkMode") or "default"
        networks: tuple[NicRequest, ...] | None
        if mode in ("default", "bridge"):
            networks = None
        elif mode == "none":
            networks = ()
        elif mode == "host" or mode.startswith("container:"):
            raise DockerError(501, f"network mode {mode!r} is not supported by Cumulo")
        else:
            networks = (NicRequest(mode),)
        vols, binds = self._volumes(hc, body.get("Volumes"))
        if any((hc.get("PortBindings") or {}).values()) and networks == ():
            raise bad("publishing a port needs a network: not with --network none")
        op = self.svc.instances.create(self.project, CreateRequest(
            name=name, image=image.fingerprint, type=shapes.VM_TYPE if vm else "container",
            limits=limits, privileged=bool(hc.get("Privileged")), command=command,
            networks=networks, binds=tuple(binds), process=ProcessOptions(
                env=env, cwd=cwd, user=user, terminal=bool(body.get("Tty")),
                stdin=bool(body.get("OpenStdin")))))
        cid = secrets.token_hex(32)
        config = {k: body.get(k) for k in ("Hostname", "User", "AttachStdin", "AttachStdout",
                                           "AttachStderr", "Tty", "OpenStdin", "StdinOnce",
                                           "WorkingDir", "Labels", "ExposedPorts",
                                           "StopSignal", "StopTimeout")
                  if body.get(k) is not None}
        config.update({"Image": ref, "Cmd": cmd, "Entrypoint": entry or None,
                       "Env": [f"{k}={v}" for k, v in env.items()], "Hostname": name,
                       "User": user_text, "WorkingDir": cwd if cwd != "/" else ""})
        return {"op": op, "name": name, "vols": vols, "meta": {
            "Id": cid, "Config": config, "HostConfig": hc, "Starts": 0,
            "AnonVolumes": [v for v, _path, anon in vols if anon]}}

    @staticmethod
    def _volumes(hc: dict[str, Any], anonymous: dict[str, Any] | None = None
                 ) -> tuple[list[tuple[str, str, bool]], list[tuple[str, str, bool]]]:
        """Volumes to attach: (volume, path, anonymous); host directories to bind: (host
        path, path, read-only). ``anonymous``: Config.Volumes (``-v /path``), a new volume
        for each path no bind or mount already covers."""
        out: list[tuple[str, str, bool]] = []
        binds: list[tuple[str, str, bool]] = []
        for bind in hc.get("Binds") or []:
            src, _, rest = str(bind).partition(":")
            dest, _, mode = rest.partition(":")
            if not dest:
                raise bad(f"invalid volume specification: '{bind}'")
            if src.startswith("/"):
                binds.append((_bind_source(src), dest, "ro" in mode.split(",")))
            else:
                out.append((src, dest, False))
        for m in hc.get("Mounts") or []:
            if m.get("Type") == "bind":
                binds.append((_bind_source(str(m.get("Source") or "")), m["Target"],
                              bool(m.get("ReadOnly"))))
            elif m.get("Type") == "volume":
                src = str(m.get("Source") or "")
                out.append((src or anonymous_name(), m["Target"], not src))
            else:
                raise DockerError(501, f"mounts of type {m.get('Type')!r} are not supported"
                                       " by Cumulo: use a named volume or a bind")
        taken = {path.rstrip("/") for _v, path, _a in out} | {p.rstrip("/") for _s, p, _r
                                                             in binds}
        for path in anonymous or {}:
            if str(path).rstrip("/") not in taken:
                out.append((anonymous_name(), str(path), True))
        return out, binds

    def attach_volumes(self, name: str, vols: list[tuple[str, str, bool]]) -> None:
        for vol, path, anon in vols:
            try:
                self.svc.volumes.get(self.project, vol)
            except e.NotFoundError:
                self.svc.volumes.create(self.project, vol, "1GiB")
                if anon:
                    self.meta.mark_anonymous(vol)
            self.svc.volumes.attach(self.project, vol, name, path)

    def publish(self, name: str, hc: dict[str, Any]) -> None:
        """``-p [IP:]HOST:CONTAINER``: a Cumulo port forward from the host's address (its
        first own address when none is given) to the container's first network."""
        bindings = {k: v for k, v in (hc.get("PortBindings") or {}).items() if v}
        if not bindings:
            return
        inst = self.svc.instances.get(self.project, name)
        if not inst.nics:
            raise bad("publishing a port needs a network: this container has none")
        network = inst.nics[0].network
        for key, binds in bindings.items():
            port, _, proto = key.partition("/")
            for b in binds:
                listen = b.get("HostIp") or ""
                if listen in ("", "0.0.0.0"):
                    listen = self.host_address()
                self.svc.networks.firewall.add_forward(
                    self.project, network, listen, int(b.get("HostPort") or port),
                    proto or "tcp", name, int(port))

    def host_address(self) -> str:
        gateways = set(self.gateways().values())
        for addr in self.svc.networks.host_net.addresses():
            if not addr.ip.is_loopback and str(addr.ip) not in gateways:
                return str(addr.ip)
        raise bad("publishing a port needs an address of this host: it has none but"
                  " loopback")

    # state
    def started(self, inst: Instance) -> None:
        data = self.meta.container(inst)
        self.meta.update_container(inst, StartedAt=shapes.now_iso(),
                                   Starts=int(data.get("Starts") or 0) + 1, Running=True,
                                   StoppedByUser=False)

    def finished(self, inst: Instance, by_user: bool = False) -> None:
        self.meta.update_container(inst, FinishedAt=shapes.now_iso(), Running=False,
                                   StoppedByUser=by_user, ExitCode=inst.exit_code)

    def reap_once(self) -> None:
        """Auto-remove and restart policies of containers that stopped on their own.
        Every 0.5 s: the store is read only while a container Docker started runs (it
        read every instance of the project, a query each, while a launch waited for a
        CPU)."""
        if not self.meta.running():
            return
        for inst in self.svc.store.list_instances(self.project):
            data = self.meta.container(inst)
            if not data.get("Running") or inst.state not in (State.RUNNING, State.STOPPED):
                continue
            inst = self.svc.instances.refresh(inst)
            if inst.state != State.STOPPED:
                continue
            self.after_exit(inst, data)

    def after_exit(self, inst: Instance, data: dict[str, Any]) -> None:
        if (self.svc.instances.instances_dir / inst.host_id / CHECKPOINT_FILE).exists():
            self.finished(inst, True)   # cumulo checkpoint: no restart, no removal
            return
        self.finished(inst, bool(data.get("StoppedByUser")))
        hc = data.get("HostConfig") or {}
        policy = (hc.get("RestartPolicy") or {}).get("Name") or "no"
        if hc.get("AutoRemove"):
            self.removed_codes[inst.host_id] = self.svc.instances.exit_code(inst)
            while len(self.removed_codes) > REMOVED_KEPT:
                self.removed_codes.popitem(last=False)
            with self._drained:   # (a client attached reads the end of the log first)
                self._drained.wait_for(lambda: not self._attached[inst.host_id], DRAIN_WAIT)
            with contextlib.suppress(e.CumuloError):
                self.remove(inst, force=True, volumes=True)   # as Docker's --rm
            return
        count = int(data.get("RestartCount") or 0)
        retry = int((hc.get("RestartPolicy") or {}).get("MaximumRetryCount") or 0)
        if data.get("StoppedByUser") or policy == "no" or (
                policy == "on-failure" and (not inst.exit_code or (retry and count >= retry))):
            return
        with contextlib.suppress(e.CumuloError):
            op = self.svc.instances.change_state(self.project, inst.name, Action.START)
            if self.svc.ops.get(op.id, 60).error:   # (its own error is in the store)
                return
            self.meta.update_container(inst, RestartCount=count + 1)
            self.started(inst)

    def remove(self, inst: Instance, force: bool, volumes: bool = False) -> None:
        """The container; with ``volumes`` its anonymous volumes too (``rm -v``, ``--rm``),
        not named ones, nor one another container uses."""
        anonymous = self.meta.container(inst).get("AnonVolumes") or []
        op = self.svc.instances.delete(self.project, inst.name, force=force)
        done = self.svc.ops.get(op.id, 600)
        if done.error:
            raise e.DriverError(done.error)
        self.meta.drop_container(inst.host_id)
        for vol in anonymous if volumes else []:
            with contextlib.suppress(e.CumuloError):
                self.svc.volumes.delete(self.project, vol)
                self.meta.forget_volume(vol)

    async def reaper(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            # no worker thread woken twice a second on a host without Docker containers
            if self.meta.any_containers():
                with contextlib.suppress(Exception):
                    await call(self.reap_once)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), REAP_POLL)


def routes(ctx: Context, meta: Meta) -> list[Route]:
    c = Containers(ctx, meta)
    ctx.extra["containers"] = c
    svc, project = ctx.svc, ctx.project

    async def find(request: Request) -> Instance:
        return await call(c.find, request.path_params["id"])

    async def create(request: Request) -> Response:
        body = await body_json(request)
        plan = await call(c.create, request.query_params.get("name"), body)
        await finish(ctx, plan["op"])
        inst = await call(svc.instances.get, project, plan["name"])
        await call(meta.put_container, inst.host_id, plan["meta"])
        try:
            await call(c.attach_volumes, plan["name"], plan["vols"])
            await call(c.publish, plan["name"], plan["meta"]["HostConfig"])
        except BaseException:
            with contextlib.suppress(Exception):
                await call(c.remove, inst, True)
            raise
        return js({"Id": plan["meta"]["Id"], "Warnings": []}, 201)

    async def start(request: Request) -> Response:
        inst = await find(request)
        if inst.state in (State.RUNNING, State.PAUSED):
            return Response(status_code=304)
        try:
            await finish(ctx, await call(svc.instances.change_state, project, inst.name,
                                         Action.START))
        except e.CumuloError:
            if (meta.container(inst).get("HostConfig") or {}).get("AutoRemove"):
                with contextlib.suppress(e.CumuloError):   # as Docker: it never ran
                    await call(c.remove, inst, True)
            raise
        await call(c.started, inst)
        return Response(status_code=204)

    async def stop(request: Request) -> Response:
        inst = await find(request)
        if inst.state not in (State.RUNNING, State.PAUSED):
            return Response(status_code=304)
        t = int_param(request, "t", 10)
        await call(meta.update_container, inst, StoppedByUser=True)
        await finish(ctx, await call(svc.instances.change_state, project, inst.name,
                                     Action.STOP, float(t if t is not None and t >= 0 else 10),
                                     t == 0))
        await call(c.finished, await call(svc.instances.get, project, inst.name), True)
        return Response(status_code=204)

    async def restart(request: Request) -> Response:
        inst = await find(request)
        t = int_param(request, "t", 10)
        action = Action.RESTART if inst.state == State.RUNNING else Action.START
        await call(meta.update_container, inst, StoppedByUser=True)
        await finish(ctx, await call(svc.instances.change_state, project, inst.name, action,
                                     float(t if t is not None and t >= 0 else 10)))
        await call(c.started, inst)
        return Response(status_code=204)

    async def kill(request: Request) -> Response:
        inst = await find(request)
        sig = (request.query_params.get("signal") or "KILL").upper()
        sig = SIGNALS.get(sig, sig.removeprefix("SIG"))
        if inst.state not in (State.RUNNING, State.PAUSED):
            raise conflict(f"Cannot kill container: {request.path_params['id']}: Container "
                           f"{meta.container(inst)['Id']} is not running")
        if sig in ("KILL", "TERM", "INT", "9", "15"):
            await call(meta.update_container, inst, StoppedByUser=True)
        await call(svc.instances.kill, project, inst.name, sig)
        return Response(status_code=204)

    async def pause(request: Request) -> Response:
        inst = await find(request)
        if inst.state != State.RUNNING:
            raise conflict(f"Container {meta.container(inst)['Id']} is not running")
        await finish(ctx, await call(svc.instances.change_state, project, inst.name,
                                     Action.PAUSE))
        return Response(status_code=204)

    async def unpause(request: Request) -> Response:
        inst = await find(request)
        if inst.state != State.PAUSED:
            raise conflict(f"Container {meta.container(inst)['Id']} is not paused")
        await finish(ctx, await call(svc.instances.change_state, project, inst.name,
                                     Action.RESUME))
        return Response(status_code=204)

    async def wait(request: Request) -> Response:
        inst = await find(request)
        condition = request.query_params.get("condition") or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise bad(f"invalid condition: {condition!r}")
        starts = int(meta.container(inst).get("Starts") or 0)
        was_running = inst.state in (State.RUNNING, State.PAUSED)

        async def gen() -> AsyncIterator[bytes]:
            yield b""   # the headers go out at once: the client may start it meanwhile
            code = inst.exit_code
            name = inst.name
            while True:
                try:
                    now = await call(svc.instances.get, project, name)
                except e.NotFoundError:
                    if condition in ("removed", "not-running", "next-exit"):
                        if code is None:   # --rm removed it before this wait saw it stop
                            code = c.removed_codes.get(inst.host_id)
                        break
                    raise
                data = meta.container(now)
                stopped = now.state not in (State.RUNNING, State.PAUSED, State.CREATING)
                ran = was_running or int(data.get("Starts") or 0) > starts
                if stopped:
                    code = await call(svc.instances.exit_code, now)
                    tries = 0
                    while code is None and (ran or data.get("Running")) and tries < 40:
                        await asyncio.sleep(0.05)   # its monitor is writing it down
                        code = await call(svc.instances.exit_code, now)
                        tries += 1
                if stopped and data.get("Running"):   # noticed here first: its policies
                    await call(c.after_exit, now, data)
                    if condition != "removed":
                        break
                    continue
                if stopped and condition == "not-running":
                    break
                if stopped and condition == "next-exit" and ran:
                    break
                await asyncio.sleep(POLL)
            yield json.dumps({"StatusCode": code or 0, "Error": None}).encode()

        return StreamingResponse(gen(), media_type="application/json")

    async def remove(request: Request) -> Response:
        inst = await find(request)
        force = flag(request, "force")
        if inst.state in (State.RUNNING, State.PAUSED) and not force:
            raise conflict(f"cannot remove container \"/{inst.name}\": container is running:"
                           " stop the container before removing or force remove")
        await call(c.remove, inst, force, flag(request, "v"))
        return Response(status_code=204)

    async def inspect(request: Request) -> Response:
        inst = await find(request)
        return js(await call(c.inspect, inst))

    async def list_containers(request: Request) -> Response:
        want = filters(request)
        show_all = flag(request, "all") or bool(want.get("status"))
        gw = await call(c.gateways)
        rows = []
        for inst in await call(svc.instances.list, project):
            data = meta.container(inst)
            row = shapes.summary(inst, data, gw, await call(c.mounts, inst))
            if not show_all and row["State"] not in ("running", "paused"):
                continue
            if not _matches(row, inst, want):
                continue
            rows.append((shapes.created(inst), row))
        rows.sort(key=lambda r: r[0], reverse=True)   # newest first, to the microsecond
        out = [row for _t, row in rows]
        limit = int_param(request, "limit", -1)
        if limit is not None and limit > 0:
            out = out[:limit]
        return js(out)

    async def prune(_request: Request) -> Response:
        gone = []
        for inst in await call(svc.instances.list, project):
            if inst.state == State.STOPPED:
                cid = meta.container(inst)["Id"]
                await call(c.remove, inst, False)
                gone.append(cid)
        return js({"ContainersDeleted": gone or None, "SpaceReclaimed": 0})

    async def rename(request: Request) -> Response:
        inst = await find(request)
        new = (request.query_params.get("name") or "").lstrip("/")
        if not new:
            raise bad("Neither old nor new names may be empty")
        if new == inst.name:
            raise bad("Renaming a container with the same name as its current name")
        check_name(new)
        await call(c.name_free, new, "Error when allocating new name: ")
        await call(svc.instances.rename, project, inst.name, new)
        await call(c.find, new)   # the new name's host id, for its events
        return Response(status_code=204)

    async def resize(request: Request) -> Response:
        inst = await find(request)
        h, w = int_param(request, "h", 24), int_param(request, "w", 80)
        if inst.state != State.RUNNING:
            raise c.not_running(inst)
        with contextlib.suppress(e.UnsupportedError):
            await call(svc.instances.resize, project, inst.name, h or 24, w or 80)
        return Response(status_code=200)

    async def top(request: Request) -> Response:
        inst = await find(request)
        if inst.state != State.RUNNING:
            raise c.not_running(inst)
        pid = await call(svc.instances.pid, inst)
        return js(await call(stats.top, pid, request.query_params.get("ps_args") or ""))

    async def get_stats(request: Request) -> Response:
        inst = await find(request)
        stream = flag(request, "stream", True)
        one_shot = flag(request, "one-shot")
        return await stats.respond(c, inst, stream, one_shot)

    async def logs(request: Request) -> Response:
        inst = await find(request)
        return await output.logs(c, inst, request)

    async def attach(request: Request) -> Response:
        inst = await find(request)
        return await output.attach(c, inst, request)

    async def root_of(request: Request) -> copy.Root:
        """The container's root for ``docker cp``: PID 1's, or the one kept mounted in the
        instance's dir while it does not run."""
        inst = await find(request)
        if inst.type != "container":
            raise DockerError(501, "docker cp works on containers, not on cumulo-vm ones")
        pid = await call(svc.instances.pid, inst) if inst.state in (
            State.RUNNING, State.PAUSED) else None
        if pid is not None:
            return await call(copy.running, pid)
        idmap = [(0, 0, (1 << 32) - 1)] if inst.privileged else [(0, IDMAP_BASE, IDMAP_SIZE)]
        return await call(copy.stopped,
                          svc.instances.instances_dir / inst.host_id / "rootfs", idmap)

    async def archive(request: Request) -> Response:
        """``docker cp`` out (GET, HEAD: the path's stat) and in (PUT)."""
        if request.method == "PUT":
            upload_limit.check_length(request.headers, "the archive")
        root = await root_of(request)
        path = request.query_params.get("path") or ""
        if not path.startswith("/"):
            path = "/" + path
        if request.method == "PUT":
            tmp = copy.temp_file(ctx.state_dir / "tmp")
            try:
                with tmp.open("wb") as f:
                    async for chunk in upload_limit.bounded(request.stream(), "the archive"):
                        f.write(chunk)
                await call(copy.unpack, root, tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            return Response(status_code=200)
        try:
            header = {"X-Docker-Container-Path-Stat": await call(copy.stat_header, root, path)}
        except DockerError as err:
            if request.method != "HEAD":
                raise
            return Response(status_code=err.status)   # (an answer to HEAD has no body)
        if request.method == "HEAD":
            return Response(status_code=200, headers=header)
        tmp = copy.temp_file(ctx.state_dir / "tmp")
        try:
            await call(copy.pack, root, path, tmp)
            data = await call(tmp.read_bytes)
        finally:
            tmp.unlink(missing_ok=True)
        return Response(data, media_type="application/x-tar", headers=header)

    async def changes(request: Request) -> Response:
        """Docker's list of {Path, Kind}, in its order; null when nothing changed."""
        inst = await find(request)
        try:
            found = await call(svc.instances.root_changes, project, inst.name)
        except e.UnsupportedError as err:
            raise DockerError(501, f"docker diff of this container: {err}") from None
        return js([{"Path": path, "Kind": kind} for path, kind in found] or None)

    return [
        Route("/containers/json", list_containers, methods=["GET"]),
        Route("/containers/create", create, methods=["POST"]),
        Route("/containers/prune", prune, methods=["POST"]),
        Route("/containers/{id}/json", inspect, methods=["GET"]),
        Route("/containers/{id}/start", start, methods=["POST"]),
        Route("/containers/{id}/stop", stop, methods=["POST"]),
        Route("/containers/{id}/restart", restart, methods=["POST"]),
        Route("/containers/{id}/kill", kill, methods=["POST"]),
        Route("/containers/{id}/pause", pause, methods=["POST"]),
        Route("/containers/{id}/unpause", unpause, methods=["POST"]),
        Route("/containers/{id}/wait", wait, methods=["POST"]),
        Route("/containers/{id}/rename", rename, methods=["POST"]),
        Route("/containers/{id}/resize", resize, methods=["POST"]),
        Route("/containers/{id}/top", top, methods=["GET"]),
        Route("/containers/{id}/stats", get_stats, methods=["GET"]),
        Route("/containers/{id}/logs", logs, methods=["GET"]),
        Route("/containers/{id}/attach", attach, methods=["POST"]),
        Route("/containers/{id}/changes", changes, methods=["GET"]),
        Route("/containers/{id}/archive", archive, methods=["GET", "HEAD", "PUT"]),
        Route("/containers/{id}", remove, methods=["DELETE"]),
    ]


def _matches(row: dict[str, Any], inst: Instance, want: dict[str, list[str]]) -> bool:
    for key, values in want.items():
        if key == "name" and not any(v.lstrip("/") in inst.name for v in values):
            return False
        if key == "id" and not any(row["Id"].startswith(v) for v in values):
            return False
        if key == "status" and row["State"] not in values:
            return False
        if key == "exited" and (row["State"] != "exited"
                                or str(inst.exit_code or 0) not in values):
            return False
        if key == "ancestor" and not any(v in (row["Image"], row["ImageID"],
                                               row["ImageID"].removeprefix("sha256:"))
                                         for v in values):
            return False
        if key == "label":
            labels = row["Labels"]
            for v in values:
                k, eq, val = v.partition("=")
                if k not in labels or (eq and labels[k] != val):
                    return False
    return True
