"""A container's output: ``docker logs`` and the hijacked ``docker attach``.

Output comes from PID 1's log (k8s-file records: time, stream, payload), so nothing
printed before a client attached is lost; input goes to conmon's attach socket once
PID 1 runs. Without a TTY every chunk is a multiplexed frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cumulo import errors as e
from cumulo.docker import streams
from cumulo.docker.common import bad, call, flag, int_param
from cumulo.domain.lifecycle import State
from cumulo.domain.models import Instance

if TYPE_CHECKING:
    from cumulo.docker.containers import Containers

log = logging.getLogger(__name__)
POLL = 0.025             # how often a followed log is read again
STDIN_WAIT = 30.0        # seconds conmon may take to open its attach socket (loaded host)
NS = 1_000_000_000


def _stamp_ns(stamp: bytes) -> int:
    """A log record's RFC 3339 time in ns since the epoch, to the nanosecond (datetime
    keeps microseconds: a ``--since`` of a line's own time would drop that line)."""
    text = stamp.decode(errors="replace").replace("Z", "+00:00")
    whole, dot, rest = text.partition(".")
    digits = rest[:len(rest) - len(rest.lstrip("0123456789"))] if dot else ""
    zone = rest[len(digits):] if dot else ""
    with contextlib.suppress(ValueError):
        secs = int(datetime.fromisoformat(whole + zone).timestamp())
        return secs * NS + int((digits + "0" * 9)[:9] or 0)
    return 0


def _lines(text: bytes) -> list[bytes]:
    """``text`` cut after each newline (only there: a TTY's \\r stays in its line)."""
    parts = text.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _param_ns(request: Request, name: str) -> int:
    """Docker's ``since``/``until``: seconds, with up to 9 digits of fraction."""
    text = request.query_params.get(name) or "0"
    secs, _, frac = text.partition(".")
    try:
        return int(secs) * NS + (int((frac + "0" * 9)[:9]) if frac else 0)
    except ValueError:
        raise bad(f"invalid value for {name!r}: {text!r}") from None


async def logs(c: Containers, inst: Instance, request: Request) -> Response:
    """``docker logs``: frames (raw with a TTY), follow until the container stops."""
    tty = bool((c.meta.container(inst).get("Config") or {}).get("Tty"))
    want = {streams.STDOUT: flag(request, "stdout"), streams.STDERR: flag(request, "stderr")}
    follow, stamps = flag(request, "follow"), flag(request, "timestamps")
    tail_text = request.query_params.get("tail") or "all"
    tail = None if tail_text == "all" else int_param(request, "tail")
    since, until = _param_ns(request, "since"), _param_ns(request, "until")
    svc, project = c.svc, c.project

    def shape(records: list[Any]) -> list[tuple[int, bytes]]:
        out = []
        for stamp, stream_name, partial, payload in records:
            stream = streams.STREAMS.get(stream_name, streams.STDOUT)
            if not want[stream]:
                continue
            t = _stamp_ns(stamp) if (since or until) and stamp else 0
            if t and ((since and t < since) or (until and t > until)):
                continue   # (a VM's console has no times: all of it is kept)
            text = payload if partial else payload + b"\n"
            # one line each (a VM's console comes in chunks of lines: --tail counts lines)
            for line in _lines(text):
                if stamps and stamp:   # RFC 3339 as Docker writes it: Z, not +00:00
                    line = stamp.replace(b"+00:00", b"Z") + b" " + line
                out.append((stream, line))
        return out

    async def gen() -> AsyncIterator[bytes]:
        records, offset, now = await call(svc.instances.log_records, project, inst.name, 0)
        lines = shape(records)
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        for stream, data in lines:
            yield data if tty else streams.frame(stream, data)
        while follow:
            if now.state not in (State.RUNNING, State.PAUSED):
                records, offset, now = await call(svc.instances.log_records, project,
                                                  inst.name, offset)
                for stream, data in shape(records):
                    yield data if tty else streams.frame(stream, data)
                return
            await asyncio.sleep(0.1)
            try:
                records, offset, now = await call(svc.instances.log_records, project,
                                                  inst.name, offset)
            except e.NotFoundError:
                return
            for stream, data in shape(records):
                yield data if tty else streams.frame(stream, data)

    media = "application/vnd.docker.raw-stream" if tty else \
        "application/vnd.docker.multiplexed-stream"
    return StreamingResponse(gen(), media_type=media)


async def attach(c: Containers, inst: Instance, request: Request) -> Response:
    """The hijacked attach: output from PID 1's log, input to conmon's attach socket."""
    data = c.meta.container(inst)
    config = data.get("Config") or {}
    tty = bool(config.get("Tty"))
    want_in = flag(request, "stdin") and bool(config.get("OpenStdin"))
    want = {streams.STDOUT: flag(request, "stdout"), streams.STDERR: flag(request, "stderr")}
    svc, project, name = c.svc, c.project, inst.name
    starts = int(data.get("Starts") or 0)
    was_running = inst.state in (State.RUNNING, State.PAUSED)
    offset = 0
    if (was_running or starts) and not flag(request, "logs"):   # only what comes from now
        _records, offset, _ = await call(svc.instances.log_records, project, name, 0)
    reader, writer = await streams.hijacker(request)()
    out = streams.Output(writer, tty)
    pending: list[bytes] = []
    drains: list[asyncio.Task[None]] = []

    async def running() -> bool:
        now = await call(svc.instances.get, project, name)
        return now.state == State.RUNNING

    async def connect() -> socket.socket:
        """conmon's attach socket once PID 1 runs; conmon may make it a moment after."""
        deadline = asyncio.get_running_loop().time() + STDIN_WAIT
        while True:
            if await running():
                try:
                    sock = await call(svc.instances.open_stdin, project, name)
                    sock.setblocking(False)
                    return sock
                except e.CumuloError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
            await asyncio.sleep(POLL)

    async def drain(sock: socket.socket) -> None:
        """conmon also sends PID 1's output to every attach client: read and drop it (it
        comes from the log), or it fills the socket, and a close with unread data is a
        reset to conmon, not the end of input that closes PID 1's stdin."""
        loop = asyncio.get_running_loop()
        try:
            while await loop.sock_recv(sock, streams.READ):
                pass
        except OSError:
            pass
        finally:
            sock.close()

    async def pump_in() -> None:
        """The client's bytes to PID 1's stdin, once it runs; its end closes that stdin."""
        sock: socket.socket | None = None
        try:
            while True:
                chunk = await reader.read(streams.READ)
                if sock is None:
                    pending.append(chunk)
                    sock = await connect()
                    drains.append(asyncio.create_task(drain(sock)))
                    chunks, pending[:] = list(pending), []
                else:
                    chunks = [chunk]
                loop = asyncio.get_running_loop()
                for piece in chunks:
                    if piece:
                        await loop.sock_sendall(sock, piece)
                if not chunk:
                    return
        except (OSError, e.CumuloError) as err:   # the client's input is lost: say so
            log.warning("docker attach: input to %s dropped: %s", name, err)
            return
        finally:
            if sock is not None:   # end of input; the drain closes it once conmon does
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)

    async def pump_out() -> None:
        nonlocal offset
        seen_run = was_running
        while not out.closed:
            try:
                records, offset, now = await call(svc.instances.log_records, project, name,
                                                  offset)
            except e.NotFoundError:
                return
            for _stamp, stream_name, partial, payload in records:
                stream = streams.STREAMS.get(stream_name, streams.STDOUT)
                if want.get(stream):
                    await out.send(stream, payload if partial else payload + b"\n")
            meta_now = c.meta.container(now)
            if now.state in (State.RUNNING, State.PAUSED) or int(
                    meta_now.get("Starts") or 0) > starts:
                seen_run = True
            if seen_run and now.state not in (State.RUNNING, State.PAUSED, State.CREATING):
                records, offset, _ = await call(svc.instances.log_records, project, name,
                                                offset)
                for _stamp, stream_name, partial, payload in records:
                    stream = streams.STREAMS.get(stream_name, streams.STDOUT)
                    if want.get(stream):
                        await out.send(stream, payload if partial else payload + b"\n")
                return
            await asyncio.sleep(POLL)

    async def watch_close() -> None:
        """Without stdin the client sends nothing (the CLI half-closes at once: end of
        file is no sign it went away; a failed write is)."""
        while await reader.read(streams.READ):
            pass

    feeder = asyncio.create_task(pump_in() if want_in else watch_close())
    try:
        with c.attached(inst):
            await pump_out()
    finally:
        for task in (feeder, *drains):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await out.close()
    return Response(status_code=200)   # never sent: the connection was handed over
