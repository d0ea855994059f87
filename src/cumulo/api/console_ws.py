"""The interactive console over a websocket: raw bytes both ways, nothing else.

``/1.0/instances/NAME/console-ws``: binary frames from the client are typed on the
instance's console; binary frames from the server are what the console printed.
A text frame ``{"error": ..., "type": ..., "status": N}`` ends the stream on failure.
Detaching is the client's business (``cumulo console`` uses ctrl-a q): closing the
websocket leaves the instance running; so does a daemon that stops (code 1012).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from fastapi import WebSocket, WebSocketDisconnect

from cumulo.api import web_auth
from cumulo.api.exec_ws import _send_error
from cumulo.api.threads import in_thread
from cumulo.errors import CumuloError
from cumulo.services.host import Services

CHUNK = 65536


async def serve(ws: WebSocket, svc: Services, project: str, name: str) -> None:
    await web_auth.accept(ws)
    try:
        sock = await in_thread(svc.instances.open_console, project, name, orphan=_close)
    except CumuloError as err:
        await _send_error(ws, err)
        return
    try:
        await _pump(ws, sock)
    finally:
        sock.close()


def _close(sock: socket.socket) -> None:
    sock.close()


async def _pump(ws: WebSocket, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)

    async def to_client() -> None:
        while data := await loop.sock_recv(sock, CHUNK):
            await ws.send_bytes(data)

    async def from_client() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes"):
                await loop.sock_sendall(sock, msg["bytes"])

    tasks = [asyncio.create_task(to_client()), asyncio.create_task(from_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except (WebSocketDisconnect, OSError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError,
                                     RuntimeError):
                await t
        with contextlib.suppress(Exception):
            await ws.close()
