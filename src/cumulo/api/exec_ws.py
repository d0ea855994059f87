"""Exec I/O: a websocket that streams stdin/stdout/stderr, and a collect-all mode.

Websocket protocol (``/1.0/instances/NAME/exec-ws``):
  client -> text   {"command": [...], "tty": bool, "env": {}, "cwd": "/", "rows", "cols"}
  client -> binary stdin bytes; text {"eof": true} closes stdin; {"resize": [rows, cols]}
  server -> binary first byte 1 (stdout) or 2 (stderr), then the bytes
  server -> text   {"exit_code": N} last; or {"error": "...", "type": "..."} on failure
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import time

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from cumulo.api.errors import status_for
from cumulo.api.schemas import ExecIn
from cumulo.drivers.base import ExecRequest, ExecSession
from cumulo.errors import CumuloError, DriverError
from cumulo.services.host import Services

STDOUT, STDERR = 1, 2
DRAIN_AFTER_EXIT = 1.0  # seconds to wait for output held open by leftover children


def _read(fd: int) -> bytes | None:
    """Bytes read, b"" at end of stream, None when nothing is there yet."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:  # EIO from a pty whose other side closed
        return b""


def run_collect(session: ExecSession, stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
    """Feed ``stdin``, gather all output, return (exit code, stdout, stderr)."""
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
    await ws.accept()
    try:
        body = ExecIn.model_validate_json(await ws.receive_text())
        req = ExecRequest(command=body.command, env=body.env, cwd=body.cwd, tty=body.tty,
                          rows=body.rows, cols=body.cols)
        session = await asyncio.to_thread(svc.instances.exec, project, name, req)
    except ValidationError as err:
        await _send_error(ws, CumuloError(f"invalid exec request: {err.errors()[0]['msg']}"))
        return
    except (CumuloError, WebSocketDisconnect) as err:
        await _send_error(ws, err)
        return
    try:
        await _pump(ws, session)
    finally:
        session.kill()


async def _pump(ws: WebSocket, session: ExecSession) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    open_fds: dict[int, int] = {session.stdout_fd: STDOUT}
    if session.stderr_fd is not None:
        open_fds[session.stderr_fd] = STDERR

    def on_readable(fd: int) -> None:
        chunk = _read(fd)
        if chunk is None:
            return
        if not chunk:
            loop.remove_reader(fd)
        queue.put_nowait((open_fds[fd], chunk))

    for fd in open_fds:
        os.set_blocking(fd, False)
        loop.add_reader(fd, on_readable, fd)

    async def from_client() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                session.kill()
                return
            if msg.get("bytes") and session.stdin_fd is not None:
                await asyncio.to_thread(os.write, session.stdin_fd, msg["bytes"])
            elif msg.get("text"):
                ctl = json.loads(msg["text"])
                if "resize" in ctl:
                    session.resize(int(ctl["resize"][0]), int(ctl["resize"][1]))
                if ctl.get("eof"):
                    session.close_stdin()

    reader = asyncio.create_task(from_client())
    exit_task = asyncio.create_task(asyncio.to_thread(session.wait, None))
    eofs = 0
    try:
        while eofs < len(open_fds):
            timeout = DRAIN_AFTER_EXIT if exit_task.done() else None
            try:
                channel, chunk = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                break
            if chunk:
                await ws.send_bytes(bytes([channel]) + chunk)
            else:
                eofs += 1
        code = await exit_task
        await ws.send_text(json.dumps({"exit_code": code}))
        await ws.close()
    except WebSocketDisconnect:
        pass
    finally:
        reader.cancel()
        for fd in open_fds:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
