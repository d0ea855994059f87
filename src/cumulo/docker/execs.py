"""``docker exec``: create, start (hijacked, or detached), inspect, resize.

Exec instances live in memory, as in Docker (they are gone after a restart). A
command the runtime cannot run ends with Docker's codes: 127 when it is not
found, 126 when it may not be executed. Into a ``cumulo-vm`` container it goes through
the VM's guest agent, in the image's tree (drivers/vm/image_guest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.api.exec_ws import write_all
from cumulo.docker import shapes, streams
from cumulo.docker.common import Context, DockerError, body_json, call, conflict, flag
from cumulo.docker.common import ok_json as js
from cumulo.docker.meta import Meta
from cumulo.domain.lifecycle import State
from cumulo.drivers.base import ExecRequest, ExecSession

NOT_FOUND = (b"executable file not found", b"no such file or directory")
DENIED = (b"permission denied",)
RUNTIME_FAILED = 255
KEEP_FINISHED = 600.0    # seconds a finished exec stays inspectable


@dataclass
class Exec:
    id: str
    container: str           # instance name
    container_id: str
    config: dict[str, Any]
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    session: ExecSession | None = None
    errors: bytearray = field(default_factory=bytearray)   # the runtime's own complaint
    ended: float = 0.0       # monotonic time it finished

    def shape(self) -> dict[str, Any]:
        cmd = self.config.get("Cmd") or []
        return {"ID": self.id, "Running": self.running, "ExitCode": self.exit_code,
                "ProcessConfig": {"tty": bool(self.config.get("Tty")),
                                  "entrypoint": cmd[0] if cmd else "", "arguments": cmd[1:],
                                  "privileged": bool(self.config.get("Privileged")),
                                  "user": self.config.get("User") or ""},
                "OpenStdin": bool(self.config.get("AttachStdin")),
                "OpenStderr": bool(self.config.get("AttachStderr")),
                "OpenStdout": bool(self.config.get("AttachStdout")),
                "CanRemove": False, "ContainerID": self.container_id, "DetachKeys": "",
                "Pid": self.pid}


def docker_code(code: int | None, errors: bytes) -> int:
    """The runtime's 255 for a command it could not start, as Docker's 126 or 127."""
    if code == RUNTIME_FAILED:
        low = errors.lower()
        if any(m in low for m in NOT_FOUND):
            return 127
        if any(m in low for m in DENIED):
            return 126
    return code if code is not None else -1


def routes(ctx: Context, meta: Meta) -> list[Route]:
    svc, project = ctx.svc, ctx.project
    execs: dict[str, Exec] = {}
    lock = threading.Lock()

    def get(exec_id: str) -> Exec:
        with lock:
            found = execs.get(exec_id)
        if found is None:
            raise DockerError(404, f"No such exec instance: {exec_id}")
        return found

    async def create(request: Request) -> Response:
        inst = await call(ctx.extra["containers"].find, request.path_params["id"])
        body = await body_json(request)
        cid = meta.container(inst)["Id"]
        if inst.state != State.RUNNING:
            raise conflict(f"Container {cid} is not running" if inst.state != State.PAUSED
                           else f"Container {cid} is paused, unpause the container before"
                           " exec")
        if not body.get("Cmd"):
            raise DockerError(400, "No exec command specified")
        ex = Exec(secrets.token_hex(32), inst.name, cid, body)
        with lock:
            # finished ones are kept for a while (the CLI inspects its exit code after)
            for old in [k for k, v in execs.items() if v.exit_code is not None
                        and time.monotonic() - v.ended > KEEP_FINISHED]:
                del execs[old]
            execs[ex.id] = ex
        return js({"Id": ex.id}, 201)

    def open_session(ex: Exec, tty: bool) -> ExecSession:
        inst = svc.instances.get(project, ex.container)
        conf = meta.container(inst).get("Config") or {}
        env = {}
        for item in [*(conf.get("Env") or []), *(ex.config.get("Env") or [])]:
            k, _, v = str(item).partition("=")
            env[k] = v
        rootfs = svc.images.files.payload(inst.image)
        user_text = ex.config.get("User") or conf.get("User") or ""
        user = shapes.resolve_user(rootfs, user_text) if user_text else None
        cwd = ex.config.get("WorkingDir") or conf.get("WorkingDir") or "/"
        size = ex.config.get("ConsoleSize") or [24, 80]
        return svc.instances.exec(project, ex.container, ExecRequest(
            command=[str(a) for a in ex.config["Cmd"]], env=env, cwd=cwd, tty=tty,
            rows=int(size[0] or 24), cols=int(size[1] or 80), user=user))

    def track(ex: Exec, session: ExecSession) -> None:
        code = session.wait()
        ex.exit_code = docker_code(code, bytes(ex.errors))
        ex.ended = time.monotonic()
        ex.running = False
        session.kill()

    async def start(request: Request) -> Response:
        ex = get(request.path_params["id"])
        body = await body_json(request)
        if ex.running or ex.exit_code is not None:
            raise conflict(f"Error: Exec command {ex.id} has already run")
        tty = bool(body.get("Tty", ex.config.get("Tty")))
        session = await call(open_session, ex, tty)
        ex.session, ex.running = session, True
        if body.get("Detach"):
            if session.stdin_fd is not None:
                session.close_stdin()
            loop = asyncio.get_running_loop()

            async def drain(fd: int | None) -> None:
                if fd is not None:
                    await streams.pump_fd_out(fd, _Sink(ex), streams.STDERR)

            async def detached() -> None:
                await asyncio.gather(drain(session.stdout_fd), drain(session.stderr_fd))
                await call(track, ex, session)

            tasks: set[asyncio.Task[None]] = ctx.extra.setdefault("tasks", set())
            task = loop.create_task(detached())
            tasks.add(task)   # (a reference, so that it is not collected while it runs)
            task.add_done_callback(tasks.discard)
            return Response(status_code=200)
        reader, writer = await streams.hijacker(request)()
        out = streams.Output(writer, tty)
        want_in = bool(ex.config.get("AttachStdin"))

        async def pump_in() -> None:
            try:
                while True:
                    chunk = await reader.read(streams.READ)
                    if not chunk:
                        break
                    if session.stdin_fd is not None:
                        await write_all(session.stdin_fd, chunk)
            except OSError:
                pass
            session.close_stdin()

        async def err_out(fd: int) -> None:
            await streams.pump_fd_out(fd, _Tee(out, ex), streams.STDERR)

        feeder = asyncio.create_task(pump_in()) if want_in else None
        if not want_in:
            session.close_stdin()
        try:
            pumps = [streams.pump_fd_out(session.stdout_fd, out, streams.STDOUT)]
            if session.stderr_fd is not None:
                pumps.append(err_out(session.stderr_fd))
            await asyncio.gather(*pumps)
            await call(track, ex, session)
        finally:
            if feeder is not None:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feeder
            if ex.running:
                session.kill()
                ex.running = False
            await out.close()
        return Response(status_code=200)

    async def inspect(request: Request) -> Response:
        return js(get(request.path_params["id"]).shape())

    async def resize(request: Request) -> Response:
        ex = get(request.path_params["id"])
        if ex.session is not None and ex.running:
            h = int(request.query_params.get("h") or 24)
            w = int(request.query_params.get("w") or 80)
            with contextlib.suppress(OSError):
                ex.session.resize(h, w)
        return Response(status_code=200 if flag(request, "x", True) else 201)

    return [
        Route("/containers/{id}/exec", create, methods=["POST"]),
        Route("/exec/{id}/start", start, methods=["POST"]),
        Route("/exec/{id}/json", inspect, methods=["GET"]),
        Route("/exec/{id}/resize", resize, methods=["POST"]),
    ]


class _Tee(streams.Output):
    """stderr to the client, also kept (bounded) to tell why the runtime failed."""

    def __init__(self, out: streams.Output, ex: Exec) -> None:
        super().__init__(out.writer, out.tty)
        self.out, self.ex = out, ex

    async def send(self, stream: int, data: bytes) -> None:
        if len(self.ex.errors) < 4096:
            self.ex.errors += data[:4096]
        await self.out.send(stream, data)


class _Sink(streams.Output):
    """A detached exec's output: dropped, but its complaint kept."""

    def __init__(self, ex: Exec) -> None:
        self.ex, self.closed, self.tty = ex, False, False

    async def send(self, stream: int, data: bytes) -> None:
        if len(self.ex.errors) < 4096:
            self.ex.errors += data[:4096]

