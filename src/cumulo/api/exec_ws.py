"""Exec I/O: a websocket that streams stdin/stdout/stderr, and a collect-all mode.

Websocket protocol (``/1.0/instances/NAME/exec-ws``):
  client -> text   {"command": [...], "tty": bool, "env": {}, "cwd": "/", "rows", "cols"}
  client -> binary stdin bytes; text {"eof": true} closes stdin; {"resize": [rows, cols]}
  server -> binary first byte 1 (stdout) or 2 (stderr), then the bytes
  server -> text   {"exit_code": N} last; or {"error": "...", "type": "..."} on failure
A client that goes away ends its session: the command is killed, the instance runs on.
So does a daemon that stops (the websocket closes with code 1012).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import threading
import time
from collections import deque
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from cumulo.api import web_auth
from cumulo.api.errors import status_for
from cumulo.api.schemas import ExecIn
from cumulo.api.threads import in_thread
from cumulo.drivers.base import ExecRequest, ExecSession
from cumulo.errors import CumuloError, DriverError
from cumulo.services.host import Services

STDOUT, STDERR = 1, 2
EXIT, GONE = 3, 4      # the other events of a pump: the command ended, the client left
# bytes of stdin that may wait for the command (the client waits beyond): more than all
# that a VM takes (MAX_STDIN of drivers/vm/exec_session.py, one message to its agent), so
# the server reads on while a VM's agent wakes up (the client's pongs come after it)
STDIN_BACKLOG = 2**20 + 2**16
DRAIN_AFTER_EXIT = 1.0  # seconds to wait for output held open by leftover children


def _read(fd: int) -> bytes | None:
    """Bytes read, b"" at end of stream, None when nothing is there yet."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:  # EIO from a pty whose other side closed
        return b""


def run_collect(session: ExecSession, stdin: bytes, timeout: float,
                stop: threading.Event | None = None) -> tuple[int, bytes, bytes]:
    """Feed ``stdin``, gather all output, return (exit code, stdout, stderr).

    ``stop`` set (the daemon is stopping) ends the session early with an error.
    """
    out = {STDOUT: bytearray(), STDERR: bytearray()}
    deadline = time.monotonic() + timeout
    try:
        if session.stdin_fd is not None:
            with contextlib.suppress(OSError):
                if stdin:
                    os.write(session.stdin_fd, stdin)
            session.close_stdin()
        sel = selectors.DefaultSelector()
        sel.register(session.stdout_fd, selectors.EVENT_READ, STDOUT)
        if session.stderr_fd is not None:
            sel.register(session.stderr_fd, selectors.EVENT_READ, STDERR)
        exited_at: float | None = None
        while sel.get_map():
            now = time.monotonic()
            if now > deadline:
                raise DriverError(f"exec timed out after {timeout:.0f}s")
            if stop is not None and stop.is_set():
                raise DriverError("exec ended: the daemon is stopping")
            if exited_at is None and session.wait(0) is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > DRAIN_AFTER_EXIT:
                break
            for key, _ in sel.select(0.1):
                chunk = _read(key.fd)
                if chunk is None:
                    continue
                if chunk:
                    out[key.data] += chunk
                else:
                    sel.unregister(key.fd)
        sel.close()
        code = session.wait(max(0.1, deadline - time.monotonic()))
        if code is None:
            raise DriverError(f"exec timed out after {timeout:.0f}s")
        return code, bytes(out[STDOUT]), bytes(out[STDERR])
    finally:
        session.kill()


async def _send_error(ws: WebSocket, err: Exception) -> None:
    code = status_for(err) if isinstance(err, CumuloError) else 500
    with contextlib.suppress(Exception):
        await ws.send_text(json.dumps({"error": str(err), "type": type(err).__name__,
                                       "status": code}))
        await ws.close()


async def serve(ws: WebSocket, svc: Services, project: str, name: str) -> None:
    await web_auth.accept(ws)
    try:
        body = ExecIn.model_validate_json(await ws.receive_text())
    except ValidationError as err:
        await _send_error(ws, CumuloError(f"invalid exec request: {err.errors()[0]['msg']}"))
        return
    except WebSocketDisconnect as err:
        await _send_error(ws, err)
        return
    req = ExecRequest(command=body.command, env=body.env, cwd=body.cwd, tty=body.tty,
                      rows=body.rows, cols=body.cols)
    # the client is read from now on, also while the session starts (a VM's guest agent
    # may answer only after a minute: just booted, just migrated). A server that reads
    # nothing leaves the client's pongs unread, and uvicorn's keepalive then cuts the
    # stream (1011) as if the client had gone.
    inbox = _Inbox()
    client = asyncio.create_task(_from_client(ws, inbox))
    starting = in_thread(svc.instances.exec, project, name, req, orphan=_kill)
    try:
        either: list[asyncio.Future[Any]] = [client, starting]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        starting.cancel()   # its session, when it comes, is killed (orphan)
        await _stop(client)
        raise
    if not starting.done():   # the client left (or sent nonsense) before it started
        starting.cancel()
        await _stop(client)
        return
    try:
        session = starting.result()
    except CumuloError as err:
        await _stop(client)
        await _send_error(ws, err)
        return
    except BaseException:
        await _stop(client)
        raise
    inbox.attach(session)
    try:
        await _pump(ws, session, client)
    finally:
        # off the loop (it can take seconds), and to the end even if this task is
        # cancelled or the daemon is exiting
        await asyncio.shield(in_thread(_kill, session, daemon=False))


async def _stop(client: asyncio.Task[None]) -> None:
    """End the task reading the client (a malformed message from it just ends its
    session: whatever it raised is dropped)."""
    client.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await client


def _kill(session: ExecSession) -> None:
    session.kill()


async def _pump(ws: WebSocket, session: ExecSession, client: asyncio.Task[None]) -> None:
    """Stream until the command ended and its output is drained, or the client left
    (``client``, the task reading it, ended).

    The loop watches the session's fds until this returns; only then may the caller
    kill the session, which closes them. (An fd closed while the loop watches it
    leaves the kernel's epoll set but stays in asyncio's selector: the next session
    given the same fd number is then never read, and hangs.)
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    streams = {session.stdout_fd: STDOUT}
    if session.stderr_fd is not None:
        streams[session.stderr_fd] = STDERR

    def on_readable(fd: int) -> None:
        chunk = _read(fd)
        if chunk is None:
            return
        if not chunk:
            loop.remove_reader(fd)
        events.put_nowait((streams[fd], chunk))

    for fd in streams:
        os.set_blocking(fd, False)
        loop.add_reader(fd, on_readable, fd)
    exited = in_thread(session.wait, None)
    exited.add_done_callback(lambda _: events.put_nowait((EXIT, b"")))
    client.add_done_callback(lambda _: events.put_nowait((GONE, b"")))
    try:
        code = await _forward(ws, events, len(streams), exited)
        if code is not None:
            await ws.send_text(json.dumps({"exit_code": code}))
            await ws.close()
    except (WebSocketDisconnect, RuntimeError):   # the client left while we sent
        pass
    finally:
        for fd in streams:
            loop.remove_reader(fd)
        await _stop(client)
        exited.cancel()   # its thread ends with the session


async def _forward(ws: WebSocket, events: asyncio.Queue[tuple[int, bytes]], streams: int,
                   exited: asyncio.Future[int | None]) -> int | None:
    """Send output until the command ended and its streams are drained (or a second
    after it ended: leftover children may hold them); its exit code, or None if the
    client left first."""
    loop = asyncio.get_running_loop()
    drain_until: float | None = None
    eofs = 0
    while drain_until is None or eofs < streams:
        if events.empty():
            left = None if drain_until is None else drain_until - loop.time()
            if left is not None and left <= 0:
                break
            try:
                kind, chunk = await asyncio.wait_for(events.get(), left)
            except TimeoutError:
                break
        else:
            kind, chunk = events.get_nowait()
        if kind == GONE:
            return None
        if kind == EXIT:
            drain_until = loop.time() + DRAIN_AFTER_EXIT
        elif chunk:
            await ws.send_bytes(bytes([kind]) + chunk)
        else:
            eofs += 1
    code = exited.result()
    return 255 if code is None else code


class _Inbox:
    """Where what the client sends goes: stdin, of which at most ``STDIN_BACKLOG`` bytes
    wait (``put`` waits beyond), and a resize kept until the session exists (it may
    start late)."""

    def __init__(self) -> None:
        self._stdin: deque[bytes | None] = deque()   # None: end of input
        self._waiting = 0   # bytes
        self._changed = asyncio.Condition()
        self.session: asyncio.Future[ExecSession] = asyncio.get_running_loop().create_future()
        self.size: tuple[int, int] | None = None

    async def put(self, chunk: bytes | None) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._waiting < STDIN_BACKLOG)
            self._stdin.append(chunk)
            self._waiting += len(chunk or b"")
            self._changed.notify_all()

    async def get(self) -> bytes | None:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._stdin))
            chunk = self._stdin.popleft()
            self._waiting -= len(chunk or b"")
            self._changed.notify_all()
            return chunk

    def attach(self, session: ExecSession) -> None:
        self.session.set_result(session)
        if self.size is not None:
            session.resize(*self.size)

    def resize(self, rows: int, cols: int) -> None:
        if self.session.done():
            self.session.result().resize(rows, cols)
        else:
            self.size = (rows, cols)


async def _from_client(ws: WebSocket, inbox: _Inbox) -> None:
    """Stdin and control messages until the client goes away.

    Messages are taken as they come, so that a client that leaves is seen even while
    the command does not read its input (or has not started): stdin waits in the
    inbox (beyond ``STDIN_BACKLOG`` bytes, the client waits).
    """
    writer = asyncio.create_task(_to_stdin(inbox))
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes"):
                await inbox.put(msg["bytes"])
            elif msg.get("text"):
                ctl = json.loads(msg["text"])
                if "resize" in ctl:
                    inbox.resize(int(ctl["resize"][0]), int(ctl["resize"][1]))
                if ctl.get("eof"):
                    await inbox.put(None)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def _to_stdin(inbox: _Inbox) -> None:
    """Write what the client typed or piped to the command, in order, once it started."""
    session = await inbox.session
    done = False   # end of input sent, or the command closed its stdin or ended: the
    while True:    # rest is dropped (a closed fd's number may be another session's now)
        chunk = await inbox.get()
        if chunk is None:
            if not done:
                session.close_stdin()
            done = True
        elif not done and session.stdin_fd is not None:
            try:
                await write_all(session.stdin_fd, chunk)
            except OSError:
                done = True


async def write_all(fd: int, data: bytes) -> None:
    """Write on the loop, waiting while the pipe or pty is full (never blocking)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            room: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _wake, room)
            try:
                await room
            finally:
                loop.remove_writer(fd)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
